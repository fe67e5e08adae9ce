"""End-to-end tests of ``bundles/pretrain`` (every method) through ``python -m monai.bundle`` and ``ConfigWorkflow``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from monai.bundle import ConfigWorkflow

from modan_monai.data import ensure_demo_corpus
from modan_monai.engines import PrepareViewGroups, Trainer
from modan_monai.losses import MLVICXLoss, MulSupConLoss
from modan_monai.networks import CBResNet18Encoder, ClassificationModel, ContrastiveModel, MLVICXModel, load_encoder
from modan_monai.optimizers import LARS

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "pretrain"
SCHEMA = BUNDLE.parent / "meta_schema.json"
TINY = {"epochs": 1, "image_size": 32, "batch_size": 8, "log_interval": 1}
# MLVICX: narrow expanders and the stride-2 stem keep the CPU time low
MLVICX_TINY = {**TINY, "batch_size": 14, "expander_features": 32, "stem": "7x7"}
METHODS = ["train.json", "simclr.json", "supervised.json", "mlvicx.json"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    ensure_demo_corpus(root, size=32, per_pair=4)
    return root


def config_arg(*names: str) -> str:
    """``--config_file`` value for one config file or a list of them (base first, overrides after)."""
    files = [f"configs/{n}" for n in names]
    return files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"


def run_train(
    bundle_cli: Callable[..., str], out: Path, demo_dir: Path, *configs: str, check: bool = True, **overrides: object
) -> str:
    """The bundle's training run on the demo corpus with tiny overrides."""
    tiny = MLVICX_TINY if "mlvicx.json" in configs else TINY
    return bundle_cli(
        "pretrain", "run", "--config_file", config_arg("train.json", *configs),
        "--logging_file", "configs/logging.conf", check=check,
        **{"dataset_dir": demo_dir, "manifest": demo_dir / "manifest.csv", "output_dir": out, **tiny, **overrides},
    )


def workflow(demo_dir: Path, out: Path, *files: str | Path, **overrides: object) -> ConfigWorkflow:
    """The bundle parsed in process (``train.json`` + ``files``), initialised, not run."""
    configs = [str(BUNDLE / "configs" / "train.json")]
    configs += [str(f if isinstance(f, Path) else BUNDLE / "configs" / f) for f in files]
    flow = ConfigWorkflow(
        config_file=configs,
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        workflow_type="train",
        bundle_root=str(BUNDLE),
        dataset_dir=str(demo_dir),
        manifest=str(demo_dir / "manifest.csv"),
        output_dir=str(out),
        **overrides,
    )
    flow.initialize()
    return flow


def test_train_writes_checkpoints_tensorboard_and_resumes(
    tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str], tensorboard_tags: Callable
) -> None:
    out = tmp_path / "modan"
    log = run_train(bundle_cli, out, demo_dir)
    assert "no checkpoint in" in log
    assert "epoch 1/1" in log and "left" in log  # progress line
    assert (out / "checkpoint_epoch=1.pt").is_file()
    encoder = load_encoder(out / "encoder.pt")
    assert encoder(torch.zeros(2, 1, 32, 32)).shape == (2, 512)
    tags = tensorboard_tags(out)
    assert "train_loss" in tags["scalars"] and "lr" in tags["scalars"]
    assert {"views/view_0", "views/view_1"} <= set(tags["images"])

    first = torch.load(out / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    log = run_train(bundle_cli, out, demo_dir, epochs=2)
    assert "resuming from" in log and "checkpoint_epoch=1.pt" in log
    second = torch.load(out / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    assert second["trainer"]["max_epochs"] == 2
    assert second["trainer"]["iteration"] == 2 * first["trainer"]["iteration"]


def _switched(flow: ConfigWorkflow, key: str) -> object:
    return flow.parser.get_parsed_content(key)


@pytest.mark.parametrize("override", METHODS)
def test_each_override_switches_the_method(tmp_path: Path, demo_dir: Path, override: str) -> None:
    files = [] if override == "train.json" else [override]
    flow = workflow(demo_dir, tmp_path / "props", *files, expander_features=32)
    assert flow.check_properties() == []
    network, loss = _switched(flow, "network_def"), _switched(flow, "loss")
    optimizer, prepare = _switched(flow, "optimizer"), _switched(flow, "prepare_batch")
    assert isinstance(_switched(flow, "train#trainer"), Trainer) and isinstance(prepare, PrepareViewGroups)
    method = _switched(flow, "method")
    if override == "train.json":
        assert method == "modan_mulsupcon" and isinstance(network, ContrastiveModel)
        assert isinstance(loss, MulSupConLoss) and loss.temperature == 0.07 and loss.threshold == 0.3
        assert loss.weighting == "jaccard" and prepare.target_key == "label"
        assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.05
    elif override == "simclr.json":
        assert method == "simclr" and isinstance(network, ContrastiveModel)
        assert isinstance(loss, MulSupConLoss) and loss.temperature == 0.1 and prepare.target_key is None
        assert isinstance(optimizer, torch.optim.SGD)
    elif override == "supervised.json":
        assert method == "supervised" and isinstance(network, ClassificationModel)
        assert isinstance(loss, torch.nn.CrossEntropyLoss) and prepare.target_key == "class"
        assert network.classifier.out_features == _switched(flow, "vocabulary").num_combined
        assert isinstance(optimizer, torch.optim.Adam) and _switched(flow, "num_views") == 1
    else:
        assert method == "mlvicx" and isinstance(network, MLVICXModel)
        assert isinstance(network.encoder, CBResNet18Encoder)
        assert isinstance(loss, MLVICXLoss) and loss.multilevel_weight == 1.0 and prepare.target_key is None
        assert isinstance(optimizer, LARS)
        assert _switched(flow, "learning_rate") == pytest.approx(0.2 * _switched(flow, "batch_size") / 256)


@pytest.mark.parametrize("override", ["simclr.json", "supervised.json", "mlvicx.json"])
def test_override_runs_write_the_method_encoder(
    tmp_path: Path, demo_dir: Path, override: str, bundle_cli: Callable[..., str], tensorboard_tags: Callable
) -> None:
    out = tmp_path / override
    run_train(bundle_cli, out, demo_dir, override)
    assert (out / "checkpoint_epoch=1.pt").is_file()
    checkpoint = torch.load(out / "encoder.pt", map_location="cpu", weights_only=True)
    assert checkpoint["metadata"]["method"] == override.removesuffix(".json")
    if override == "mlvicx.json":
        assert checkpoint["arch"] == "cb_resnet18"
        assert isinstance(load_encoder(out / "encoder.pt"), CBResNet18Encoder)
        terms = {
            f"loss_terms/{lvl}/{t}" for lvl in ("global", "multilevel") for t in ("invariance", "variance", "covariance")
        }
        assert terms | {"train_loss", "lr/group_0", "lr/group_1"} <= set(tensorboard_tags(out)["scalars"])


def test_extra_handlers_merge_with_the_plus_key(tmp_path: Path, demo_dir: Path) -> None:
    base = workflow(demo_dir, tmp_path / "a")
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"+train#handlers": [{"_target_": "modan_monai.handlers.ProgressPrinter"}]}))
    merged = workflow(demo_dir, tmp_path / "b", "mlvicx.json", extra, expander_features=32)
    assert len(merged.parser["train"]["handlers"]) == len(base.parser["train"]["handlers"]) + 1
    assert merged.parser["train"]["handlers"][-1]["_target_"] == "modan_monai.handlers.ProgressPrinter"


