"""ResNet-18 encoder (MONAI ``ResNet``) with a configurable first convolution."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.layers.utils import get_act_layer
from monai.networks.nets import ResNet
from torch import nn

__all__ = ["ResNet18Encoder", "STEMS"]

#: stem name -> (first conv kernel size, first conv stride)
STEMS: dict[str, tuple[int, int]] = {"3x3": (3, 1), "7x7": (7, 2)}

_DEFAULT_ACT: tuple[str, dict[str, Any]] = ("relu", {"inplace": True})


class ResNet18Encoder(ResNet):
    """ResNet-18 feature extractor (no classification layer) built on :class:`monai.networks.nets.ResNet`.

    ``block="basic"``, ``layers=[2, 2, 2, 2]``, ``block_inplanes=[64, 128, 256, 512]``, max-pool kept,
    ``feed_forward=False``; downsampling shortcuts are 1x1 convolutions without bias, as in the standard
    (torchvision) ResNet-18. The first convolution is the only change:

    - ``stem="3x3"`` (default, methods.md): 3x3 kernel, stride 1 (small medical images).
    - ``stem="7x7"``: 7x7 kernel, stride 2 (the original ResNet stem used by the official MulSupCon code).

    Unlike MONAI's ``ResNet`` (which applies ``act``/``norm`` only to the stem and the default
    ReLU/BatchNorm inside the residual blocks), ``act`` and ``norm`` are used in every block here.

    The parameter names follow MONAI/torchvision (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so the
    state dict of an encoder is independent of the model that wraps it.

    Args:
        spatial_dims: number of spatial dimensions (2 for images, 3 for volumes).
        in_channels: number of input channels.
        stem: ``"3x3"`` or ``"7x7"``.
        act: activation, MONAI factory name or ``(name, kwargs)``.
        norm: normalisation, MONAI factory name or ``(name, kwargs)``.

    Shapes:
        - input: ``(B, in_channels, *spatial)``.
        - output of ``forward``: ``(B, 512)`` (global average pooled ``layer4``).

    Raises:
        ValueError: for an unknown ``stem``.

    Example:
        >>> encoder = ResNet18Encoder(spatial_dims=2, in_channels=1, stem="3x3")
        >>> encoder(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 512])
        >>> [f.shape[-1] for f in encoder.forward_features(torch.zeros(2, 1, 32, 32))]
        [32, 16, 8, 4, 2]
    """

    out_features: int = 512

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        stem: str = "3x3",
        act: str | tuple = _DEFAULT_ACT,
        norm: str | tuple = "batch",
    ) -> None:
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {sorted(STEMS)}, got {stem!r}.")
        kernel_size, stride = STEMS[stem]
        # read by _make_layer during ResNet.__init__, hence set before it (plain attribute, no Module state)
        self._block_norm = norm
        super().__init__(
            block="basic",
            layers=[2, 2, 2, 2],
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=kernel_size,
            conv1_t_stride=stride,
            no_max_pool=False,
            shortcut_type="B",
            feed_forward=False,
            bias_downsample=False,
            act=act,
            norm=norm,
        )
        # MONAI's ResNet does not forward ``act`` to its blocks (they use ReLU): set the blocks' activations
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                block.act = get_act_layer(name=act)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.stem = stem
        self.act_spec = act
        self.norm_spec = norm

    def _make_layer(
        self,
        block: Any,
        planes: int,
        blocks: int,
        spatial_dims: int,
        shortcut_type: str,
        stride: int = 1,
        norm: str | tuple = "batch",
    ) -> nn.Sequential:
        # MONAI's ResNet.__init__ calls _make_layer without its ``norm``: pass the encoder's norm on
        return super()._make_layer(block, planes, blocks, spatial_dims, shortcut_type, stride, norm=self._block_norm)

    @property
    def encoder_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture (stored in encoder checkpoints)."""
        return {
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "stem": self.stem,
            "act": self.act_spec,
            "norm": self.norm_spec,
        }

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every stage, for U-Net style decoders.

        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``[stem, layer1, layer2, layer3, layer4]``: the stem map is taken after the activation and before
            the max-pool (64 channels, spatial size ``H`` for the 3x3 stem, ``H/2`` for the 7x7 stem); the
            layers have 64, 128, 256, 512 channels and halve the size from ``layer2`` on (``layer1`` is
            ``H/2`` resp. ``H/4``).
        """
        stem = self._refine(0, self.act(self.bn1(self.conv1(x))))
        out = self.maxpool(stem)
        features = [stem]
        for level, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            out = self._refine(level, layer(out))
            features.append(out)
        return features

    def _refine(self, level: int, feature_map: torch.Tensor) -> torch.Tensor:
        """Hook applied to the map of each level (0 = stem, 1-4 = layers) before the next stage consumes it.

        The plain encoder passes the map through; :class:`CBResNet18Encoder` applies its context bottleneck.
        """
        return feature_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooled ``layer4`` features.

        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``(B, 512)``.
        """
        return torch.flatten(self.avgpool(self.forward_features(x)[-1]), 1)
