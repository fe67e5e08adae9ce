"""Context-bottleneck block (MLVICX, Singh et al. 2024): a CBAM-style channel gate followed by a spatial gate."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

__all__ = ["CHANNEL_GATES", "ChannelGate", "ContextBottleneck", "SpatialGate"]

#: ``"shared"``: 1x1 conv C -> C/r -> ReLU -> 1x1 conv C/r -> C (official MLVICX code, r = 2);
#: ``"conv"``: a single 1x1 conv C -> C (the paper's f).
CHANNEL_GATES: tuple[str, ...] = ("shared", "conv")


class ChannelGate(nn.Module):
    """Channel attention ``a_c = σ(f(AvgPool(y)) + f(MaxPool(y)))`` (MLVICX Eq. 1), returns ``a_c ⊗ y``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: ``C``.
        reduction: ``r`` of the shared bottleneck (``C -> C / r -> C``); ignored for ``channel_gate="conv"``.
        channel_gate: ``"shared"`` (two 1x1 convs with a ReLU between, official code) or ``"conv"`` (one 1x1 conv,
            the paper).

    Shapes:
        ``(B, C, *spatial) -> (B, C, *spatial)``.

    Raises:
        ValueError: for an unknown ``channel_gate`` or a ``reduction`` that leaves no hidden channel.
    """

    def __init__(self, spatial_dims: int, in_channels: int, reduction: int = 2, channel_gate: str = "shared") -> None:
        super().__init__()
        if channel_gate not in CHANNEL_GATES:
            raise ValueError(f"channel_gate must be one of {CHANNEL_GATES}, got {channel_gate!r}.")
        conv = Conv[Conv.CONV, spatial_dims]
        if channel_gate == "conv":
            self.f: nn.Module = conv(in_channels, in_channels, kernel_size=1, bias=False)
        else:
            if reduction < 1 or in_channels // reduction < 1:
                raise ValueError(
                    f"reduction must be >= 1 and <= in_channels ({in_channels}), got {reduction}."
                )
            hidden = in_channels // reduction
            self.f = nn.Sequential(
                conv(in_channels, hidden, kernel_size=1, bias=False),
                nn.ReLU(inplace=True),
                conv(hidden, in_channels, kernel_size=1, bias=False),
            )
        self.avg_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.max_pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Gate the channels of ``y (B, C, *spatial)``."""
        gate = torch.sigmoid(self.f(self.avg_pool(y)) + self.f(self.max_pool(y)))
        return gate * y


class SpatialGate(nn.Module):
    """Spatial attention ``a_s = σ(conv_k([mean_c(k); max_c(k)]))`` (MLVICX Eq. 2), returns ``a_s ⊗ k``.

    Args:
        spatial_dims: 2 or 3.
        kernel_size: odd kernel size of the convolution (7 in the paper).

    Shapes:
        ``(B, C, *spatial) -> (B, C, *spatial)``.

    Raises:
        ValueError: for an even or non-positive ``kernel_size``.
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial kernel_size must be a positive odd number, got {kernel_size}.")
        self.conv = Conv[Conv.CONV, spatial_dims](2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        """Gate the positions of ``k (B, C, *spatial)``."""
        pooled = torch.cat([k.mean(dim=1, keepdim=True), k.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled)) * k


class ContextBottleneck(nn.Module):
    """Context-bottleneck block of MLVICX: channel gate then spatial gate, ``ŷ = a_s ⊗ (a_c ⊗ y)``.

    From Singh et al., "MLVICX: Multi-Level Variance-Covariance Exploration for Chest X-ray Self-Supervised
    Representation Learning" (2024), section III-A1 (a CBAM-like block, Woo et al. 2018). All convolutions have no
    bias, so with all weights zero both gates are ``σ(0) = 0.5`` and the block returns exactly ``0.25 · y``.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: channels ``C`` of the feature map.
        reduction: ``r`` of the shared channel bottleneck ``C -> C/r -> C`` (official code: 2).
        channel_gate: ``"shared"`` (default, official code's bottleneck) or ``"conv"`` (the paper's single 1x1
            conv; the same as ``"shared"`` with ``r = 1`` without the hidden ReLU).
        spatial_kernel_size: kernel of the spatial gate's convolution over ``[mean; max]`` (7).

    Shapes:
        ``(B, C, *spatial) -> (B, C, *spatial)``.

    Raises:
        ValueError: on an unknown ``channel_gate``, a bad ``reduction`` or ``spatial_kernel_size``.

    Example:
        >>> block = ContextBottleneck(spatial_dims=2, in_channels=64)
        >>> block(torch.randn(2, 64, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        reduction: int = 2,
        channel_gate: str = "shared",
        spatial_kernel_size: int = 7,
    ) -> None:
        super().__init__()
        self.channel = ChannelGate(spatial_dims, in_channels, reduction=reduction, channel_gate=channel_gate)
        self.spatial = SpatialGate(spatial_dims, kernel_size=spatial_kernel_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Refine ``y (B, C, *spatial)``; the output has the same shape."""
        return self.spatial(self.channel(y))
