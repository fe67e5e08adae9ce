"""End-to-end tests of ``bundles/mlvicx_pretrain`` through ``python -m monai.bundle``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from modan_monai.data import ensure_demo_corpus
from modan_monai.networks import CBResNet18Encoder, build_classifier, load_encoder

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "mlvicx_pretrain"
SCHEMA = BUNDLE.parent / "meta_schema.json"
# 28 demo images, batch 14: two iterations per epoch; the stride-2 7x7 stem keeps the CPU time low
TINY = {"epochs": 1, "image_size": 32, "batch_size": 14, "log_interval": 1, "expander_features": 32, "stem": "7x7"}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    ensure_demo_corpus(root, size=32, per_pair=4)
    return root


def run_train(bundle_cli: Callable[..., str], out: Path, demo_dir: Path, check: bool = True, **overrides: object) -> str:
    """The bundle's training run on the demo corpus with tiny overrides."""
    return bundle_cli(
        "mlvicx_pretrain", "run", "--config_file", "configs/train.json", "--logging_file", "configs/logging.conf",
        check=check,
        **{"dataset_dir": demo_dir, "manifest": demo_dir / "manifest.csv", "output_dir": out, **TINY, **overrides},
    )


def test_train_writes_terms_checkpoints_and_resumes(
    tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str], tensorboard_tags: Callable
) -> None:
    out = tmp_path / "mlvicx"
    log = run_train(bundle_cli, out, demo_dir)
    assert "no checkpoint in" in log and "epoch 1/1" in log
    assert (out / "checkpoint_epoch=1.pt").is_file()
    tags = set(tensorboard_tags(out)["scalars"])
    terms = {
        f"loss_terms/{lvl}/{t}" for lvl in ("global", "multilevel") for t in ("invariance", "variance", "covariance")
    }
    assert terms | {"train_loss", "lr/group_0", "lr/group_1", "loss_terms/loss"} <= tags

    checkpoint = torch.load(out / "encoder.pt", map_location="cpu", weights_only=True)
    assert checkpoint["arch"] == "cb_resnet18" and checkpoint["metadata"]["method"] == "mlvicx"
    encoder = load_encoder(out / "encoder.pt")
    assert isinstance(encoder, CBResNet18Encoder) and encoder(torch.zeros(2, 1, 32, 32)).shape == (2, 512)
    model = build_classifier(init=str(out / "encoder.pt"), num_classes=2, stem="7x7")
    assert isinstance(model.encoder, CBResNet18Encoder)

    first = torch.load(out / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=False)
    log = run_train(bundle_cli, out, demo_dir, epochs=2)
    assert "resuming from" in log and "checkpoint_epoch=1.pt" in log
    second = torch.load(out / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=False)
    assert second["trainer"]["iteration"] == 2 * first["trainer"]["iteration"]
    assert [g["lars_exclude"] for g in second["optimizer"]["param_groups"]] == [False, True]
    # a training checkpoint also initialises a CB classifier (architecture recognised from its keys)
    assert isinstance(build_classifier(init=str(out / "checkpoint_epoch=2.pt"), stem="7x7").encoder, CBResNet18Encoder)


def test_check_properties_metadata_and_scaled_lr(tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]) -> None:
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        workflow_type="train",
        bundle_root=str(BUNDLE),
        dataset_dir=str(demo_dir),
        manifest=str(demo_dir / "manifest.csv"),
        output_dir=str(tmp_path / "props"),
        batch_size=64,
        expander_features=32,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.parser.get_parsed_content("learning_rate") == pytest.approx(0.2 * 64 / 256)
    log = bundle_cli("mlvicx_pretrain", "verify_metadata", meta_file="configs/metadata.json", filepath=SCHEMA)
    assert "metadata is verified with no error" in log


def test_non_finite_loss_stops_the_run_naming_the_term(
    tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]
) -> None:
    log = run_train(bundle_cli, tmp_path / "nan", demo_dir, check=False, base_learning_rate=1e30, warmup_epochs=0)
    assert re.search(r"FloatingPointError: MLVICX term '[a-z]+/[a-z]+' is (nan|inf|-inf) at iteration \d+", log)
