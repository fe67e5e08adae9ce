"""Context-bottleneck ResNet-18 encoder (MLVICX backbone)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..blocks.context_bottleneck import ContextBottleneck
from .resnet_encoder import _DEFAULT_ACT, ResNet18Encoder

__all__ = ["CBResNet18Encoder"]

_LEVEL_CHANNELS: tuple[int, ...] = (64, 64, 128, 256, 512)


class CBResNet18Encoder(ResNet18Encoder):
    """ResNet-18 with a context-bottleneck block after the stem and after each of its four stages (MLVICX).

    Singh et al., "MLVICX: Multi-Level Variance-Covariance Exploration for Chest X-ray Self-Supervised
    Representation Learning" (2024), Fig. 1 / section III-A1: each intermediate map ``y_p`` is refined by a
    :class:`~modan_monai.networks.blocks.ContextBottleneck` and the refined map ``ŷ_p`` is what the next stage
    consumes (the stem's refined map goes through the max-pool first). The global embedding is the average-pooled
    last refined map.

    The ResNet body, stems and parameter names are those of :class:`ResNet18Encoder` (``conv1``, ``bn1``,
    ``layer1`` ... ``layer4``); the blocks are ``context_blocks.0`` (stem) ... ``context_blocks.4`` (``layer4``).
    A plain ResNet-18 checkpoint therefore does not load strictly into this encoder (the ``context_blocks.*``
    keys are missing) and vice versa: the error names those keys.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        stem: ``"3x3"`` (stride 1) or ``"7x7"`` (stride 2), as :class:`ResNet18Encoder`.
        reduction: ``r`` of the blocks' shared channel bottleneck.
        channel_gate: ``"shared"`` (official code, default) or ``"conv"`` (the paper's single 1x1 conv).
        spatial_kernel_size: kernel of the blocks' spatial gate (7).
        act: activation, MONAI factory name or ``(name, kwargs)``.
        norm: normalisation, MONAI factory name or ``(name, kwargs)``.

    Shapes:
        - input: ``(B, in_channels, *spatial)``.
        - ``forward``: ``(B, 512)``.
        - ``forward_features``: five refined maps with 64, 64, 128, 256, 512 channels (sizes as
          :meth:`ResNet18Encoder.forward_features`: ``H, H/2, H/4, H/8, H/16`` for the 3x3 stem).

    Example:
        >>> encoder = CBResNet18Encoder(spatial_dims=2, in_channels=1)
        >>> encoder(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 512])
        >>> [tuple(f.shape[1:]) for f in encoder.forward_features(torch.zeros(2, 1, 64, 64))]
        [(64, 64, 64), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    """

    out_features: int = 512

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        stem: str = "3x3",
        reduction: int = 2,
        channel_gate: str = "shared",
        spatial_kernel_size: int = 7,
        act: str | tuple = _DEFAULT_ACT,
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, stem=stem, act=act, norm=norm)
        self.context_blocks = nn.ModuleList(
            [
                ContextBottleneck(
                    spatial_dims,
                    channels,
                    reduction=reduction,
                    channel_gate=channel_gate,
                    spatial_kernel_size=spatial_kernel_size,
                )
                for channels in _LEVEL_CHANNELS
            ]
        )
        self.reduction = reduction
        self.channel_gate = channel_gate
        self.spatial_kernel_size = spatial_kernel_size

    @property
    def encoder_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture (stored in encoder checkpoints)."""
        return {
            **super().encoder_kwargs,
            "reduction": self.reduction,
            "channel_gate": self.channel_gate,
            "spatial_kernel_size": self.spatial_kernel_size,
        }

    def _refine(self, level: int, feature_map: torch.Tensor) -> torch.Tensor:
        """Context bottleneck of ``level`` (0 = stem, 1-4 = layers): ``forward_features`` returns the refined maps
        ``ŷ_0 ... ŷ_4`` (the stem map is refined before the max-pool) and each refined map feeds the next stage."""
        return self.context_blocks[level](feature_map)
