"""Ignite handlers used by the project's bundles (checkpoints, best weights, resume, progress, TensorBoard)."""

from __future__ import annotations

from .best_weights import KeepBestWeights
from .checkpoint import EncoderCheckpointSaver, ResumeFromCheckpoint, TrainingCheckpointSaver, latest_checkpoint
from .progress import ProgressPrinter
from .tensorboard import LearningRateTensorBoardHandler, ViewsTensorBoardHandler

__all__ = [
    "EncoderCheckpointSaver",
    "KeepBestWeights",
    "LearningRateTensorBoardHandler",
    "ProgressPrinter",
    "ResumeFromCheckpoint",
    "TrainingCheckpointSaver",
    "ViewsTensorBoardHandler",
    "latest_checkpoint",
]
