"""MLVICX pretraining model: multi-level aggregation, expanders and the two-branch wrapper."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from torch import nn

__all__ = ["AGGREGATIONS", "Expander", "MLVICXModel", "MultiLevelAggregation"]

#: ``"concat"``: resize and concatenate (paper); ``"sum"``: resize, 1x1 conv each map to a common width, sum
#: (official code, whose convolutions were created in ``forward`` and never trained; here they exist at
#: construction).
AGGREGATIONS: tuple[str, ...] = ("concat", "sum")


class MultiLevelAggregation(nn.Module):
    """Combine refined feature maps of several levels into one compound map ``u`` (MLVICX section III-A1).

    Every map is resized (bilinear / trilinear, ``align_corners=False``) to a common spatial size, then either
    concatenated along channels (``"concat"``, the paper) or projected by a per-level 1x1 convolution to
    ``out_channels`` and summed (``"sum"``, the official code). All parameters are created here, so the optimiser
    sees them.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of each level, e.g. ``(64, 64, 128, 256, 512)``.
        mode: ``"concat"`` or ``"sum"``.
        out_channels: width of the ``"sum"`` projections (512); ignored by ``"concat"``.
        size: the common spatial size (int or per-dimension sequence); ``None`` uses the size of the last
            (deepest) map.

    Shapes:
        - input: a sequence of ``(B, C_p, *spatial_p)`` maps.
        - output: ``(B, sum(C_p), *size)`` for ``"concat"``, ``(B, out_channels, *size)`` for ``"sum"``.

    Raises:
        ValueError: on an unknown ``mode`` or when the number or channels of the maps do not match.

    Example:
        >>> agg = MultiLevelAggregation(2, (64, 128), mode="sum", out_channels=32)
        >>> agg([torch.zeros(2, 64, 8, 8), torch.zeros(2, 128, 4, 4)]).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: Sequence[int],
        mode: str = "concat",
        out_channels: int = 512,
        size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if mode not in AGGREGATIONS:
            raise ValueError(f"aggregation mode must be one of {AGGREGATIONS}, got {mode!r}.")
        if not in_channels:
            raise ValueError("in_channels must list the channels of at least one level.")
        self.spatial_dims = spatial_dims
        self.in_channels = tuple(int(c) for c in in_channels)
        self.mode = mode
        self.size = size
        self.interp_mode = "bilinear" if spatial_dims == 2 else "trilinear" if spatial_dims == 3 else "linear"
        if mode == "sum":
            conv = Conv[Conv.CONV, spatial_dims]
            self.projections = nn.ModuleList([conv(c, out_channels, kernel_size=1) for c in self.in_channels])
            self.out_channels = int(out_channels)
        else:
            self.projections = nn.ModuleList()
            self.out_channels = sum(self.in_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Aggregate ``features`` (one map per level) into ``u``."""
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}.")
        channels = tuple(f.shape[1] for f in features)
        if channels != self.in_channels:
            raise ValueError(f"feature map channels {channels} do not match in_channels {self.in_channels}.")
        size = tuple(features[-1].shape[2:]) if self.size is None else self.size
        resized = [
            f if tuple(f.shape[2:]) == size else F.interpolate(f, size=size, mode=self.interp_mode, align_corners=False)
            for f in features
        ]
        if self.mode == "concat":
            return torch.cat(resized, dim=1)
        return torch.stack([proj(f) for proj, f in zip(self.projections, resized)]).sum(dim=0)


class Expander(nn.Sequential):
    """VICReg-style expander: 3 linear layers with BatchNorm + ReLU between (MLVICX section IV, width 2048).

    ``Linear(in, w) -> BN -> ReLU -> Linear(w, w) -> BN -> ReLU -> Linear(w, out)``; the last layer has no bias
    (as the VICReg projector).

    Args:
        in_features: input size.
        hidden_features: width ``w`` (2048 in the paper).
        out_features: output size; ``None`` uses ``hidden_features``.

    Shapes:
        ``(B, in_features) -> (B, out_features)``.

    Example:
        >>> Expander(512, 64)(torch.randn(4, 512)).shape
        torch.Size([4, 64])
    """

    def __init__(self, in_features: int, hidden_features: int = 2048, out_features: int | None = None) -> None:
        out_features = hidden_features if out_features is None else out_features
        super().__init__(
            nn.Linear(in_features, hidden_features),
            nn.BatchNorm1d(hidden_features),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_features, hidden_features),
            nn.BatchNorm1d(hidden_features),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_features, out_features, bias=False),
        )
        self.in_features = in_features
        self.out_features = out_features


class MLVICXModel(nn.Module):
    """Encoder + multi-level aggregation + global and multi-level expanders, applied to every view (MLVICX).

    Singh et al. 2024, Fig. 1: ``y`` is the encoder's global embedding, ``u`` the aggregation of the refined maps
    ``ŷ_0 ... ŷ_4``; ``z = g(y)`` and ``m = h(u)``, where ``u`` is average-pooled to a ``pool_size`` grid and
    flattened before ``h``. The ``B * V`` views are encoded in one pass (image-major, so BatchNorm sees both
    views), and the outputs are reshaped so that ``out[key][b, v]`` is view ``v`` of image ``b``.

    Args:
        encoder: a :class:`~modan_monai.networks.nets.CBResNet18Encoder` (any encoder with ``forward_features``,
            ``out_features`` and ``spatial_dims`` works).
        level_channels: channels of the encoder's ``forward_features`` maps.
        aggregation: ``"concat"`` (paper) or ``"sum"`` (official code).
        aggregation_channels: width of the ``"sum"`` projections.
        aggregation_size: common size of the resized maps; ``None``: the size of the deepest map.
        pool_size: grid ``u`` is average-pooled to before the multi-level expander.
        expander_features: width of both expanders (2048 in the paper).

    Shapes:
        - input: ``(B, V, C, *spatial)`` (``V >= 2`` for the loss) or ``(B, C, *spatial)`` (``V = 1``).
        - output: ``{"global": (B, V, expander_features), "multilevel": (B, V, expander_features)}``.

    Example:
        >>> from modan_monai.networks.nets import CBResNet18Encoder
        >>> model = MLVICXModel(CBResNet18Encoder(), aggregation="sum", expander_features=64)
        >>> {k: tuple(v.shape) for k, v in model(torch.zeros(4, 2, 1, 32, 32)).items()}
        {'global': (4, 2, 64), 'multilevel': (4, 2, 64)}
    """

    def __init__(
        self,
        encoder: nn.Module,
        level_channels: Sequence[int] = (64, 64, 128, 256, 512),
        aggregation: str = "concat",
        aggregation_channels: int = 512,
        aggregation_size: int | Sequence[int] | None = None,
        pool_size: int = 2,
        expander_features: int = 2048,
    ) -> None:
        super().__init__()
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}.")
        in_features = getattr(encoder, "out_features", None)
        if not isinstance(in_features, int) or not hasattr(encoder, "forward_features"):
            raise ValueError(
                f"encoder {type(encoder).__name__} needs an integer out_features and a forward_features method."
            )
        self.encoder = encoder
        self.spatial_dims = int(getattr(encoder, "spatial_dims", 2))
        self.aggregation = MultiLevelAggregation(
            self.spatial_dims,
            level_channels,
            mode=aggregation,
            out_channels=aggregation_channels,
            size=aggregation_size,
        )
        self.global_pool = Pool[Pool.ADAPTIVEAVG, self.spatial_dims](1)
        self.pool = Pool[Pool.ADAPTIVEAVG, self.spatial_dims](pool_size)
        self.global_expander = Expander(in_features, expander_features)
        multilevel_features = self.aggregation.out_channels * pool_size**self.spatial_dims
        self.multilevel_expander = Expander(multilevel_features, expander_features)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embed every view; returns ``{"global": (B, V, D), "multilevel": (B, V, D)}``."""
        if x.ndim == self.spatial_dims + 2:
            x = x.unsqueeze(1)
        elif x.ndim != self.spatial_dims + 3:
            raise ValueError(
                f"MLVICXModel expects (B, V, C, *spatial) or (B, C, *spatial) with {self.spatial_dims} spatial dims, "
                f"got shape {tuple(x.shape)}."
            )
        batch, views = x.shape[:2]
        features = self.encoder.forward_features(x.reshape(batch * views, *x.shape[2:]))
        y = torch.flatten(self.global_pool(features[-1]), 1)  # the encoder's global embedding (B * V, 512)
        u = torch.flatten(self.pool(self.aggregation(features)), 1)
        return {
            "global": self.global_expander(y).reshape(batch, views, -1),
            "multilevel": self.multilevel_expander(u).reshape(batch, views, -1),
        }
