"""Network building blocks."""

from __future__ import annotations

from .context_bottleneck import CHANNEL_GATES, ChannelGate, ContextBottleneck, SpatialGate
from .sync_batchnorm import GlobalBatchNorm, convert_global_batchnorm

__all__ = ["CHANNEL_GATES", "ChannelGate", "ContextBottleneck", "GlobalBatchNorm", "SpatialGate", "convert_global_batchnorm"]
