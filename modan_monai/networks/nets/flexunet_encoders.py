"""The registered encoders as MONAI ``FlexibleUNet`` backbones, and the segmentation U-Net built on them.

Every architecture of the encoder registry (:mod:`modan_monai.networks.registry`) that declares its feature maps
gets one FlexibleUNet backbone class, derived here from the encoder class and registered with MONAI's backbone
registry (``monai.networks.blocks.BaseEncoder`` + ``FLEXUNET_BACKBONE.register_class``), one name per variant
(:data:`FLEXUNET_BACKBONES`). The built-in architectures give::

    modan_resnet18_3x3      modan_resnet18_7x7          (ResNet18Encoder)
    modan_cb_resnet18_3x3   modan_cb_resnet18_7x7       (CBResNet18Encoder, MLVICX context bottlenecks)

so ``FlexibleUNet(in_channels=1, out_channels=3, backbone="modan_resnet18_3x3")`` builds a U-Net whose
``encoder`` submodule *is* the encoder (a subclass of it): ``unet.encoder.state_dict()`` has exactly the keys of an
encoder checkpoint (``conv1.*``, ``bn1.*``, ``layer1.*`` ...), and a pretrained encoder loads strictly with
:func:`modan_monai.networks.load_encoder_state` or :func:`modan_monai.networks.initialise_encoder`.

Which maps feed the decoder. MONAI's ``UNetDecoder`` upsamples the deepest of its ``n`` encoder maps ``n`` times
by 2 (the last time without a skip), so the output has the input size only when the maps have strides
``2, 4, ..., 2**n``. A variant declares the strides of its ``forward_features`` maps; leading stride-1 maps are
not passed to the decoder:

- ``7x7`` stem (stride 2 + max-pool): maps at strides 2, 4, 8, 16, 32 -> the backbone returns all five
  ``[stem, layer1, layer2, layer3, layer4]`` (like MONAI's own ``resnet18`` backbone);
- ``3x3`` stem (stride 1 + max-pool): maps at strides 1, 2, 4, 8, 16 -> the backbone returns the four maps
  ``[layer1, layer2, layer3, layer4]`` (strides 2 ... 16); the decoder's last block upsamples stride 2 to the
  input size without a skip, exactly as it does for the 7x7 stem. The full-resolution stem map (one 3x3
  convolution of the image) is not a skip: with it, ``FlexibleUNet`` would output twice the input size.

In both cases the U-Net's output has the input's spatial size (sides divisible by 16 for the 3x3 stem, by 32 for
the 7x7 stem; other sizes are padded inside the decoder with ``is_pad=True``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE, FlexibleUNet
from torch import nn

__all__ = [
    "FLEXUNET_BACKBONES",
    "SegmentationUNet",
    "check_unet_image_size",
    "unet_size_multiple",
    "UNetVariant",
    "flexunet_backbone",
    "register_flexunet_backbones",
    "unregister_flexunet_backbones",
]

#: maximum number of encoder maps ``FlexibleUNet`` accepts
_MAX_UNET_MAPS = 5

#: registered backbone name (``modan_<arch>_<variant>``) -> ``(arch, variant)``; kept in step with the encoder
#: registry by :func:`register_flexunet_backbones` / :func:`unregister_flexunet_backbones`
FLEXUNET_BACKBONES: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True)
class UNetVariant:
    """One FlexibleUNet backbone of an encoder architecture.

    Attributes:
        kwargs: constructor arguments that select the variant (e.g. ``{"stem": "3x3"}``); an encoder built with
            these values (and any others) is this variant.
        strides: stride of each ``forward_features`` map relative to the input (e.g. ``(1, 2, 4, 8, 16)``).
    """

    kwargs: Mapping[str, Any] = field(default_factory=dict)
    strides: tuple[int, ...] = ()

    def unet_maps(self, where: str) -> int:
        """Number of leading stride-1 maps the decoder does not take; checks that the rest halve in size.

        Args:
            where: names the variant in errors.

        Raises:
            ValueError: when the maps after the stride-1 ones are not at strides ``2, 4, ..., 2**n`` with
                ``2 <= n <= 5``.
        """
        skip = sum(1 for s in self.strides if s == 1)
        kept = tuple(self.strides[skip:])
        wanted = tuple(2 ** (i + 1) for i in range(len(kept)))
        if kept != wanted or not 2 <= len(kept) <= _MAX_UNET_MAPS:
            raise ValueError(
                f"{where}: feature map strides {tuple(self.strides)} do not fit FlexibleUNet: after the stride-1 maps "
                f"they must be 2, 4, ..., 2**n with 2 <= n <= {_MAX_UNET_MAPS}."
            )
        return skip


def flexunet_backbone(arch: str = "resnet18", variant: str = "3x3") -> str:
    """The registered FlexibleUNet backbone name of an encoder architecture and variant.

    Args:
        arch: a registered architecture (the ``arch`` recorded in encoder checkpoints).
        variant: the variant name; ``"3x3"`` or ``"7x7"`` (the stem) for the ResNet-18 encoders.

    Returns:
        e.g. ``"modan_resnet18_3x3"``.

    Raises:
        ValueError: naming the known names, when no such backbone is registered.
    """
    name = f"modan_{arch}_{variant}"
    if name not in FLEXUNET_BACKBONES:
        raise ValueError(
            f"no FlexibleUNet backbone for arch={arch!r}, variant={variant!r}; registered: "
            f"{sorted(FLEXUNET_BACKBONES)}."
        )
    return name


class _FlexUNetFeatures:
    """Mixin giving a registered encoder the ``BaseEncoder`` class API and a feature-list ``forward``.

    The derived class sets ``arch``, ``feature_channels`` and ``variants`` (see
    :func:`register_flexunet_backbones`).
    """

    arch: str = ""
    feature_channels: tuple[int, ...] = ()
    variants: Mapping[str, UNetVariant] = {}

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, pretrained: bool = False, **kwargs: Any) -> None:
        if pretrained:
            raise ValueError(
                f"{type(self).__name__}: pretrained=True is not supported (nothing is downloaded); build with "
                "pretrained=False and load an encoder checkpoint with "
                "modan_monai.networks.registry.build_encoder(path, unet_backbone=True) or "
                "modan_monai.networks.initialise_encoder(unet.encoder, path)."
            )
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, **kwargs)  # type: ignore[call-arg]
        own = self.encoder_kwargs  # type: ignore[attr-defined]
        matches = [n for n, v in self.variants.items() if all(own.get(k) == x for k, x in v.kwargs.items())]
        if not matches:
            raise ValueError(
                f"{type(self).__name__}: no FlexibleUNet variant of {self.arch!r} matches "
                f"{ {k: own.get(k) for v in self.variants.values() for k in v.kwargs} }; variants: "
                f"{ {n: dict(v.kwargs) for n, v in self.variants.items()} }."
            )
        self.variant = matches[0]
        self.backbone_name = f"modan_{self.arch}_{self.variant}"
        self._skip_maps = self.variants[self.variant].unet_maps(self.backbone_name)

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """Registry names, one per variant: ``modan_<arch>_<variant>``."""
        return [f"modan_{cls.arch}_{name}" for name in cls.variants]

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """Constructor arguments per registry name (FlexibleUNet overrides spatial_dims/in_channels/pretrained)."""
        return [
            {"spatial_dims": 2, "in_channels": 1, "pretrained": False, **dict(v.kwargs)} for v in cls.variants.values()
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of the returned maps per variant (3x3 stem: 64, 128, 256, 512; 7x7: 64, 64, 128, 256, 512)."""
        return [
            tuple(cls.feature_channels[v.unet_maps(f"modan_{cls.arch}_{n}") :]) for n, v in cls.variants.items()
        ]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Number of returned maps per variant (4 for the stride-1 3x3 stem, 5 for the stride-2 7x7 stem)."""
        return [len(c) for c in cls.num_channels_per_output()]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps for the U-Net decoder: ``forward_features(x)`` without its leading stride-1 maps.

        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            3x3 stem: ``[(B, 64, H/2, W/2), (B, 128, H/4, W/4), (B, 256, H/8, W/8), (B, 512, H/16, W/16)]``;
            7x7 stem: ``[(B, 64, H/2, W/2), (B, 64, H/4, W/4), ..., (B, 512, H/32, W/32)]``.
        """
        return self.forward_features(x)[self._skip_maps :]  # type: ignore[attr-defined]


