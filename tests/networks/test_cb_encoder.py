"""Context-bottleneck ResNet-18: level shapes, refined maps feeding the next stage, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modan_monai.networks import (
    CBResNet18Encoder,
    ResNet18Encoder,
    build_classifier,
    initialise_encoder,
    load_encoder,
    save_encoder,
)
from modan_monai.networks.registry import encoder_arch


@pytest.mark.parametrize(
    "stem, sizes", [("3x3", [64, 32, 16, 8, 4]), ("7x7", [32, 16, 8, 4, 2])]
)
def test_level_shapes_for_64px_input(stem: str, sizes: list[int]) -> None:
    encoder = CBResNet18Encoder(spatial_dims=2, in_channels=1, stem=stem).eval()
    x = torch.randn(2, 1, 64, 64)
    features = encoder.forward_features(x)
    assert [tuple(f.shape) for f in features] == [
        (2, c, s, s) for c, s in zip((64, 64, 128, 256, 512), sizes)
    ]
    assert encoder(x).shape == (2, 512)
    torch.testing.assert_close(encoder(x), features[-1].mean(dim=(2, 3)))


def test_refined_maps_feed_the_next_stage() -> None:
    encoder = CBResNet18Encoder().eval()
    x = torch.randn(2, 1, 32, 32)
    calls: list[torch.Tensor] = []
    encoder.layer1.register_forward_pre_hook(lambda module, args: calls.append(args[0]))
    stem_refined = encoder.forward_features(x)[0]
    torch.testing.assert_close(calls[0], encoder.maxpool(stem_refined))
    # zeroing the blocks scales every stage's input by 0.25: the refined maps are what the stages consume
    with torch.no_grad():
        for p in encoder.context_blocks.parameters():
            p.zero_()
    stem_raw = encoder.act(encoder.bn1(encoder.conv1(x)))
    torch.testing.assert_close(encoder.forward_features(x)[0], 0.25 * stem_raw)


def test_encoder_kwargs_rebuild_the_architecture() -> None:
    encoder = CBResNet18Encoder(stem="7x7", reduction=4, channel_gate="conv")
    rebuilt = CBResNet18Encoder(**encoder.encoder_kwargs)
    assert rebuilt.state_dict().keys() == encoder.state_dict().keys()
    assert encoder_arch(encoder) == "cb_resnet18" and encoder_arch(ResNet18Encoder()) == "resnet18"


def test_checkpoint_round_trip_and_build_classifier(tmp_path: Path) -> None:
    encoder = CBResNet18Encoder(reduction=4, channel_gate="conv").eval()
    path = save_encoder(encoder, tmp_path / "encoder.pt", method="mlvicx")
    loaded = load_encoder(path).eval()
    assert isinstance(loaded, CBResNet18Encoder) and loaded.channel_gate == "conv" and loaded.reduction == 4
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), encoder(x))
    model = build_classifier(init=str(path), num_classes=3)
    assert isinstance(model.encoder, CBResNet18Encoder)
    torch.testing.assert_close(model.encoder.eval()(x), encoder(x))


def test_mismatched_backbone_names_the_keys(tmp_path: Path) -> None:
    cb_path = save_encoder(CBResNet18Encoder(), tmp_path / "cb.pt")
    plain_path = save_encoder(ResNet18Encoder(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"unexpected keys \[context_blocks\.0\..*arch='cb_resnet18'"):
        initialise_encoder(ResNet18Encoder(), str(cb_path))
    with pytest.raises(ValueError, match=r"missing keys \[context_blocks\.0\."):
        build_classifier(init=str(plain_path), arch="cb_resnet18")
    assert isinstance(build_classifier(init=str(plain_path)).encoder, ResNet18Encoder)
