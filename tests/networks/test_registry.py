"""The encoder registry: every spec kind, architecture from the checkpoint, overrides, errors, custom encoders."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.layers.factories import Conv
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

from modan_monai.networks import (
    FLEXUNET_BACKBONES,
    CBResNet18Encoder,
    ClassificationModel,
    DamagedCheckpointError,
    ContrastiveModel,
    MLVICXModel,
    ProjectionHead,
    ResNet18Encoder,
    SegmentationUNet,
    UNetVariant,
    build_classifier,
    build_encoder,
    encoder_arch,
    encoder_architectures,
    load_encoder,
    register_encoder,
    resolve_encoder,
    save_encoder,
    unregister_encoder,
)

from network_data import torchvision_resnet18_state


def distinct(encoder: nn.Module, seed: int = 1) -> nn.Module:
    """Make an encoder's weights and BatchNorm statistics differ from any fresh initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in encoder.state_dict().values():
            if value.is_floating_point():
                value.add_(torch.rand(value.shape, generator=gen) * 0.01 + 0.01)
    return encoder


def assert_same_weights(built: nn.Module, source: nn.Module) -> None:
    got, expected = built.state_dict(), source.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


class TinyEncoder(nn.Module):
    """Two stride-2 convolutions: the smallest encoder a plugin could register (global pooled output)."""

    out_features: int = 16

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, width: int = 8) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.down1 = nn.Sequential(conv(in_channels, width, 3, stride=2, padding=1), nn.ReLU())
        self.down2 = nn.Sequential(conv(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.spatial_dims, self.in_channels, self.width = spatial_dims, in_channels, width
        self.out_features = 2 * width

    @property
    def encoder_kwargs(self) -> dict:
        return {"spatial_dims": self.spatial_dims, "in_channels": self.in_channels, "width": self.width}

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        first = self.down1(x)
        return [first, self.down2(first)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[-1].mean(dim=tuple(range(2, x.ndim)))


@pytest.fixture
def tiny_arch() -> Iterator[str]:
    register_encoder(
        "tiny_test", TinyEncoder, {"width": 4}, feature_channels=(4, 8),
        unet_variants={"w4": UNetVariant({"width": 4}, (2, 4))}, description="test encoder",
    )
    yield "tiny_test"
    unregister_encoder("tiny_test")


def test_the_table_holds_the_built_in_encoders_and_their_backbones() -> None:
    table = encoder_architectures()
    assert list(table)[:2] == ["resnet18", "cb_resnet18"]
    assert table["resnet18"].encoder_class is ResNet18Encoder
    assert table["cb_resnet18"].encoder_class is CBResNet18Encoder
    assert table["resnet18"].defaults["stem"] == "3x3" and table["cb_resnet18"].defaults["reduction"] == 2
    assert table["cb_resnet18"].backbones == ["modan_cb_resnet18_3x3", "modan_cb_resnet18_7x7"]
    for entry in table.values():  # the FlexibleUNet backbones are derived from the table rows
        assert issubclass(entry.flexunet_class, entry.encoder_class)
        assert set(entry.backbones) <= set(FLEXUNET_BACKBONES) and set(entry.backbones) <= set(
            FLEXUNET_BACKBONE.register_dict
        )
    assert encoder_arch(SegmentationUNet(arch="cb_resnet18").encoder) == "cb_resnet18"


def test_scratch_and_kwargs() -> None:
    encoder = build_encoder("scratch", stem="7x7")
    assert type(encoder) is ResNet18Encoder and encoder.stem == "7x7"
    report = encoder.init_report
    assert report["arch"] == "resnet18" and report["source"] == "scratch" and report["loaded"] == []
    assert report["reinitialised"] == list(encoder.state_dict()) and report["encoder_kwargs"]["stem"] == "7x7"
    cb = build_encoder("scratch", "cb_resnet18", reduction=4, stem=None)  # None: not given
    assert type(cb) is CBResNet18Encoder and cb.reduction == 4 and cb.stem == "3x3"


@pytest.mark.parametrize("encoder_class, kwargs", [
    (ResNet18Encoder, {"stem": "7x7"}),
    (CBResNet18Encoder, {"stem": "7x7", "reduction": 4, "channel_gate": "conv"}),
])
def test_encoder_checkpoint_brings_arch_and_kwargs(tmp_path: Path, encoder_class: type, kwargs: dict) -> None:
    source = distinct(encoder_class(**kwargs))
    path = save_encoder(source, tmp_path / "encoder.pt", method="test")
    built = build_encoder(str(path))
    assert type(built) is encoder_class and {k: built.encoder_kwargs[k] for k in kwargs} == kwargs
    assert_same_weights(built, source)
    assert built.init_report["reinitialised"] == [] and built.init_report["source"] == str(path)
    assert type(load_encoder(path)) is encoder_class  # load_encoder is the registry restricted to encoder.pt


@pytest.mark.parametrize("method", ["contrastive", "mlvicx", "supervised"])
@pytest.mark.parametrize("ddp", [False, True])
def test_training_checkpoint_of_every_method_is_recognised(tmp_path: Path, method: str, ddp: bool) -> None:
    if method == "mlvicx":
        encoder = distinct(CBResNet18Encoder(stem="7x7"))
        model: nn.Module = MLVICXModel(encoder, aggregation="sum", expander_features=16)
    elif method == "contrastive":
        encoder = distinct(ResNet18Encoder(stem="7x7"))
        model = ContrastiveModel(encoder, ProjectionHead(512, 32, 16))
    else:
        encoder = distinct(ResNet18Encoder())
        model = ClassificationModel(encoder, num_classes=5)
    state = model.state_dict()
    if ddp:
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "checkpoint_epoch=1.pt"
    torch.save({"network": state, "epoch": 1}, path)
    assert resolve_encoder(str(path))[1]["stem"] == encoder.stem  # the stem is recognised from the shapes
    built = build_encoder(str(path))
    assert type(built) is type(encoder) and built.stem == encoder.stem
    assert_same_weights(built, encoder)
    assert built.init_report["loaded"] == list(encoder.state_dict())


def test_overrides_and_mismatches_name_the_keys(tmp_path: Path) -> None:
    cb = save_encoder(CBResNet18Encoder(), tmp_path / "cb.pt")
    plain7 = save_encoder(ResNet18Encoder(stem="7x7"), tmp_path / "plain7.pt")
    with pytest.raises(ValueError, match=r"cb\.pt.*unexpected keys \[context_blocks\.0\..*arch='cb_resnet18'"):
        build_encoder(str(cb), arch="resnet18")
    with pytest.raises(ValueError, match=r"plain7\.pt.*missing keys \[context_blocks\.0\."):
        build_encoder(str(plain7), arch="cb_resnet18")
    # another architecture keeps the checkpoint's arguments it takes (the stem here)
    assert resolve_encoder(str(plain7), arch="cb_resnet18")[1]["stem"] == "7x7"
    with pytest.raises(ValueError, match=r"shape-mismatched keys \[conv1\.weight \(checkpoint \(64, 1, 7, 7\).*'7x7'"):
        build_encoder(str(plain7), stem="3x3")
    with pytest.raises(ValueError, match=r"unexpected keys \[context_blocks") as err:  # the classifier as well
        build_classifier(str(cb), arch="resnet18")
    assert "cb.pt" in str(err.value)
    # a training checkpoint of no registered architecture: the default one, and the keys are named
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    torch.save({"network": mlp.state_dict()}, tmp_path / "mlp.pt")
    with pytest.raises(ValueError, match=r"mlp\.pt.*missing keys \[bn1\.bias.*unexpected keys \[0\.bias"):
        build_encoder(str(tmp_path / "mlp.pt"))


def test_bad_specs_and_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        build_encoder(str(tmp_path / "nowhere.pt"))
    with pytest.raises(ValueError, match=r"unknown encoder arch 'convnext_b'; registered: \['cb_resnet18', 'resnet18'"):
        build_encoder("scratch", arch="convnext_b")
    with pytest.raises(ValueError, match=r"'resnet18' \(ResNet18Encoder\) takes no argument \['reduction'\]"):
        build_encoder("scratch", reduction=4)
    with pytest.raises(ValueError, match="init must be"):
        build_encoder("  ")
    checkpoint = torch.load(save_encoder(ResNet18Encoder(), tmp_path / "e.pt"), weights_only=True)
    torch.save({**checkpoint, "arch": "vit_b16"}, tmp_path / "vit.pt")
    with pytest.raises(ValueError, match=r"vit\.pt: unknown arch 'vit_b16', registered: .*register_encoder"):
        build_encoder(str(tmp_path / "vit.pt"))
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match=r"empty\.pt: no state dict found"):
        build_encoder(str(tmp_path / "empty.pt"))


def test_imagenet_mapping_is_unchanged(tmp_path: Path) -> None:
    state = torchvision_resnet18_state()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, path)
    seven = build_encoder(f"imagenet:{path}", stem="7x7")  # RGB conv1 summed over its input channels
    np.testing.assert_allclose(seven.conv1.weight.detach().numpy(), state["conv1.weight"].sum(1, keepdim=True).numpy(),
                               rtol=1e-6)
    assert seven.init_report["reinitialised"] == [] and "fc.weight" not in seven.init_report["loaded"]
    three = build_encoder(f"imagenet:{path}")  # default 3x3 stem: conv1 stays random
    assert three.init_report["reinitialised"] == ["conv1.weight"] and three.init_report["arch"] == "resnet18"
    cb = build_encoder(f"imagenet:{path}", arch="cb_resnet18", stem="7x7")  # context bottlenecks stay random
    random_keys = cb.init_report["reinitialised"]
    assert random_keys and all(k.startswith("context_blocks.") for k in random_keys)
    torch.testing.assert_close(cb.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])


