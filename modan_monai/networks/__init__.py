"""Encoders, heads, the encoder registry and the encoder checkpoint format."""

from __future__ import annotations

from .blocks import ContextBottleneck, GlobalBatchNorm, convert_global_batchnorm
from .checkpoint import ENCODER_CHECKPOINT_FORMAT, load_encoder, load_encoder_state, read_checkpoint, save_encoder
from .checkpoint import DamagedCheckpointError, check_finite_state, load_model_weights, load_weights_file
from .factory import build_classifier
from .init import IMAGENET_PREFIX, initialise_encoder
from .model_settings import (
    MODEL_SETTINGS_KEY,
    attach_model_settings,
    check_model_settings,
    model_settings,
    read_model_settings,
    trained_setting,
)
from .nets import (
    AdamV2Model,
    CompositionHead,
    DecompositionHead,
    DINOHead,
    FLEXUNET_BACKBONES,
    CBResNet18Encoder,
    ClassificationModel,
    ContrastiveModel,
    Expander,
    MLVICXModel,
    MultiLevelAggregation,
    ProjectionHead,
    ResNet18Encoder,
    ResNet50Encoder,
    SegmentationUNet,
    flexunet_backbone,
)
from .registry import (
    EncoderArchitecture,
    UNetVariant,
    build_encoder,
    encoder_arch,
    encoder_architectures,
    register_encoder,
    resolve_encoder,
    unregister_encoder,
)

__all__ = [
    "ENCODER_CHECKPOINT_FORMAT",
    "FLEXUNET_BACKBONES",
    "IMAGENET_PREFIX",
    "CBResNet18Encoder",
    "ClassificationModel",
    "ContextBottleneck",
    "ContrastiveModel",
    "GlobalBatchNorm",
    "EncoderArchitecture",
    "Expander",
    "MLVICXModel",
    "MultiLevelAggregation",
    "ProjectionHead",
    "ResNet18Encoder",
    "SegmentationUNet",
    "UNetVariant",
    "build_classifier",
    "build_encoder",
    "convert_global_batchnorm",
    "encoder_arch",
    "encoder_architectures",
    "flexunet_backbone",
    "initialise_encoder",
    "load_encoder",
    "load_encoder_state",
    "load_model_weights",
    "read_checkpoint",
    "register_encoder",
    "resolve_encoder",
    "save_encoder",
    "unregister_encoder",
    "DamagedCheckpointError", "check_finite_state", "load_weights_file",
    "MODEL_SETTINGS_KEY", "attach_model_settings", "check_model_settings", "model_settings", "read_model_settings",
    "trained_setting",
    "AdamV2Model", "CompositionHead", "DecompositionHead", "DINOHead", "ResNet50Encoder",
]
