"""Ignite handlers used by the project's bundles (checkpoints, resume, progress, TensorBoard)."""

from __future__ import annotations

from .checkpoint import EncoderCheckpointSaver, ResumeFromCheckpoint, TrainingCheckpointSaver, latest_checkpoint
from .progress import ProgressPrinter
from .tensorboard import LearningRateTensorBoardHandler, ViewsTensorBoardHandler

__all__ = [
    "EncoderCheckpointSaver",
    "LearningRateTensorBoardHandler",
    "ProgressPrinter",
    "ResumeFromCheckpoint",
    "TrainingCheckpointSaver",
    "ViewsTensorBoardHandler",
    "latest_checkpoint",
]
