"""Tests of ``bundles/pretrain/configs/mlvicx_small.json``, the MLVICX preset for the 64 px demo corpus."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from modan_monai.bundle import check_method_files
from modan_monai.data import ensure_demo_corpus
from modan_monai.losses import MLVICXLoss
from modan_monai.networks import MLVICXModel
from modan_monai.optimizers import LARS

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "pretrain"
CONFIGS = BUNDLE / "configs"
PRESET = ["train.json", "mlvicx.json", "mlvicx_small.json"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    ensure_demo_corpus(root, size=32, per_pair=4)
    return root


def preset_workflow(demo_dir: Path, out: Path, files: list[str] = PRESET, **overrides: object) -> ConfigWorkflow:
    """``files`` parsed in process on the small demo corpus, initialised, not run."""
    flow = ConfigWorkflow(
        config_file=[str(CONFIGS / f) for f in files],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        bundle_root=str(BUNDLE),
        dataset_dir=str(demo_dir),
        manifest=str(demo_dir / "manifest.csv"),
        output_dir=str(out),
        **overrides,
    )
    flow.initialize()
    return flow


def test_preset_sets_the_measured_recipe(tmp_path: Path, demo_dir: Path) -> None:
    flow = preset_workflow(demo_dir, tmp_path / "p")
    get = flow.parser.get_parsed_content
    assert get("method") == "mlvicx"
    assert (get("image_size"), get("epochs"), get("batch_size"), get("knn_interval")) == (64, 10, 16, 2)
    network, optimizer = get("network_def"), get("optimizer")
    assert isinstance(network, MLVICXModel) and isinstance(get("loss"), MLVICXLoss)
    # both expanders end in 64 features (2048 in configs/mlvicx.json)
    assert network.global_expander.out_features == network.multilevel_expander.out_features == 64
    # plain SGD at lightly's VICReg example rate, not LARS at 0.2 * 16 / 256
    assert type(optimizer) is torch.optim.SGD and not isinstance(optimizer, LARS)
    assert optimizer.defaults["lr"] == pytest.approx(0.06) and optimizer.defaults["momentum"] == 0.0
    assert optimizer.defaults["weight_decay"] == pytest.approx(1e-6)


def test_preset_without_mlvicx_json_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"mlvicx_small.json \(method 'mlvicx'\) refines method 'mlvicx'"):
        check_method_files([str(CONFIGS / "train.json"), str(CONFIGS / "mlvicx_small.json")])
    with pytest.raises(ValueError, match=r"mlvicx_small.json .*, not .*simclr.json \(method 'simclr'\)"):
        check_method_files([str(CONFIGS / n) for n in ("train.json", "simclr.json", "mlvicx_small.json")])


def test_preset_runs_from_the_command_line(tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]) -> None:
    out = tmp_path / "run"
    # only what keeps the test quick: one epoch at 32 px with narrow expanders on the tiny corpus
    log = bundle_cli(
        "pretrain", "run", "--config_file", "[" + ",".join(f"'configs/{f}'" for f in PRESET) + "]",
        "--logging_file", "configs/logging.conf", dataset_dir=demo_dir, manifest=demo_dir / "manifest.csv",
        output_dir=out, epochs=1, image_size=32, expander_features=32, stem="7x7", batch_size=14,
    )
    assert "k-NN accuracy epoch 1" in log and "linear-probe accuracy epoch 1" in log
    assert (out / "encoder.pt").is_file() and (out / "summary.json").is_file()
