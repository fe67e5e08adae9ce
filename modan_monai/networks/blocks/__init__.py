"""Network building blocks."""

from __future__ import annotations

from .context_bottleneck import CHANNEL_GATES, ChannelGate, ContextBottleneck, SpatialGate

__all__ = ["CHANNEL_GATES", "ChannelGate", "ContextBottleneck", "SpatialGate"]
