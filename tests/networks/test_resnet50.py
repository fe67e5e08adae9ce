"""ResNet-50 encoder (torchvision layout): shapes, size, ImageNet mapping, registry entry and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modan_monai.networks import (
    ResNet50Encoder,
    build_encoder,
    encoder_arch,
    flexunet_backbone,
    load_encoder,
    save_encoder,
)


def _torchvision_resnet50_state() -> dict[str, torch.Tensor]:
    """Random weights under torchvision's ResNet-50 key names and shapes (RGB 7x7 conv1, 1000-class fc)."""
    gen = torch.Generator().manual_seed(0)
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        shapes.update({f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")})

    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for block in range(blocks):
            p = f"layer{layer}.{block}"
            in_c = inplanes if block == 0 else planes * 4
            shapes[f"{p}.conv1.weight"] = (planes, in_c, 1, 1)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if block == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, in_c, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4
    shapes.update({"fc.weight": (1000, 2048), "fc.bias": (1000,)})
    state = {k: torch.rand(s, generator=gen) for k, s in shapes.items()}
    state.update({k.replace("running_var", "num_batches_tracked"): torch.tensor(7) for k in shapes
                  if k.endswith("running_var")})
    return state


def test_shapes_size_and_stems() -> None:
    encoder = ResNet50Encoder()  # 7x7 stride-2 stem by default
    assert encoder.out_features == 2048 and encoder.stem == "7x7"
    assert encoder(torch.rand(2, 1, 32, 32)).shape == (2, 2048)
    maps = ResNet50Encoder(stem="3x3").forward_features(torch.rand(1, 1, 32, 32))
    assert [(m.shape[1], m.shape[-1]) for m in maps] == [(64, 32), (256, 16), (512, 8), (1024, 4), (2048, 2)]
    # torchvision's resnet50 has 25,557,032 parameters: minus fc (2048 * 1000 + 1000) and two of conv1's 3 inputs
    assert sum(p.numel() for p in encoder.parameters()) == 25_557_032 - 2_049_000 - 2 * 64 * 7 * 7
    with pytest.raises(ValueError, match="stem must be one of"):
        ResNet50Encoder(stem="5x5")


def test_torchvision_imagenet_state_loads_without_new_mapping(tmp_path: Path) -> None:
    state = _torchvision_resnet50_state()
    torch.save(state, tmp_path / "resnet50_imagenet.pth")
    encoder = build_encoder(f"imagenet:{tmp_path / 'resnet50_imagenet.pth'}", arch="resnet50")
    assert encoder.init_report["reinitialised"] == [] and "fc.weight" not in encoder.init_report["loaded"]
    torch.testing.assert_close(encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(encoder.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])
    torch.testing.assert_close(encoder.layer4[0].downsample[1].running_var, state["layer4.0.downsample.1.running_var"])


def test_registry_entry_checkpoints_and_unet_backbone(tmp_path: Path) -> None:
    encoder = build_encoder("scratch", arch="resnet50", stem="3x3")
    assert isinstance(encoder, ResNet50Encoder) and encoder_arch(encoder) == "resnet50" and encoder.stem == "3x3"
    with torch.no_grad():
        encoder.layer4[2].conv3.weight.mul_(2.0)
    back = load_encoder(save_encoder(encoder, tmp_path / "encoder.pt"))
    assert isinstance(back, ResNet50Encoder) and back.encoder_kwargs == encoder.encoder_kwargs
    for key, value in encoder.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    # a training checkpoint (``encoder.*`` keys) is recognised as resnet50 with its stem
    torch.save({"network": {f"encoder.{k}": v for k, v in encoder.state_dict().items()}}, tmp_path / "train.pt")
    rebuilt = build_encoder(str(tmp_path / "train.pt"))
    assert rebuilt.init_report["arch"] == "resnet50" and rebuilt.stem == "3x3"
    assert torch.equal(rebuilt.layer4[2].conv3.weight, encoder.layer4[2].conv3.weight)
    # FlexibleUNet backbones (strict loading and output size: test_registry.py, parametrised over every backbone)
    assert flexunet_backbone("resnet50", "7x7") == "modan_resnet50_7x7"
    assert flexunet_backbone("resnet50", "3x3") == "modan_resnet50_3x3"
