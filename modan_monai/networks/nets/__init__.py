"""Network definitions."""

from __future__ import annotations

from .heads import ClassificationModel, ContrastiveModel, ProjectionHead
from .resnet_encoder import ResNet18Encoder

__all__ = ["ClassificationModel", "ContrastiveModel", "ProjectionHead", "ResNet18Encoder"]
