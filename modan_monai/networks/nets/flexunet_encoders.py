"""The project's encoders as MONAI ``FlexibleUNet`` backbones, and the segmentation U-Net built on them.

Every encoder the project pretrains is registered with MONAI's FlexibleUNet backbone registry
(``monai.networks.blocks.BaseEncoder`` + ``FLEXUNET_BACKBONE.register_class``), one name per architecture and
stem (:data:`FLEXUNET_BACKBONES`)::

    modan_resnet18_3x3      modan_resnet18_7x7          (ResNet18Encoder)
    modan_cb_resnet18_3x3   modan_cb_resnet18_7x7       (CBResNet18Encoder, MLVICX context bottlenecks)

so ``FlexibleUNet(in_channels=1, out_channels=3, backbone="modan_resnet18_3x3")`` builds a U-Net whose
``encoder`` submodule *is* the encoder (a subclass of it): ``unet.encoder.state_dict()`` has exactly the keys of an
encoder checkpoint (``conv1.*``, ``bn1.*``, ``layer1.*`` ...), and a pretrained encoder loads strictly with
:func:`modan_monai.networks.load_encoder_state` or :func:`modan_monai.networks.initialise_encoder`.

Stride-1 stem. MONAI's ``UNetDecoder`` upsamples the deepest of its ``n`` encoder maps ``n`` times by 2 (the last
time without a skip), so the output has the input size only when the deepest map has stride ``2**n``:

- ``7x7`` stem (stride 2 + max-pool): maps at strides 2, 4, 8, 16, 32 -> the encoder returns all five
  ``[stem, layer1, layer2, layer3, layer4]`` (like MONAI's own ``resnet18`` backbone);
- ``3x3`` stem (stride 1 + max-pool): maps at strides 1, 2, 4, 8, 16 -> the encoder returns the four maps
  ``[layer1, layer2, layer3, layer4]`` (strides 2 ... 16); the decoder's last block upsamples stride 2 to the
  input size without a skip, exactly as it does for the 7x7 stem. The full-resolution stem map (one 3x3
  convolution of the image) is not a skip: with it, ``FlexibleUNet`` would output twice the input size.

In both cases the U-Net's output has the input's spatial size (sides divisible by 16 for the 3x3 stem, by 32 for
the 7x7 stem; other sizes are padded inside the decoder with ``is_pad=True``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE, FlexibleUNet
from torch import nn

from .cb_resnet_encoder import CBResNet18Encoder
from .resnet_encoder import STEMS, ResNet18Encoder

__all__ = [
    "FLEXUNET_BACKBONES",
    "FlexUNetCBResNet18Encoder",
    "FlexUNetResNet18Encoder",
    "SegmentationUNet",
    "flexunet_backbone",
]

#: channels of ``[stem, layer1, layer2, layer3, layer4]`` of both ResNet-18 encoders
_CHANNELS: tuple[int, ...] = (64, 64, 128, 256, 512)


def flexunet_backbone(arch: str = "resnet18", stem: str = "3x3") -> str:
    """The registered FlexibleUNet backbone name of an encoder architecture and stem.

    Args:
        arch: ``"resnet18"`` or ``"cb_resnet18"`` (the ``arch`` recorded in encoder checkpoints).
        stem: ``"3x3"`` or ``"7x7"``.

    Returns:
        e.g. ``"modan_resnet18_3x3"``.

    Raises:
        ValueError: naming the known names, when no such backbone is registered.
    """
    name = f"modan_{arch}_{stem}"
    if name not in FLEXUNET_BACKBONES:
        raise ValueError(
            f"no FlexibleUNet backbone for arch={arch!r}, stem={stem!r}; registered: {sorted(FLEXUNET_BACKBONES)}."
        )
    return name


class _FlexUNetFeatures:
    """Mixin giving a ResNet-18-style encoder the ``BaseEncoder`` class API and a feature-list ``forward``."""

    arch: str = ""
    stem: str

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """Registry names, one per stem: ``modan_<arch>_3x3``, ``modan_<arch>_7x7``."""
        return [f"modan_{cls.arch}_{stem}" for stem in STEMS]

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """Constructor arguments per registry name (FlexibleUNet overrides spatial_dims/in_channels/pretrained)."""
        return [{"spatial_dims": 2, "in_channels": 1, "pretrained": False, "stem": stem} for stem in STEMS]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of the returned maps: 3x3 stem ``(64, 128, 256, 512)``, 7x7 stem ``(64, 64, 128, 256, 512)``."""
        return [_CHANNELS[1:] if STEMS[stem][1] == 1 else _CHANNELS for stem in STEMS]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Number of returned maps: 4 for the stride-1 3x3 stem, 5 for the stride-2 7x7 stem."""
        return [len(c) for c in cls.num_channels_per_output()]

    def _unet_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.forward_features(x)  # type: ignore[attr-defined]
        return features[1:] if STEMS[self.stem][1] == 1 else features


def _refuse_pretrained(pretrained: bool, cls: str) -> None:
    if pretrained:
        raise ValueError(
            f"{cls}: pretrained=True is not supported (nothing is downloaded); build with pretrained=False and load "
            "an encoder checkpoint with modan_monai.networks.initialise_encoder(unet.encoder, path)."
        )


class FlexUNetResNet18Encoder(_FlexUNetFeatures, ResNet18Encoder, BaseEncoder):
    """:class:`~modan_monai.networks.nets.ResNet18Encoder` as a FlexibleUNet backbone (``modan_resnet18_<stem>``).

    Same parameters and state-dict keys as ``ResNet18Encoder`` (so encoder checkpoints load strictly); only
    ``forward`` differs: it returns the feature maps the U-Net decoder consumes (see the module docstring).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        pretrained: must be False (FlexibleUNet passes it); load weights with ``initialise_encoder``.
        stem: ``"3x3"`` (stride 1) or ``"7x7"`` (stride 2).
        act: activation of the encoder (MONAI factory name or ``(name, kwargs)``).
        norm: normalisation of the encoder.

    Shapes:
        ``(B, in_channels, H, W)`` -> 3x3 stem: ``[(B, 64, H/2, W/2), (B, 128, H/4, W/4), (B, 256, H/8, W/8),
        (B, 512, H/16, W/16)]``; 7x7 stem: ``[(B, 64, H/2, W/2), (B, 64, H/4, W/4), ..., (B, 512, H/32, W/32)]``.

    Raises:
        ValueError: when ``pretrained`` is True or the stem is unknown.

    Example:
        >>> unet = FlexibleUNet(in_channels=1, out_channels=2, backbone="modan_resnet18_3x3")
        >>> unet(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
        >>> sorted(unet.encoder.state_dict()) == sorted(ResNet18Encoder().state_dict())
        True
    """

    arch = "resnet18"

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        pretrained: bool = False,
        stem: str = "3x3",
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        _refuse_pretrained(pretrained, type(self).__name__)
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, stem=stem, act=act, norm=norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """Feature maps for the U-Net decoder (4 for the 3x3 stem, 5 for the 7x7 stem; see the class docstring)."""
        return self._unet_features(x)


class FlexUNetCBResNet18Encoder(_FlexUNetFeatures, CBResNet18Encoder, BaseEncoder):
    """``CBResNet18Encoder`` (MLVICX, Singh et al. 2024) as a FlexibleUNet backbone (``modan_cb_resnet18_<stem>``).

    Same parameters and state-dict keys as ``CBResNet18Encoder``; ``forward`` returns the context-refined maps the
    U-Net decoder consumes (the same strides and channels as :class:`FlexUNetResNet18Encoder`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        pretrained: must be False; load weights with ``initialise_encoder``.
        stem: ``"3x3"`` or ``"7x7"``.
        encoder_kwargs: further ``CBResNet18Encoder`` arguments (``reduction``, ``channel_gate``, ``act``,
            ``norm``).

    Raises:
        ValueError: when ``pretrained`` is True or an argument is refused by ``CBResNet18Encoder``.

    Example:
        >>> unet = FlexibleUNet(in_channels=1, out_channels=2, backbone="modan_cb_resnet18_7x7")
        >>> unet(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    arch = "cb_resnet18"

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        pretrained: bool = False,
        stem: str = "3x3",
        **encoder_kwargs: Any,
    ) -> None:
        _refuse_pretrained(pretrained, type(self).__name__)
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, stem=stem, **encoder_kwargs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """Refined feature maps for the U-Net decoder (4 for the 3x3 stem, 5 for the 7x7 stem)."""
        return self._unet_features(x)


_ENCODER_CLASSES: dict[str, type[nn.Module]] = {
    "resnet18": FlexUNetResNet18Encoder,
    "cb_resnet18": FlexUNetCBResNet18Encoder,
}
for _cls in _ENCODER_CLASSES.values():
    FLEXUNET_BACKBONE.register_class(_cls)

#: the registered backbone names -> (arch, stem)
FLEXUNET_BACKBONES: dict[str, tuple[str, str]] = {
    f"modan_{arch}_{stem}": (arch, stem) for arch in _ENCODER_CLASSES for stem in STEMS
}


class SegmentationUNet(FlexibleUNet):
    """MONAI ``FlexibleUNet`` on a project encoder, optionally initialised from a checkpoint and frozen.

    Downstream segmentation of the pretraining papers (MLVICX, Adam-v2: "U-Net with the pretrained encoder,
    frozen or fine-tuned"). The encoder is the registered backbone ``modan_<arch>_<stem>``; ``init`` is passed
    to :func:`modan_monai.networks.initialise_encoder` (``"scratch"``, an encoder checkpoint ``encoder.pt``, a
    pretraining training checkpoint, or ``"imagenet:<file>"``), which loads strictly and names the missing,
    unexpected and shape-mismatched keys of a checkpoint made for another backbone.

    With ``freeze_encoder=True`` the encoder's parameters get ``requires_grad=False`` and it stays in eval mode
    (BatchNorm statistics fixed), only the decoder and the head are trained.

    Args:
        in_channels: image channels.
        out_channels: one logit channel per structure (multi-label, sigmoid) or per class.
        arch: ``"resnet18"`` or ``"cb_resnet18"``.
        stem: ``"3x3"`` or ``"7x7"``; must match the checkpoint's.
        init: encoder initialisation (see above).
        freeze_encoder: freeze the encoder.
        spatial_dims: 2 or 3.
        encoder_kwargs: further encoder arguments (``act``, ``norm``; ``reduction``, ``channel_gate`` for
            ``cb_resnet18``), when the checkpoint was trained with non-default ones.
        decoder_channels: channels of the decoder blocks (truncated to the number of encoder maps).
        flexunet_kwargs: other ``FlexibleUNet`` arguments (``norm``, ``act``, ``dropout``, ``upsample`` ...).

    Shapes:
        ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)`` logits.

    Raises:
        ValueError: unknown arch/stem, or a checkpoint that does not fit the encoder (naming the keys).
        FileNotFoundError: when the checkpoint does not exist.

    Example:
        >>> net = SegmentationUNet(in_channels=1, out_channels=3, arch="resnet18", stem="3x3", freeze_encoder=True)
        >>> net(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 3, 64, 64])
        >>> net.train().encoder.training
        False
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        arch: str = "resnet18",
        stem: str = "3x3",
        init: str = "scratch",
        freeze_encoder: bool = False,
        spatial_dims: int = 2,
        encoder_kwargs: Mapping[str, Any] | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        **flexunet_kwargs: Any,
    ) -> None:
        backbone = flexunet_backbone(arch, stem)
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            backbone=backbone,
            pretrained=False,
            decoder_channels=tuple(decoder_channels),
            spatial_dims=spatial_dims,
            **flexunet_kwargs,
        )
        if encoder_kwargs:
            self.encoder = _ENCODER_CLASSES[arch](
                spatial_dims=spatial_dims, in_channels=in_channels, stem=stem, **dict(encoder_kwargs)
            )
        from modan_monai.networks.init import initialise_encoder  # networks/__init__ imports this module

        self.init_report = initialise_encoder(self.encoder, init)
        self.arch, self.stem = arch, stem
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> SegmentationUNet:
        """Set training mode; a frozen encoder is kept in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self
