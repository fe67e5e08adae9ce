"""The project's encoders as MONAI FlexibleUNet backbones: output shapes, strict checkpoint loading, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

from modan_monai.networks import initialise_encoder, load_encoder_state, save_encoder
from modan_monai.networks.nets import ResNet18Encoder
from modan_monai.networks.nets.cb_resnet_encoder import CBResNet18Encoder
from modan_monai.networks.nets.flexunet_encoders import FLEXUNET_BACKBONES, SegmentationUNet, flexunet_backbone

PLAIN = {"resnet18": ResNet18Encoder, "cb_resnet18": CBResNet18Encoder}


def _pretrained(arch: str, stem: str, path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    encoder = PLAIN[arch](stem=stem)
    for p in encoder.parameters():  # make the weights distinguishable from a fresh initialisation
        p.data.add_(0.01)
    for name, buf in encoder.named_buffers():
        if name.endswith("running_mean"):
            buf.fill_(0.1)
    return save_encoder(encoder, path, method="test"), {k: v.clone() for k, v in encoder.state_dict().items()}


def test_every_backbone_is_registered() -> None:
    assert set(FLEXUNET_BACKBONES) == {"modan_resnet18_3x3", "modan_resnet18_7x7", "modan_cb_resnet18_3x3",
                                       "modan_cb_resnet18_7x7", "modan_resnet50_3x3", "modan_resnet50_7x7"}
    assert set(FLEXUNET_BACKBONES) <= set(FLEXUNET_BACKBONE.register_dict)
    assert flexunet_backbone("cb_resnet18", "7x7") == "modan_cb_resnet18_7x7"


# the ResNet-50 backbones are checked in test_registry.py (strict load, output size)
@pytest.mark.parametrize("backbone", sorted(b for b, (arch, _) in FLEXUNET_BACKBONES.items() if arch in PLAIN))
def test_flexible_unet_loads_encoder_strictly_and_keeps_input_size(backbone: str, tmp_path: Path) -> None:
    arch, stem = FLEXUNET_BACKBONES[backbone]
    path, state = _pretrained(arch, stem, tmp_path / "encoder.pt")
    unet = FlexibleUNet(in_channels=1, out_channels=3, backbone=backbone)
    assert sorted(unet.encoder.state_dict()) == sorted(state)  # the encoder submodule has the checkpoint's keys
    assert load_encoder_state(unet.encoder, path, strict=True) == {"missing": [], "unexpected": []}
    for key, value in unet.encoder.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    unet.eval()
    with torch.no_grad():
        for size in (32,):
            assert unet(torch.rand(2, 1, size, size)).shape == (2, 3, size, size)


@pytest.mark.parametrize("stem", ["3x3", "7x7"])
def test_stride1_stem_decoder_output_matches_input_at_64_and_128(stem: str) -> None:
    unet = FlexibleUNet(in_channels=1, out_channels=2, backbone=flexunet_backbone("resnet18", stem)).eval()
    with torch.no_grad():
        for size in (64, 128):
            assert unet(torch.rand(1, 1, size, size)).shape == (1, 2, size, size)
    maps = unet.encoder(torch.rand(1, 1, 64, 64))
    expected = [32, 16, 8, 4] if stem == "3x3" else [32, 16, 8, 4, 2]
    assert [m.shape[-1] for m in maps] == expected


@pytest.mark.parametrize(
    "saved, built, match",
    [(("cb_resnet18", "3x3"), ("resnet18", "3x3"), r"unexpected keys \[context_blocks"),
     (("resnet18", "3x3"), ("cb_resnet18", "3x3"), r"missing keys \[context_blocks"),
     (("resnet18", "7x7"), ("resnet18", "3x3"), r"shape-mismatched keys \[conv1.weight.*stem='7x7'")],
)
def test_checkpoint_of_another_backbone_names_the_keys(saved: tuple, built: tuple, match: str, tmp_path: Path) -> None:
    path, _ = _pretrained(*saved, tmp_path / "encoder.pt")
    with pytest.raises(ValueError, match=match):
        SegmentationUNet(in_channels=1, out_channels=2, arch=built[0], stem=built[1], init=str(path))


def test_segmentation_unet_init_and_freeze(tmp_path: Path) -> None:
    path, state = _pretrained("resnet18", "3x3", tmp_path / "encoder.pt")
    net = SegmentationUNet(in_channels=1, out_channels=2, init=str(path), freeze_encoder=True)
    torch.testing.assert_close(net.encoder.state_dict()["conv1.weight"], state["conv1.weight"])
    assert not net.train().encoder.training and net.decoder.training
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for p in net.decoder.parameters())
    # a trained segmentation model's own state dict initialises the encoder of another U-Net (prefix stripped)
    other = SegmentationUNet(in_channels=1, out_channels=2)
    torch.save(net.state_dict(), tmp_path / "seg.pt")
    assert initialise_encoder(other.encoder, str(tmp_path / "seg.pt"))["reinitialised"] == []
    torch.testing.assert_close(other.encoder.state_dict()["conv1.weight"], state["conv1.weight"])


def test_refused_arguments() -> None:
    with pytest.raises(ValueError, match="pretrained=True is not supported"):
        FlexibleUNet(in_channels=1, out_channels=2, backbone="modan_resnet18_3x3", pretrained=True)
    with pytest.raises(ValueError, match="registered: .*modan_resnet18_3x3"):
        flexunet_backbone("convnext_b", "3x3")


@pytest.mark.parametrize(
    ("stem", "multiple", "size", "nearest"), [("3x3", 16, 40, "32 or 48"), ("7x7", 32, 48, "32 or 64")]
)
def test_an_image_size_the_unet_cannot_take_is_named(stem: str, multiple: int, size: int, nearest: str) -> None:
    net = SegmentationUNet(in_channels=1, out_channels=2, stem=stem)
    assert net.size_multiple == multiple
    said = (f"does not fit the segmentation U-Net on modan_resnet18_{stem}: its encoder downsamples by {multiple}, "
            f"so every image size must be a multiple of {multiple} (e.g. {nearest}); set image_size (bundle config "
            "id 'image_size'")
    with pytest.raises(ValueError, match=re.escape(f"image_size {size} {said}")):
        SegmentationUNet(in_channels=1, out_channels=2, stem=stem, image_size=size)
    with pytest.raises(ValueError, match=re.escape(f"input of spatial size ({size}, {multiple * 2}) {said}")):
        net(torch.zeros(1, 1, size, multiple * 2))  # instead of "Sizes of tensors must match" in the decoder
