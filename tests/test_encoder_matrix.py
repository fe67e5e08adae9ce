"""Every pretraining method's ``encoder.pt`` x every downstream tool, on tiny data.

The encoders come from the pretraining bundle (``bundles/pretrain``: ModAn-MulSupCon, SimCLR, supervised,
MLVICX, Adam-v2 (its teacher backbone); 1 epoch at 32 px on 28 demo images), trained once per session in process. Each downstream tool must build
the architecture recorded in the checkpoint (``resnet18``, or ``cb_resnet18`` for MLVICX) through the encoder
registry, load every weight, and finish: the classify and segment bundles (``ConfigWorkflow``, as
``python -m monai.bundle run``), ``scripts/run_cv.py``, ``scripts/run_segmentation.py`` and ``scripts/embed.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.bundle import ConfigWorkflow
from torch import nn

from modan_monai.data import ensure_demo_corpus
from modan_monai.data.demo_segmentation import demo_segmentation_manifest
from modan_monai.data.demo_tasks import demo_classification_manifest
from modan_monai.networks import encoder_arch

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
#: method -> (override files of bundles/pretrain/configs/train.json, architecture its encoder.pt must record)
METHODS: dict[str, tuple[tuple[str, ...], str]] = {
    "modan_mulsupcon": ((), "resnet18"),
    "simclr": (("simclr.json",), "resnet18"),
    "supervised": (("supervised.json",), "resnet18"),
    "mlvicx": (("mlvicx.json",), "cb_resnet18"),
    "adamv2": (("adamv2.json",), "resnet18"),
}
#: per-method ids that keep the tiny run cheap (narrow expanders / heads, one level, 2 locals)
METHOD_TINY: dict[str, dict[str, object]] = {
    "mlvicx": {"expander_features": 32},
    "adamv2": {"num_locals": 2, "num_prototypes": 64, "head_hidden_features": 32, "head_bottleneck_features": 16,
               "level_schedule": [[0, 1]]},
}
PRETRAIN_TINY = {"epochs": 1, "image_size": 32, "batch_size": 14, "log_interval": 1}
CLASSIFY_TINY = {"epochs": 1, "image_size": 32, "batch_size": 8, "log_interval": 1}
SEGMENT_TINY = {"epochs": 1, "image_size": 32, "batch_size": 4, "log_interval": 1, "few_shot": 3, "overlay_images": 1}


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("matrix_demo")
    ensure_demo_corpus(root, size=32, per_pair=4)
    return root


def workflow(config_files: list[Path], bundle: Path, **overrides: object) -> ConfigWorkflow:
    """A bundle's training workflow in process (as ``python -m monai.bundle run``), initialised.

    ``logging_file=False``: the bundle's ``logging.conf`` would replace the root logger's handlers in this process.
    """
    flow = ConfigWorkflow(
        config_file=[str(f) for f in config_files], workflow_type="train", bundle_root=str(bundle),
        logging_file=False, **overrides,
    )
    flow.initialize()
    return flow


def run_workflow(config_files: list[Path], bundle: Path, **overrides: object) -> ConfigWorkflow:
    """Initialise and run a bundle in process (the ``run`` of ``python -m monai.bundle``)."""
    flow = workflow(config_files, bundle, **overrides)
    flow.run()
    flow.finalize()
    return flow


@pytest.fixture(scope="session")
def encoders(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[dict[str, Path]]:
    """``{method: encoder.pt}`` written by the pretraining bundle for every method.

    For the whole matrix torch uses one intra-op thread: the tiny models run faster than with threads fighting
    over busy cores.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bundle = BUNDLES / "pretrain"
    root = tmp_path_factory.mktemp("matrix_encoders")
    paths = {}
    for method, (overrides, _) in METHODS.items():
        extra = METHOD_TINY.get(method, {})
        run_workflow(
            [bundle / "configs" / "train.json", *(bundle / "configs" / f for f in overrides)], bundle,
            dataset_dir=str(demo_dir), manifest=str(demo_dir / "manifest.csv"), output_dir=str(root / method),
            **PRETRAIN_TINY, **extra,
        )
        paths[method] = root / method / "encoder.pt"
        stored = torch.load(paths[method], map_location="cpu", weights_only=True)
        assert stored["arch"] == METHODS[method][1] and stored["metadata"]["method"] == method
    yield paths
    torch.set_num_threads(threads)


def assert_encoder_from(encoder: nn.Module, path: Path, arch: str) -> None:
    """``encoder`` is the architecture recorded in ``path`` and holds all of its weights."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert encoder_arch(encoder) == stored["arch"] == arch
    state = encoder.state_dict()
    assert state.keys() == stored["state_dict"].keys()
    for key, value in stored["state_dict"].items():
        assert torch.equal(state[key].cpu(), value), key


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def package_log() -> Iterator[Callable[[], str]]:
    """``text()``: the INFO messages of every ``modan_monai`` logger during the test.

    Attached to the package logger, not the root: a tool that applies a bundle's ``logging.conf`` replaces the root
    logger's handlers (pytest's ``caplog`` included), never those of ``modan_monai``.
    """
    package, handler = logging.getLogger("modan_monai"), _Lines()
    level = package.level
    package.setLevel(logging.INFO)
    package.addHandler(handler)
    yield lambda: "\n".join(handler.lines)
    package.removeHandler(handler)
    package.setLevel(level)


def assert_built_from(log: str, path: Path, arch: str) -> None:
    """The registry's log lines: ``arch`` built for ``path``, and all its tensors loaded."""
    assert re.search(rf"encoder arch '{arch}' \(\w+, .*\) for '{re.escape(str(path))}'", log), log[-3000:]
    assert f"encoder initialised from encoder checkpoint {path}: loaded all" in log


