"""Tests for the ResNet-18 encoder, the heads and the encoder checkpoint format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modan_monai.networks import (
    ENCODER_CHECKPOINT_FORMAT,
    ClassificationModel,
    ContrastiveModel,
    ProjectionHead,
    ResNet18Encoder,
    load_encoder,
    load_encoder_state,
    save_encoder,
)


def resnet18_parameter_count(in_channels: int, stem_kernel: int) -> int:
    """Parameters of a standard ResNet-18 (torchvision layout, no fc), written out by hand."""

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k

    def bn(c: int) -> int:
        return 2 * c

    total = conv(in_channels, 64, stem_kernel) + bn(64)
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if block == 0 and (stride != 1 or cin != cout):
                total += conv(cin, cout, 1) + bn(cout)  # projection shortcut, no bias
            cin = cout
    return total


@pytest.mark.parametrize("stem, kernel", [("3x3", 3), ("7x7", 7)])
def test_parameter_count_is_resnet18(stem: str, kernel: int) -> None:
    encoder = ResNet18Encoder(spatial_dims=2, in_channels=1, stem=stem)
    assert sum(p.numel() for p in encoder.parameters()) == resnet18_parameter_count(1, kernel)
    assert resnet18_parameter_count(3, 7) == 11_689_512 - 513_000  # torchvision resnet18 minus its fc


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("stem, stem_stride", [("3x3", 1), ("7x7", 2)])
def test_encoder_shapes(size: int, stem: str, stem_stride: int) -> None:
    encoder = ResNet18Encoder(stem=stem).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        assert encoder(x).shape == (2, encoder.out_features) == (2, 512)
        maps = encoder.forward_features(x)
    stem_size = size // stem_stride
    expected = [
        (64, stem_size),
        (64, stem_size // 2),
        (128, stem_size // 4),
        (256, stem_size // 8),
        (512, stem_size // 16),
    ]
    assert [(m.shape[1], m.shape[-1]) for m in maps] == expected
    assert encoder.conv1.kernel_size == (int(stem[0]),) * 2 and encoder.conv1.stride == (stem_stride,) * 2


def test_forward_equals_pooled_last_stage() -> None:
    encoder = ResNet18Encoder().eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        pooled = encoder.forward_features(x)[-1].mean(dim=(2, 3))
        np.testing.assert_allclose(encoder(x).numpy(), pooled.numpy(), atol=1e-6)


def test_norm_and_act_reach_the_blocks() -> None:
    # MONAI's ResNet initialisation needs affine norm layers (plain "instance" has no weight)
    encoder = ResNet18Encoder(norm=("group", {"num_groups": 8}), act="prelu")
    assert type(encoder.layer3[1].bn1).__name__ == "GroupNorm"
    assert type(encoder.layer2[0].downsample[1]).__name__ == "GroupNorm"
    assert type(encoder.layer3[1].act).__name__ == "PReLU"
    assert encoder(torch.randn(2, 1, 32, 32)).shape == (2, 512)


def test_unknown_stem_raises() -> None:
    with pytest.raises(ValueError, match="stem"):
        ResNet18Encoder(stem="5x5")


def test_contrastive_model_output() -> None:
    torch.manual_seed(0)
    model = ContrastiveModel(ResNet18Encoder(), ProjectionHead(512, 512, 128)).eval()
    x = torch.randn(3, 2, 1, 32, 32)
    with torch.no_grad():
        out = model(x)
        single = model(x[:, 1])
        encoded_view1 = model.head(model.encoder(x[:, 1]))
    assert out.shape == (3, 2, 128) and single.shape == (3, 1, 128)
    np.testing.assert_allclose(out.norm(dim=-1).numpy(), np.ones((3, 2)), rtol=1e-5)
    # output[b, v] is view v of image b
    np.testing.assert_allclose(out[:, 1].numpy(), encoded_view1.numpy(), atol=1e-5)
    np.testing.assert_allclose(single[:, 0].numpy(), encoded_view1.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(2, 32, 32))


def test_classification_model_shapes() -> None:
    model = ClassificationModel(ResNet18Encoder(), num_classes=5, dropout=0.2).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        logits = model(x)
        np.testing.assert_allclose(model(torch.stack([x, torch.zeros_like(x)], 1)).numpy(), logits.numpy(), atol=1e-6)
    assert logits.shape == (2, 5)
    with pytest.raises(ValueError):
        ClassificationModel(ResNet18Encoder(), num_classes=0)


@pytest.mark.parametrize("stem", ["3x3", "7x7"])
def test_save_load_round_trip(tmp_path, stem: str) -> None:
    encoder = ResNet18Encoder(stem=stem)
    encoder(torch.randn(4, 1, 32, 32))  # update BatchNorm running statistics
    path = save_encoder(encoder, tmp_path / "sub" / "encoder.pt", method="mulsupcon", epoch=3)
    stored = torch.load(path, weights_only=True)
    assert stored["format"] == ENCODER_CHECKPOINT_FORMAT and stored["arch"] == "resnet18"
    assert stored["metadata"] == {"method": "mulsupcon", "epoch": 3}
    loaded = load_encoder(path)
    assert loaded.stem == stem
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder.eval()(x), loaded.eval()(x))


def test_save_encoder_from_wrapper_and_rejects_objects(tmp_path) -> None:
    model = ContrastiveModel(ResNet18Encoder(), ProjectionHead())
    path = save_encoder(model, tmp_path / "e.pt")
    assert set(torch.load(path, weights_only=True)["state_dict"]) == set(model.encoder.state_dict())
    with pytest.raises(ValueError, match="metadata"):
        save_encoder(model, tmp_path / "f.pt", vocabulary=object())
    with pytest.raises(ValueError, match="ResNet18Encoder"):
        save_encoder(torch.nn.Linear(2, 2), tmp_path / "g.pt")


@pytest.mark.parametrize("as_file", [True, False])
def test_load_from_training_checkpoint(tmp_path, as_file: bool) -> None:
    model = ContrastiveModel(ResNet18Encoder(), ProjectionHead())
    checkpoint = {"network": model.state_dict(), "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict()}
    source = checkpoint
    if as_file:
        source = tmp_path / "checkpoint_epoch=1.pt"
        torch.save(checkpoint, source)
    fresh = ResNet18Encoder()
    report = load_encoder_state(fresh, source)
    assert report == {"missing": [], "unexpected": []}
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key


def test_mismatched_stem_raises_naming_keys(tmp_path) -> None:
    path = save_encoder(ResNet18Encoder(stem="7x7"), tmp_path / "e7.pt")
    with pytest.raises(ValueError, match=r"shape-mismatched keys \[conv1\.weight \(checkpoint \(64, 1, 7, 7\)"):
        load_encoder_state(ResNet18Encoder(stem="3x3"), path)


def test_missing_and_unexpected_keys(tmp_path) -> None:
    state = ResNet18Encoder().state_dict()
    state.pop("layer4.1.bn2.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \[layer4\.1\.bn2\.weight\].*unexpected keys \[extra\.weight\]"):
        load_encoder_state(ResNet18Encoder(), state)
    report = load_encoder_state(ResNet18Encoder(), state, strict=False)
    assert report == {"missing": ["layer4.1.bn2.weight"], "unexpected": ["extra.weight"]}


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_encoder(tmp_path / "missing.pt")
    torch.save({"network": ResNet18Encoder().state_dict()}, tmp_path / "train.pt")
    with pytest.raises(ValueError, match="not an encoder checkpoint"):
        load_encoder(tmp_path / "train.pt")