def register_flexunet_backbones(
    arch: str,
    encoder_class: type[nn.Module],
    feature_channels: Sequence[int],
    variants: Mapping[str, UNetVariant],
) -> type[BaseEncoder]:
    """Derive the FlexibleUNet backbone class of an encoder and register one backbone name per variant.

    Called by :func:`modan_monai.networks.registry.register_encoder`; use that.

    Args:
        arch: architecture name (``modan_<arch>_<variant>`` backbone names).
        encoder_class: the encoder; needs ``forward_features`` (a list of maps) and ``encoder_kwargs``.
        feature_channels: channels of each ``forward_features`` map.
        variants: variant name -> :class:`UNetVariant` (its strides have one entry per map).

    Returns:
        The backbone class: a subclass of ``encoder_class`` (same parameters and state-dict keys) whose ``forward``
        returns the maps the decoder consumes and whose constructor takes FlexibleUNet's ``pretrained``.

    Raises:
        ValueError: no variant, strides that do not match ``feature_channels`` or do not fit the decoder, or a
            backbone name that is already registered.
    """
    channels = tuple(int(c) for c in feature_channels)
    if not variants:
        raise ValueError(f"encoder {arch!r}: a FlexibleUNet backbone needs at least one variant.")
    for name, variant in variants.items():
        where = f"FlexibleUNet backbone modan_{arch}_{name}"
        if len(variant.strides) != len(channels):
            raise ValueError(
                f"{where}: {len(variant.strides)} strides {tuple(variant.strides)} for {len(channels)} feature maps "
                f"{channels}."
            )
        variant.unet_maps(where)
        if f"modan_{arch}_{name}" in FLEXUNET_BACKBONE.register_dict:
            raise ValueError(f"{where} is already registered with MONAI's FLEXUNET_BACKBONE.")
    namespace = {
        "arch": arch,
        "feature_channels": channels,
        "variants": dict(variants),
        "__module__": __name__,
        "__doc__": (
            f"``{encoder_class.__name__}`` as a FlexibleUNet backbone (``modan_{arch}_<variant>``, variants "
            f"{sorted(variants)}): same parameters and state-dict keys, ``forward`` returns the decoder's maps."
        ),
    }
    backbone = type(f"FlexUNet{encoder_class.__name__}", (_FlexUNetFeatures, encoder_class, BaseEncoder), namespace)
    FLEXUNET_BACKBONE.register_class(backbone)
    FLEXUNET_BACKBONES.update({f"modan_{arch}_{name}": (arch, name) for name in variants})
    return backbone


