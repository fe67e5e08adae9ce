"""End-to-end tests of ``bundles/modan_pretrain`` through ``python -m monai.bundle``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from monai.bundle import ConfigWorkflow

from modan_monai.data import ensure_demo_corpus
from modan_monai.networks import load_encoder

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "modan_pretrain"
SCHEMA = BUNDLE.parent / "meta_schema.json"
TINY = {"epochs": 1, "image_size": 32, "batch_size": 8, "log_interval": 1}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    ensure_demo_corpus(root, size=32, per_pair=4)
    return root


def config_arg(*names: str) -> str:
    """``--config_file`` value for one config file or a list of them (base first, overrides after)."""
    files = [f"configs/{n}" for n in names]
    return files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"


def run_train(bundle_cli: Callable[..., str], out: Path, demo_dir: Path, *configs: str, **overrides: object) -> str:
    """The bundle's training run on the demo corpus with tiny overrides."""
    return bundle_cli(
        "modan_pretrain", "run", "--config_file", config_arg("train.json", *configs),
        "--logging_file", "configs/logging.conf",
        **{"dataset_dir": demo_dir, "manifest": demo_dir / "manifest.csv", "output_dir": out, **TINY, **overrides},
    )


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

    first = torch.load(out / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=False)
    log = run_train(bundle_cli, out, demo_dir, epochs=2)
    assert "resuming from" in log and "checkpoint_epoch=1.pt" in log
    second = torch.load(out / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=False)
    assert second["trainer"]["max_epochs"] == 2
    assert second["trainer"]["iteration"] == 2 * first["trainer"]["iteration"]


@pytest.mark.parametrize("override", ["simclr.json", "supervised.json"])
def test_baseline_overrides_run(tmp_path: Path, demo_dir: Path, override: str, bundle_cli: Callable[..., str]) -> None:
    out = tmp_path / override
    run_train(bundle_cli, out, demo_dir, override)
    assert (out / "checkpoint_epoch=1.pt").is_file()
    meta = torch.load(out / "encoder.pt", map_location="cpu", weights_only=False)["metadata"]
    assert meta["method"] == override.removesuffix(".json")


def test_check_properties_and_metadata(tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]) -> None:
    for extra in ([], ["configs/simclr.json"], ["configs/supervised.json"]):
        workflow = ConfigWorkflow(
            config_file=[str(BUNDLE / "configs" / "train.json"), *[str(BUNDLE / e) for e in extra]],
            meta_file=str(BUNDLE / "configs" / "metadata.json"),
            logging_file=str(BUNDLE / "configs" / "logging.conf"),
            workflow_type="train",
            bundle_root=str(BUNDLE),
            dataset_dir=str(demo_dir),
            output_dir=str(tmp_path / "props"),
        )
        workflow.initialize()
        assert workflow.check_properties() == []
    log = bundle_cli("modan_pretrain", "verify_metadata", meta_file="configs/metadata.json", filepath=SCHEMA)
    assert "metadata is verified with no error" in log


def test_bad_manifest_row_is_reported(tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]) -> None:
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(demo_dir / "manifest.csv", keep_default_na=False)
    frame["path"] = [str(demo_dir / p) for p in frame["path"]]
    frame.loc[2, "path"] = frame.loc[2, "path"].replace(".dcm", "_missing.dcm")
    frame.to_csv(bad, index=False)
    log = bundle_cli(
        "modan_pretrain", "run", "--config_file", "configs/train.json", check=False,
        manifest=bad, output_dir=tmp_path / "o", **TINY,
    )
    assert "row 2" in log and "_missing" in log
