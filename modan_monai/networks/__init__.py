"""Encoders, heads and the encoder checkpoint format."""

from __future__ import annotations

from .checkpoint import ENCODER_CHECKPOINT_FORMAT, load_encoder, load_encoder_state, read_checkpoint, save_encoder
from .factory import build_classifier
from .init import IMAGENET_PREFIX, initialise_encoder
from .nets import ClassificationModel, ContrastiveModel, ProjectionHead, ResNet18Encoder

__all__ = [
    "ENCODER_CHECKPOINT_FORMAT",
    "IMAGENET_PREFIX",
    "ClassificationModel",
    "ContrastiveModel",
    "ProjectionHead",
    "ResNet18Encoder",
    "build_classifier",
    "initialise_encoder",
    "load_encoder",
    "load_encoder_state",
    "read_checkpoint",
    "save_encoder",
]
