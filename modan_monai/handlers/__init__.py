"""Ignite handlers used by the bundles (checkpoints, best weights, resume, progress, TensorBoard)."""

from __future__ import annotations

from .best_weights import KeepBestWeights
from .collapse import CollapseMonitor
from .ema import EMATeacherUpdate, cosine_schedule
from .gradients import FreezeLastLayer, PerParameterGradientClipping, clip_gradients_per_parameter
from .schedules import LevelSchedule, SetEpoch, WeightDecaySchedule, level_at_epoch
from .checkpoint import EncoderCheckpointSaver, ResumeFromCheckpoint, TrainingCheckpointSaver, latest_checkpoint
from .checkpoint import BestModelSaver, FinalModelSaver, list_checkpoints, read_training_checkpoint
from .exam_auc import ExamROCAUC
from .knn import KNNMonitor, knn_predict
from .progress import ProgressPrinter
from .segmentation import PerImageDiceSaver, SegmentationOverlayHandler
from .summary import PretrainingSummary
from .tensorboard import LearningRateTensorBoardHandler, ViewsTensorBoardHandler
from .validation import RngPreservingValidationHandler

__all__ = [
    "EncoderCheckpointSaver",
    "ExamROCAUC",
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
__all__ += ["BestModelSaver", "FinalModelSaver", "RngPreservingValidationHandler", "list_checkpoints", "read_training_checkpoint"]
__all__ += ["CollapseMonitor", "EMATeacherUpdate", "FreezeLastLayer", "LevelSchedule", "PerParameterGradientClipping", "SetEpoch",
            "WeightDecaySchedule", "clip_gradients_per_parameter", "cosine_schedule", "level_at_epoch"]