@pytest.mark.parametrize("method", METHODS)
def test_classify_bundle(method: str, encoders: dict[str, Path], demo_dir: Path, tmp_path: Path) -> None:
    bundle = BUNDLES / "classify"
    flow = workflow(
        [bundle / "configs" / "train.json"], bundle, dataset_dir=str(demo_dir),
        manifest=demo_classification_manifest(demo_dir, size=32, per_pair=4), output_dir=str(tmp_path),
        init=str(encoders[method]), **CLASSIFY_TINY,
    )
    assert_encoder_from(flow.parser.get_parsed_content("network").encoder, encoders[method], METHODS[method][1])
    flow.run()
    flow.finalize()
    assert (tmp_path / "model.pt").is_file()


@pytest.fixture(scope="session")
def segmentation_manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    return demo_segmentation_manifest(tmp_path_factory.mktemp("matrix_seg"), size=32, n_images=10)


@pytest.mark.parametrize("method", METHODS)
def test_segment_bundle(method: str, encoders: dict[str, Path], segmentation_manifest: str, tmp_path: Path) -> None:
    bundle = BUNDLES / "segment"
    flow = workflow(
        [bundle / "configs" / "train.json"], bundle, dataset_dir=str(Path(segmentation_manifest).parent),
        manifest=segmentation_manifest, output_dir=str(tmp_path), init=str(encoders[method]), **SEGMENT_TINY,
    )
    network = flow.parser.get_parsed_content("network")
    assert network.encoder.backbone_name == f"modan_{METHODS[method][1]}_3x3"
    assert_encoder_from(network.encoder, encoders[method], METHODS[method][1])
    flow.run()
    flow.finalize()
    assert (tmp_path / "model.pt").is_file()


def test_run_cv(encoders: dict[str, Path], demo_dir: Path, tmp_path: Path, load_script: Callable,
                package_log: Callable[[], str]) -> None:
    manifest = demo_classification_manifest(demo_dir, size=32, per_pair=4)
    args = ["--manifest", manifest, "--label-column", "label", "--modes", "finetune", "--fractions", "100",
            "--repeats", "1", "--folds", "2", "--epochs", "1", "--batch-size", "8", "--image-size", "32",
            "--out", str(tmp_path / "cv")]
    for method, path in encoders.items():
        args += ["--init", f"{method}={path}"]
    assert load_script("run_cv").main(args) == 0
    results = pd.read_csv(tmp_path / "cv" / "results.csv")
    assert sorted(results["init"].unique()) == sorted(METHODS)
    assert results.groupby("init").size().eq(2).all() and results["auc"].between(0, 1).all()
    for method, path in encoders.items():
        assert_built_from(package_log(), path, METHODS[method][1])


def test_run_segmentation(encoders: dict[str, Path], segmentation_manifest: str, tmp_path: Path,
                          load_script: Callable, package_log: Callable[[], str]) -> None:
    out = tmp_path / "grid"
    args = ["--manifest", segmentation_manifest, "--structures", "['heart']", "--few-shot", "3", "--seeds", "0",
            "--image-size", "32", "--epochs", "1", "--samples-per-epoch", "3", "--batch-size", "3", "--jobs", "2",
            "--out", str(out)]
    for method, path in encoders.items():
        args += ["--init", f"{method}={path}"]
    assert load_script("run_segmentation").main(args) == 0
    results = pd.read_csv(out / "results.csv")
    assert dict(zip(results["init"], results["arch"])) == {m: arch for m, (_, arch) in METHODS.items()}
    assert results["test_dice_heart"].between(0, 1).all()
    for method, path in encoders.items():
        assert_built_from(package_log(), path, METHODS[method][1])  # planning builds every U-Net backbone once
        assert_built_from((out / method / "n3_s0" / "run.log").read_text(), path, METHODS[method][1])


def test_embed(encoders: dict[str, Path], demo_dir: Path, tmp_path: Path, load_script: Callable,
               package_log: Callable[[], str]) -> None:
    out = tmp_path / "emb"
    args = ["--manifest", str(demo_dir / "manifest.csv"), "--out", str(out), "--image-size", "32"]
    for method, path in encoders.items():
        args += ["--encoder", f"{method}={path}"]
    assert load_script("embed").main(args) == 0
    for method, path in encoders.items():
        assert_built_from(package_log(), path, METHODS[method][1])
        features = np.load(out / f"{method}_features.npy")
        assert features.shape == (28, 512) and np.isfinite(features).all()
        assert (out / f"{method}_umap.png").is_file()