@pytest.mark.parametrize("backbone", sorted(FLEXUNET_BACKBONES))
def test_flexunet_backbone_loads_the_checkpoint_strictly(tmp_path: Path, backbone: str) -> None:
    arch, variant = FLEXUNET_BACKBONES[backbone]
    source = distinct(encoder_architectures()[arch].encoder_class(stem=variant))
    path = save_encoder(source, tmp_path / "encoder.pt")
    net = SegmentationUNet(out_channels=2, init=str(path)).eval()  # arch and stem from the checkpoint
    assert isinstance(net.encoder, encoder_architectures()[arch].flexunet_class)
    assert net.encoder.backbone_name == backbone and net.arch == arch and net.init_report["reinitialised"] == []
    assert_same_weights(net.encoder, source)
    with torch.no_grad():
        assert net(torch.rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_segmentation_unet_from_an_mlvicx_training_checkpoint(tmp_path: Path) -> None:
    encoder = distinct(CBResNet18Encoder())
    torch.save({"network": MLVICXModel(encoder, aggregation="sum", expander_features=16).state_dict()},
               tmp_path / "checkpoint_epoch=2.pt")
    net = SegmentationUNet(out_channels=3, init=str(tmp_path / "checkpoint_epoch=2.pt"), freeze_encoder=True)
    assert net.arch == "cb_resnet18" and net.encoder.backbone_name == "modan_cb_resnet18_3x3"
    assert_same_weights(net.encoder, encoder)
    assert not net.train().encoder.training


def test_a_registered_custom_encoder_works_everywhere(tmp_path: Path, tiny_arch: str) -> None:
    assert "modan_tiny_test_w4" in FLEXUNET_BACKBONES and "modan_tiny_test_w4" in FLEXUNET_BACKBONE.register_dict
    scratch = build_encoder("scratch", arch=tiny_arch)
    assert type(scratch) is TinyEncoder and scratch.width == 4  # the registered default, not the class's 8
    source = distinct(TinyEncoder(width=4))
    path = save_encoder(source, tmp_path / "tiny.pt", method="test")
    assert torch.load(path, weights_only=True)["arch"] == tiny_arch
    assert_same_weights(build_encoder(str(path)), source)
    classifier = build_classifier(str(path), num_classes=3)
    assert classifier(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
    # a training checkpoint of the custom encoder is recognised among all registered architectures
    torch.save({"network": ContrastiveModel(source, ProjectionHead(8, 8, 4)).state_dict()}, tmp_path / "train.pt")
    assert resolve_encoder(str(tmp_path / "train.pt"))[0] == tiny_arch
    net = SegmentationUNet(out_channels=2, init=str(path)).eval()
    assert net.encoder.backbone_name == "modan_tiny_test_w4" and isinstance(net.encoder, TinyEncoder)
    assert_same_weights(net.encoder, source)
    with torch.no_grad():
        assert net(torch.rand(2, 1, 32, 32)).shape == (2, 2, 32, 32)
    plain = FlexibleUNet(in_channels=1, out_channels=1, backbone="modan_tiny_test_w4")  # MONAI's own builder
    assert plain(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match=r"'tiny_test' is already registered \(TinyEncoder\)"):
        register_encoder(tiny_arch, TinyEncoder)
    with pytest.raises(ValueError, match=r"TinyEncoder is already registered as 'tiny_test'"):
        register_encoder("tiny_again", TinyEncoder)


def test_unregister_removes_the_backbones(tiny_arch: str) -> None:
    unregister_encoder(tiny_arch)
    assert tiny_arch not in encoder_architectures() and "modan_tiny_test_w4" not in FLEXUNET_BACKBONES
    assert "modan_tiny_test_w4" not in FLEXUNET_BACKBONE.register_dict
    register_encoder(tiny_arch, TinyEncoder)  # for the fixture's teardown; no FlexibleUNet backbone this time
    with pytest.raises(ValueError, match="has no FlexibleUNet backbone"):
        build_encoder("scratch", tiny_arch, unet_backbone=True)


class _NoKwargs(nn.Module):
    out_features = 4


@pytest.mark.parametrize("args, kwargs, match", [
    (("Tiny", TinyEncoder), {}, "encoder name must match"),
    (("no_kwargs", _NoKwargs), {}, r"_NoKwargs has no \['encoder_kwargs'\]"),
    (("bad_default", TinyEncoder, {"depth": 3}), {}, r"takes no argument \['depth'\]"),
    (("half_unet", TinyEncoder), {"feature_channels": (8, 16)}, "needs both feature_channels and unet_variants"),
    (("bad_strides", TinyEncoder), {"feature_channels": (8, 16), "unet_variants": {"v": UNetVariant({}, (2, 8))}},
     r"modan_bad_strides_v: feature map strides \(2, 8\) do not fit FlexibleUNet"),
    (("few_strides", TinyEncoder), {"feature_channels": (8, 16), "unet_variants": {"v": UNetVariant({}, (2,))}},
     r"1 strides \(2,\) for 2 feature maps"),
])
def test_register_encoder_refuses_bad_entries(args: tuple, kwargs: dict, match: str) -> None:
    before = (encoder_architectures(), dict(FLEXUNET_BACKBONES))
    with pytest.raises(ValueError, match=match):
        register_encoder(*args, **kwargs)
    assert (encoder_architectures(), dict(FLEXUNET_BACKBONES)) == before


def _damage(kind: str, good: bytes) -> bytes:
    return {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "random": np.random.default_rng(0).bytes(300),
        "text": b"encoder weights here\n",
    }[kind]


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("empty", r"is empty \(0 bytes\): not a checkpoint"),
        ("truncated", r"is truncated \(\d+ bytes, a torch\.save zip archive without its end.*not a complete "),
        ("random", r"is corrupt or not a PyTorch checkpoint \(300 bytes, unreadable: UnpicklingError: Unsupported"),
        ("text", r"is corrupt or not a PyTorch checkpoint \(21 bytes, unreadable: "),
    ],
)
@pytest.mark.parametrize("imagenet", [False, True])
def test_a_damaged_init_file_is_named_as_damaged(tmp_path: Path, kind: str, said: str, imagenet: bool) -> None:
    good = save_encoder(ResNet18Encoder(), tmp_path / "good.pt").read_bytes()
    path = tmp_path / "damaged.pt"
    path.write_bytes(_damage(kind, good))
    with pytest.raises(DamagedCheckpointError, match=re.escape(str(path)) + " " + said) as err:
        build_encoder(f"imagenet:{path}" if imagenet else str(path))
    assert err.value.kind == ("corrupt" if kind in ("random", "text") else kind)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("kind", ["encoder", "training"])
def test_non_finite_init_weights_are_refused_naming_the_tensor(tmp_path: Path, value: float, kind: str) -> None:
    encoder = ResNet18Encoder()
    with torch.no_grad():
        encoder.layer2[0].conv1.weight[0, 0, 0, 0] = value
        encoder.layer4[1].bn2.weight[3] = value
    path = tmp_path / f"{kind}.pt"
    if kind == "encoder":
        save_encoder(encoder, path)
    else:
        torch.save({"network": {f"encoder.{k}": v for k, v in encoder.state_dict().items()}}, path)
    counts = "1 NaN and 0 Inf" if value != value else "0 NaN and 1 Inf"
    with pytest.raises(ValueError, match=rf"checkpoint {re.escape(str(path))} holds non-finite weights: "
                       rf"layer2\.0\.conv1\.weight \(128, 64, 3, 3\) has {counts} of 73728 values; 2 of \d+ tensors"):
        build_encoder(str(path))
