"""Encoders, heads and the encoder checkpoint format."""

from __future__ import annotations

from .checkpoint import ENCODER_CHECKPOINT_FORMAT, load_encoder, load_encoder_state, save_encoder
from .nets import ClassificationModel, ContrastiveModel, ProjectionHead, ResNet18Encoder

__all__ = [
    "ENCODER_CHECKPOINT_FORMAT",
    "ClassificationModel",
    "ContrastiveModel",
    "ProjectionHead",
    "ResNet18Encoder",
    "load_encoder",
    "load_encoder_state",
    "save_encoder",
]