def test_knn_bn_stats_reaches_the_monitor(tmp_path: Path, demo_dir: Path) -> None:
    """``knn_bn_stats`` chooses how both monitors read BatchNorm statistics (default ``"auto"``)."""
    monitor = workflow(demo_dir, tmp_path / "a").parser.get_parsed_content("train#handlers#7")
    assert type(monitor).__name__ == "KNNMonitor" and monitor.bn_stats == "auto"
    flow = workflow(demo_dir, tmp_path / "b", "adamv2.json", knn_bn_stats="recompute")
    assert flow.parser.get_parsed_content("train#handlers#7").bn_stats == "recompute"


@pytest.mark.parametrize(
    ("configs", "overrides", "named"),
    [
        (["supervised.json"], {"target_key": "$None"}, ["loss (CrossEntropyLoss) needs a target", "target_key"]),
        ([], {"target_key": "$None"}, ["method 'modan_mulsupcon'", "target_key null", "configs/simclr.json"]),
        (["simclr.json"], {"target_key": "label"}, ["label_transform (Identityd)", "target_key"]),
        (["mlvicx.json"], {"network_def": "@encoder"}, ["loss (MLVICXLoss)", "network_def is CBResNet18Encoder"]),
    ],
)
def test_incompatible_ids_are_refused_naming_them(
    tmp_path: Path, demo_dir: Path, configs: list, overrides: dict, named: list
) -> None:
    with pytest.raises(RuntimeError) as err:
        workflow(demo_dir, tmp_path / "x", *configs, **overrides)
    cause = str(err.value.__cause__)
    for text in named:
        assert text in cause


def test_cli_errors_end_with_the_cause(tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]) -> None:
    log = run_train(bundle_cli, tmp_path / "x", demo_dir, "supervised.json", check=False, target_key="$None")
    assert log.strip().splitlines()[-1].startswith("ValueError: config: loss (CrossEntropyLoss) needs a target")
    log = run_train(bundle_cli, tmp_path / "x", demo_dir, "simcrl.json", check=False)
    assert "configs/simcrl.json" in log.strip().splitlines()[-1]


def test_non_finite_loss_stops_the_run_naming_term_iteration_and_files(
    tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]
) -> None:
    out = tmp_path / "nan"
    # three iterations: the first step at lr 1e30 makes the second loss non-finite
    log = run_train(
        bundle_cli, out, demo_dir, "mlvicx.json", check=False, base_learning_rate=1e30, warmup_epochs=0, batch_size=8
    )
    last = log.strip().splitlines()[-1]
    assert last.startswith("FloatingPointError: loss term '") and "iteration" in last
    assert "manifest " in last and " row " in last and str(demo_dir) in last
    assert not (out / "checkpoint_epoch=1.pt").exists() and not (out / "encoder.pt").exists()


def test_metadata_verifies(bundle_cli: Callable[..., str]) -> None:
    log = bundle_cli("pretrain", "verify_metadata", meta_file="configs/metadata.json", filepath=SCHEMA)
    assert "metadata is verified with no error" in log


def test_bad_manifest_row_is_reported(tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]) -> None:
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(demo_dir / "manifest.csv", keep_default_na=False)
    frame["path"] = [str(demo_dir / p) for p in frame["path"]]
    frame.loc[2, "path"] = frame.loc[2, "path"].replace(".dcm", "_missing.dcm")
    frame.to_csv(bad, index=False)
    log = bundle_cli(
        "pretrain", "run", "--config_file", "configs/train.json", check=False,
        manifest=bad, output_dir=tmp_path / "o", **TINY,
    )
    assert "row 2" in log and "_missing" in log
