"""The training settings stored in a saved model's state dict metadata, read back and checked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from modan_monai.handlers import BestModelSaver, FinalModelSaver, KeepBestWeights
from modan_monai.networks import (
    SegmentationUNet,
    attach_model_settings,
    build_classifier,
    check_model_settings,
    model_settings,
    read_model_settings,
    trained_setting,
)


def test_settings_of_the_built_network() -> None:
    settings = model_settings(build_classifier(stem="7x7"), task="classification", image_size=(32, 32),
                              class_names=("no", "yes"))
    assert settings == {"task": "classification", "image_size": [32, 32], "arch": "resnet18", "stem": "7x7",
                        "class_names": ["no", "yes"]}
    unet = SegmentationUNet(out_channels=2, arch="cb_resnet18", stem="3x3")
    assert model_settings(unet, task="segmentation", structures=["a", ["b", "c"]])["arch"] == "cb_resnet18"
    with pytest.raises(ValueError, match="model settings.*Path is not a plain value"):
        model_settings(unet, task="segmentation", where=Path("x"))


def test_saved_settings_keep_a_plain_state_dict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = build_classifier()
    settings = model_settings(net, task="classification", image_size=32, class_names=["negative", "positive"])
    torch.save(attach_model_settings(net.state_dict(), settings), tmp_path / "model.pt")
    assert read_model_settings(tmp_path / "model.pt") == settings
    other = build_classifier()
    other.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))  # torch and MONAI read it as before
    loader = CheckpointLoader(str(tmp_path / "model.pt"), {"model": build_classifier()})
    loader(Engine(lambda e, b: None))
    for a, b in zip(net.state_dict().values(), loader.load_dict["model"].state_dict().values()):
        assert torch.equal(a, b)
    torch.save(net.state_dict(), tmp_path / "bare.pt")  # written before settings were stored
    with caplog.at_level(logging.WARNING):
        assert read_model_settings(tmp_path / "bare.pt") == {}
    assert "bare.pt hold no training settings" in caplog.text
    assert read_model_settings(tmp_path / "absent.pt", missing_ok=True) == {}
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        read_model_settings(tmp_path / "absent.pt")


def test_handlers_write_the_settings(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 1)
    meta = {"task": "classification", "image_size": 32}
    keep = KeepBestWeights(net, save_path=tmp_path / "best.pt", metadata=meta)
    engine = Engine(lambda e, b: None)
    engine.state.metrics, engine.state.epoch = {"val_auc": 0.7}, 1
    keep(engine)
    FinalModelSaver(net, tmp_path, "final.pt", metadata=meta)(engine)
    engine.state.best_metric_epoch, engine.state.key_metric_name, engine.state.best_metric = 1, "m", 0.7
    BestModelSaver(net, tmp_path, "model.pt", metadata=meta)(engine)
    for name in ("best.pt", "final.pt", "model.pt"):
        assert read_model_settings(tmp_path / name) == meta, name
    assert torch.load(tmp_path / "best.pt", weights_only=True)._metadata["modan_monai"] == meta
    assert "modan_monai" not in getattr(keep.best_state, "_metadata", {})  # the kept copy itself is unchanged


def test_check_names_both_values() -> None:
    saved = {"task": "segmentation", "image_size": 32, "stem": "3x3", "arch": None}
    assert check_model_settings(saved, {"image_size": 32, "stem": None, "arch": "resnet18"}, "m.pt") == {
        **saved, "arch": "resnet18"}
    with pytest.raises(ValueError, match=r"m.pt .*task is 'classification' here \(the bundle's task\) but "
                                         r"'segmentation' in training; image_size is 64 here \(config id "
                                         r"'image_size'\) but 32 in training"):
        check_model_settings(saved, {"task": "classification", "image_size": 64}, "m.pt")
    assert check_model_settings({}, {"image_size": 64}, "m.pt") == {"image_size": 64}  # nothing recorded
    assert trained_setting(saved, "image_size", 64) == 32 and trained_setting(saved, "arch", "resnet18") == "resnet18"