def unregister_flexunet_backbones(arch: str) -> None:
    """Remove the FlexibleUNet backbones of ``arch`` from MONAI's registry and :data:`FLEXUNET_BACKBONES`.

    Args:
        arch: architecture name; nothing happens when it has no backbones.
    """
    for name in [n for n, (a, _) in FLEXUNET_BACKBONES.items() if a == arch]:
        FLEXUNET_BACKBONE.register_dict.pop(name, None)
        del FLEXUNET_BACKBONES[name]


def unet_size_multiple(backbone: nn.Module) -> int:
    """The number every spatial size of a U-Net input must be a multiple of: the backbone's largest stride.

    Args:
        backbone: a FlexibleUNet backbone built by the registry (``build_encoder(..., unet_backbone=True)``).

    Returns:
        16 for the ResNet-18 3x3 stem, 32 for the 7x7 stem.
    """
    return int(max(backbone.variants[backbone.variant].strides))


def check_unet_image_size(backbone: nn.Module, sizes: int | Sequence[int], what: str = "image_size") -> None:
    """Refuse image sizes a U-Net on ``backbone`` cannot take (``Sizes of tensors must match`` in the decoder).

    The decoder doubles the size of its input at each level and joins it to the encoder map of that level, so
    each spatial size must be a multiple of the encoder's downsampling, :func:`unet_size_multiple`.

    Args:
        backbone: a FlexibleUNet backbone built by the registry.
        sizes: the spatial size (an int for every dimension) or the sizes.
        what: names the sizes in the error.

    Raises:
        ValueError: naming the sizes, the multiple, the nearest sizes that fit and the ``image_size`` option.
    """
    sizes = [int(sizes)] if isinstance(sizes, int) else [int(s) for s in sizes]
    m = unet_size_multiple(backbone)
    wrong = [s for s in sizes if s % m or s < m]
    if not wrong:
        return
    lower, upper = max(m, wrong[0] // m * m), (wrong[0] // m + 1) * m
    nearest = f"{lower} or {upper}" if lower < wrong[0] else f"{upper}"
    shown = tuple(sizes) if len(set(sizes)) > 1 else sizes[0]
    raise ValueError(
        f"{what} {shown} does not fit the segmentation U-Net on {backbone.backbone_name}: its encoder downsamples "
        f"by {m}, so every image size must be a multiple of {m} (e.g. {nearest}); set image_size (bundle config "
        "id 'image_size', run_segmentation.py --image-size) to one."
    )


class SegmentationUNet(FlexibleUNet):
    """MONAI ``FlexibleUNet`` on a registered encoder, initialised by the encoder registry and optionally frozen.

    Downstream segmentation of the pretraining papers (MLVICX, Adam-v2: "U-Net with the pretrained encoder,
    frozen or fine-tuned"). The encoder is built by :func:`modan_monai.networks.registry.build_encoder` from
    ``init`` (``"scratch"``, an encoder checkpoint ``encoder.pt``, a training checkpoint of any pretraining method
    or ``"imagenet:<file>"``) as the FlexibleUNet backbone of its architecture: the architecture and its arguments
    are read from the checkpoint unless ``arch`` / ``stem`` / ``encoder_kwargs`` say otherwise, and the weights
    load strictly (a checkpoint made for another backbone raises a ``ValueError`` naming the missing, unexpected
    and shape-mismatched keys).

    With ``freeze_encoder=True`` the encoder's parameters get ``requires_grad=False`` and it stays in eval mode
    (BatchNorm statistics fixed), only the decoder and the head are trained.

    Args:
        in_channels: image channels.
        out_channels: one logit channel per structure (multi-label, sigmoid) or per class.
        arch: a registered architecture (``"resnet18"``, ``"cb_resnet18"``, ...); ``None``: the checkpoint's
            (``"resnet18"`` for ``"scratch"`` and ImageNet weights).
        stem: ``"3x3"`` or ``"7x7"``; ``None``: the checkpoint's (``"3x3"`` otherwise).
        init: encoder initialisation (see above).
        freeze_encoder: freeze the encoder.
        spatial_dims: 2 or 3.
        encoder_kwargs: further encoder arguments (``act``, ``norm``; ``reduction``, ``channel_gate`` for
            ``cb_resnet18``) overriding the checkpoint's.
        decoder_channels: channels of the decoder blocks (truncated to the number of encoder maps).
        image_size: the spatial size of the images the network will get (an int or one per dimension), checked
            against :attr:`size_multiple` here; ``None``: checked on each input only.
        flexunet_kwargs: other ``FlexibleUNet`` arguments (``norm``, ``act``, ``dropout``, ``upsample`` ...).

    Attributes:
        init_report: what the registry loaded (``source``, ``arch``, ``encoder_kwargs``, ``loaded``,
            ``reinitialised``).
        size_multiple: every spatial size of an input must be a multiple of it, the encoder's largest
            downsampling (16 for the 3x3 stem, 32 for the 7x7 stem): the decoder doubles the size at each level
            and joins it to the skip map of the same level.

    Shapes:
        ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)`` logits.

    Raises:
        ValueError: unknown arch/stem, a checkpoint that does not fit the encoder (naming the keys), or an
            ``image_size`` (here or of an input in ``forward``) that is not a multiple of :attr:`size_multiple`
            (naming the size, the multiple and the ``image_size`` option).
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
        arch: str | None = None,
        stem: str | None = None,
        init: str = "scratch",
        freeze_encoder: bool = False,
        spatial_dims: int = 2,
        encoder_kwargs: Mapping[str, Any] | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        image_size: int | Sequence[int] | None = None,
        **flexunet_kwargs: Any,
    ) -> None:
        from modan_monai.networks.registry import build_encoder  # the registry imports this module

        encoder = build_encoder(
            init,
            arch,
            unet_backbone=True,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            stem=stem,
            **dict(encoder_kwargs or {}),
        )
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            backbone=encoder.backbone_name,
            pretrained=False,
            decoder_channels=tuple(decoder_channels),
            spatial_dims=spatial_dims,
            **flexunet_kwargs,
        )
        self.encoder = encoder  # replaces FlexibleUNet's fresh encoder of the same backbone by the initialised one
        self.init_report = encoder.init_report
        self.arch, self.stem = encoder.init_report["arch"], getattr(encoder, "stem", None)
        self.size_multiple = unet_size_multiple(encoder)
        if image_size is not None:
            self.check_image_size(image_size)
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def check_image_size(self, sizes: Sequence[int], what: str = "image_size") -> None:
        """Refuse spatial sizes that are not multiples of :attr:`size_multiple` (:func:`check_unet_image_size`)."""
        check_unet_image_size(self.encoder, sizes, what)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Segmentation logits.

        Args:
            inputs: ``(B, in_channels, H, W)``, ``H`` and ``W`` multiples of :attr:`size_multiple`.

        Returns:
            ``(B, out_channels, H, W)`` logits.

        Raises:
            ValueError: a spatial size that is not a multiple of :attr:`size_multiple`.
        """
        self.check_image_size(inputs.shape[2:], what="input of spatial size")
        return super().forward(inputs)

    def train(self, mode: bool = True) -> SegmentationUNet:
        """Set training mode; a frozen encoder is kept in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self
