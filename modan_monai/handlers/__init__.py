"""Ignite handlers used by the bundles (checkpoints, best weights, resume, progress, TensorBoard)."""

from __future__ import annotations

from .best_weights import KeepBestWeights
from .checkpoint import EncoderCheckpointSaver, ResumeFromCheckpoint, TrainingCheckpointSaver, latest_checkpoint
from .knn import KNNMonitor, knn_predict
from .progress import ProgressPrinter
from .segmentation import PerImageDiceSaver, SegmentationOverlayHandler
from .summary import PretrainingSummary
from .tensorboard import LearningRateTensorBoardHandler, ViewsTensorBoardHandler

__all__ = [
    "EncoderCheckpointSaver",
    "KNNMonitor",
    "KeepBestWeights",
    "LearningRateTensorBoardHandler",
    "PerImageDiceSaver",
    "PretrainingSummary",
    "ProgressPrinter",
    "ResumeFromCheckpoint",
    "SegmentationOverlayHandler",
    "TrainingCheckpointSaver",
    "ViewsTensorBoardHandler",
    "knn_predict",
    "latest_checkpoint",
]
