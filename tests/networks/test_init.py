"""Encoder initialisation for downstream training: scratch, pretraining checkpoints, local ImageNet weights."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from modan_monai.networks import (
    ClassificationModel,
    ContrastiveModel,
    ProjectionHead,
    ResNet18Encoder,
    build_classifier,
    initialise_encoder,
    save_encoder,
)

from network_data import torchvision_resnet18_state


def assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: list[str]) -> None:
    for k in keys:
        np.testing.assert_allclose(a[k].float().numpy(), b[k].float().numpy(), err_msg=k)


def test_scratch_reports_everything_random() -> None:
    encoder = ResNet18Encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    report = initialise_encoder(encoder, "scratch")
    assert report["source"] == "scratch" and report["loaded"] == []
    assert report["reinitialised"] == list(before)
    assert_state_equal(encoder.state_dict(), before, list(before))


def test_scratch_before_a_restore_names_the_restored_file(caplog: pytest.LogCaptureFixture) -> None:
    """The evaluate / inference configs build a model for the weights they restore next: no "random" line."""
    with caplog.at_level(logging.INFO):
        model = build_classifier("scratch", restore_from="models/model.pt")
        build_classifier("scratch")
    assert model.encoder.init_report["source"] == "scratch"
    restored = [r.getMessage() for r in caplog.records if "restored from" in r.getMessage()]
    random = [r.getMessage() for r in caplog.records if "from scratch (random)" in r.getMessage()]
    n = len(model.encoder.state_dict())
    assert restored == [f"encoder built for the weights restored from models/model.pt: {n} tensors"]
    assert len(random) == 1  # the plain scratch build still says so


@pytest.mark.parametrize("stem", ["3x3", "7x7"])
@pytest.mark.parametrize("kind", ["encoder", "training"])
def test_pretraining_checkpoints_load(tmp_path: Path, stem: str, kind: str) -> None:
    torch.manual_seed(1)
    source = ResNet18Encoder(stem=stem)
    if kind == "encoder":
        path = save_encoder(source, tmp_path / "encoder.pt", method="modan_mulsupcon")
    else:  # what TrainingCheckpointSaver writes: {"network": ContrastiveModel state, ...}
        model = ContrastiveModel(source, ProjectionHead())
        path = tmp_path / "checkpoint_epoch=3.pt"
        torch.save({"network": model.state_dict(), "epoch": 3}, path)
    torch.manual_seed(2)
    target = ResNet18Encoder(stem=stem)
    report = initialise_encoder(target, str(path))
    keys = list(source.state_dict())
    assert report["loaded"] == keys and report["reinitialised"] == []
    assert_state_equal(target.state_dict(), source.state_dict(), keys)


def test_imagenet_3x3_stem_reinitialises_conv1_and_logs_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = torchvision_resnet18_state()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, path)
    encoder = ResNet18Encoder(stem="3x3")
    conv1_before = encoder.conv1.weight.detach().clone()
    with caplog.at_level(logging.INFO):
        report = initialise_encoder(encoder, f"imagenet:{path}")
    assert report["reinitialised"] == ["conv1.weight"]
    assert "conv1.weight" not in report["loaded"] and "fc.weight" not in report["loaded"]
    np.testing.assert_allclose(encoder.conv1.weight.detach().numpy(), conv1_before.numpy())
    others = [k for k in encoder.state_dict() if k != "conv1.weight"]
    assert_state_equal(encoder.state_dict(), state, others)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("conv1" in m and "re-initialised" in m for m in warnings), warnings
    assert any("fc.weight" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


def test_imagenet_7x7_stem_sums_rgb_conv1(tmp_path: Path) -> None:
    state = torchvision_resnet18_state()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save({"state_dict": state}, path)
    encoder = ResNet18Encoder(stem="7x7")
    report = initialise_encoder(encoder, f"imagenet:{path}")
    assert report["reinitialised"] == []
    np.testing.assert_allclose(
        encoder.conv1.weight.detach().numpy(), state["conv1.weight"].sum(dim=1, keepdim=True).numpy(), rtol=1e-6
    )
    assert_state_equal(encoder.state_dict(), state, [k for k in encoder.state_dict() if k != "conv1.weight"])


def test_wrong_architecture_names_the_keys(tmp_path: Path) -> None:
    # another stem
    path = save_encoder(ResNet18Encoder(stem="7x7"), tmp_path / "enc7.pt")
    with pytest.raises(ValueError, match=r"conv1\.weight.*stem='7x7'"):
        initialise_encoder(ResNet18Encoder(stem="3x3"), str(path))
    # another network altogether
    other = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.save({"network": other.state_dict()}, tmp_path / "mlp.pt")
    with pytest.raises(ValueError, match=r"unexpected keys \[0\.bias, 0\.weight") as err:
        initialise_encoder(ResNet18Encoder(), str(tmp_path / "mlp.pt"))
    assert "missing keys [bn1.bias" in str(err.value)
    # a ResNet-50-like ImageNet file (bottleneck blocks)
    state = torchvision_resnet18_state()
    state["layer1.0.conv3.weight"] = torch.zeros(256, 64, 1, 1)
    torch.save(state, tmp_path / "r50.pth")
    with pytest.raises(ValueError, match=r"unexpected keys \[layer1\.0\.conv3\.weight\]"):
        initialise_encoder(ResNet18Encoder(stem="7x7"), f"imagenet:{tmp_path / 'r50.pth'}")


@pytest.mark.parametrize("init", ["missing.pt", "imagenet:missing.pth"])
def test_missing_file(tmp_path: Path, init: str) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        initialise_encoder(ResNet18Encoder(), init.replace("missing", str(tmp_path / "missing")))


def test_build_classifier_linear_probe_keeps_encoder_in_eval_mode(tmp_path: Path) -> None:
    path = save_encoder(ResNet18Encoder(), tmp_path / "encoder.pt")
    model = build_classifier(str(path), num_classes=2, freeze_encoder=True)
    assert isinstance(model, ClassificationModel)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    model.train()
    assert model.training and model.classifier.training and not model.encoder.training
    assert not any(m.training for m in model.encoder.modules())
    finetune = build_classifier("scratch").train()
    assert finetune.encoder.training and all(p.requires_grad for p in finetune.parameters())
    assert finetune(torch.zeros(2, 1, 32, 32)).shape == (2, 2)
