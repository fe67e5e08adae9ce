"""Encoders, heads and the encoder checkpoint format."""

from __future__ import annotations

from .blocks import ContextBottleneck
from .checkpoint import ENCODER_CHECKPOINT_FORMAT, load_encoder, load_encoder_state, read_checkpoint, save_encoder
from .factory import build_classifier, checkpoint_architecture
from .init import IMAGENET_PREFIX, initialise_encoder
from .nets import (
    FLEXUNET_BACKBONES,
    CBResNet18Encoder,
    ClassificationModel,
    ContrastiveModel,
    Expander,
    MLVICXModel,
    MultiLevelAggregation,
    ProjectionHead,
    ResNet18Encoder,
    SegmentationUNet,
    flexunet_backbone,
)

__all__ = [
    "ENCODER_CHECKPOINT_FORMAT",
    "FLEXUNET_BACKBONES",
    "IMAGENET_PREFIX",
    "CBResNet18Encoder",
    "ClassificationModel",
    "ContextBottleneck",
    "ContrastiveModel",
    "Expander",
    "MLVICXModel",
    "MultiLevelAggregation",
    "ProjectionHead",
    "ResNet18Encoder",
    "SegmentationUNet",
    "build_classifier",
    "checkpoint_architecture",
    "flexunet_backbone",
    "initialise_encoder",
    "load_encoder",
    "load_encoder_state",
    "read_checkpoint",
    "save_encoder",
]
