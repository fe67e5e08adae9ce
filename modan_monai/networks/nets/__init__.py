"""Network definitions."""

from __future__ import annotations

from .adamv2 import AdamV2Branch, AdamV2Model, CompositionHead, DecompositionHead
from .cb_resnet_encoder import CBResNet18Encoder
from .dino_head import DINOHead
from .flexunet_encoders import FLEXUNET_BACKBONES, SegmentationUNet, UNetVariant, flexunet_backbone
from .heads import ClassificationModel, ContrastiveModel, ProjectionHead
from .mlvicx import AGGREGATIONS, Expander, MLVICXModel, MultiLevelAggregation
from .resnet50_encoder import ResNet50Encoder
from .resnet_encoder import ResNet18Encoder

__all__ = [
    "AdamV2Branch",
    "AdamV2Model",
    "CompositionHead",
    "DINOHead",
    "DecompositionHead",
    "AGGREGATIONS",
    "FLEXUNET_BACKBONES",
    "CBResNet18Encoder",
    "ClassificationModel",
    "ContrastiveModel",
    "Expander",
    "MLVICXModel",
    "MultiLevelAggregation",
    "ProjectionHead",
    "ResNet18Encoder",
    "ResNet50Encoder",
    "SegmentationUNet",
    "UNetVariant",
    "flexunet_backbone",
]
