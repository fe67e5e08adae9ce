"""Tests of ``bundles/pretrain/configs/adamv2_small.json``, the Adam-v2 preset for the 64 px demo corpus."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from modan_monai.bundle import check_method_files
from modan_monai.data import ensure_demo_corpus
from modan_monai.handlers import EMATeacherUpdate, WeightDecaySchedule
from modan_monai.losses import AdamV2Loss
from modan_monai.networks import AdamV2Model
from modan_monai.transforms import AdamV2Viewsd

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "pretrain"
CONFIGS = BUNDLE / "configs"
PRESET = ["train.json", "adamv2.json", "adamv2_small.json"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    ensure_demo_corpus(root, size=32, per_pair=8)  # 36 training images: one batch of the preset's 32
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
    assert get("method") == "adamv2"
    assert (get("image_size"), get("epochs"), get("batch_size"), get("knn_interval")) == (64, 20, 32, 2)
    assert get("level_schedule") == [[0, 16], [1, 4]] and get("load_size") == 128
    assert get("knn_bn_stats") == "recompute" and get("stem") == "7x7" and get("num_locals") == 4
    network, loss, views = get("network_def"), get("loss"), get("train#augment_transforms#0")
    assert isinstance(network, AdamV2Model) and isinstance(loss, AdamV2Loss) and isinstance(views, AdamV2Viewsd)
    # 256 prototypes behind a DINO head with BatchNorm, sharp teacher, last layer trained from the first step
    assert network.num_prototypes == 256
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in network.student.head.modules()) == 2
    assert get("teacher_temperature") == pytest.approx(0.01) and get("freeze_last_layer") == 0
    # AdamW at 1e-3 (the linear rule from 0.008 at batch 32), constant after the warm-up; weight decay held at 0.04
    optimizer = get("optimizer")
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == pytest.approx(1e-3)
    assert get("train#lr_scheduler").end_lr == pytest.approx(1e-3)
    handlers = get("adamv2_handlers")
    ema = next(h for h in handlers if isinstance(h, EMATeacherUpdate))
    assert ema.momentum_start == ema.momentum_end == pytest.approx(0.99)
    decay = next(h for h in handlers if isinstance(h, WeightDecaySchedule))
    assert decay.start == decay.end == pytest.approx(0.04)
    # no intensity jitter or blur on any view
    assert views.jitterer.jitter_prob == 0.0 and tuple(views.blur_prob) == (0.0, 0.0, 0.0)


def test_view_ids_reach_the_joint_views(tmp_path: Path, demo_dir: Path) -> None:
    views = preset_workflow(
        demo_dir, tmp_path / "v", files=["train.json", "adamv2.json"], jitter_prob=0.5, blur_prob=[0.2, 0.3, 0.4]
    ).parser.get_parsed_content("train#augment_transforms#0")
    assert views.jitterer.jitter_prob == 0.5 and tuple(views.blur_prob) == (0.2, 0.3, 0.4)


def test_preset_without_adamv2_json_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"adamv2_small.json \(method 'adamv2'\) refines method 'adamv2'"):
        check_method_files([str(CONFIGS / "train.json"), str(CONFIGS / "adamv2_small.json")])
    with pytest.raises(ValueError, match=r"adamv2_small.json .*, not .*simclr.json \(method 'simclr'\)"):
        check_method_files([str(CONFIGS / n) for n in ("train.json", "simclr.json", "adamv2_small.json")])


def test_preset_runs_from_the_command_line(tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]) -> None:
    out = tmp_path / "run"
    # only what keeps the test quick: one epoch of 4 steps at 32 px, level 0, a narrow head, 2 locals
    log = bundle_cli(
        "pretrain", "run", "--config_file", "[" + ",".join(f"'configs/{f}'" for f in PRESET) + "]",
        "--logging_file", "configs/logging.conf", dataset_dir=demo_dir, manifest=demo_dir / "manifest.csv",
        output_dir=out, image_size=32, level_schedule="[[0, 1]]", batch_size=8, num_locals=2, num_prototypes=64,
        head_hidden_features=32, head_bottleneck_features=16,
    )
    assert "k-NN accuracy epoch 1" in log and "linear-probe accuracy epoch 1" in log
    assert (out / "encoder.pt").is_file() and (out / "summary.json").is_file()
