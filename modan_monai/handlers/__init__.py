"""Ignite handlers used by the bundles (checkpoints, best weights, resume, progress, TensorBoard)."""

from __future__ import annotations

from .best_weights import KeepBestWeights
from .checkpoint import EncoderCheckpointSaver, ResumeFromCheckpoint, TrainingCheckpointSaver, latest_checkpoint
from .checkpoint import BestModelSaver, FinalModelSaver, list_checkpoints, read_training_checkpoint
from .exam_auc import ExamROCAUC
from .progress import ProgressPrinter
from .segmentation import PerImageDiceSaver, SegmentationOverlayHandler
from .tensorboard import LearningRateTensorBoardHandler, ViewsTensorBoardHandler
from .validation import RngPreservingValidationHandler

__all__ = [
    "EncoderCheckpointSaver",
    "ExamROCAUC",
    "KeepBestWeights",
    "LearningRateTensorBoardHandler",
    "PerImageDiceSaver",
    "ProgressPrinter",
    "ResumeFromCheckpoint",
    "SegmentationOverlayHandler",
    "TrainingCheckpointSaver",
    "ViewsTensorBoardHandler",
    "latest_checkpoint",
]
__all__ += ["BestModelSaver", "FinalModelSaver", "RngPreservingValidationHandler", "list_checkpoints", "read_training_checkpoint"]
