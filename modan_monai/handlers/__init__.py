"""Ignite handlers used by the bundles (checkpoints, best weights, resume, progress, TensorBoard)."""

from __future__ import annotations

from .best_weights import KeepBestWeights
from .checkpoint import EncoderCheckpointSaver, ResumeFromCheckpoint, TrainingCheckpointSaver, latest_checkpoint
from .checkpoint import BestModelSaver, FinalModelSaver, list_checkpoints, read_training_checkpoint
from .class_auc import ClassificationAUC, classification_auc_metric
from .exam_auc import ExamROCAUC
from .knn import KNNMonitor, knn_predict
from .linear_probe import linear_probe_accuracy
from .monitor_data import monitor_datalist
from .progress import ProgressPrinter
from .roc_curves import ROCCurveSaver, plot_class_roc
from .segmentation import PerImageDiceSaver, SegmentationOverlayHandler
from .summary import (
    PretrainingSummary,
    RunSummary,
    TrainingSummary,
    bundle_run_command,
    datalist_manifest,
    run_cv_command,
)
from .tensorboard import LearningRateTensorBoardHandler, ViewsTensorBoardHandler, rank_zero_summary_writer
from .validation import EvaluatorResumeLineFilter, RngPreservingValidationHandler, quiet_evaluator_resume_line

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
    "rank_zero_summary_writer",
    "knn_predict",
    "latest_checkpoint",
]
__all__ += ["BestModelSaver", "FinalModelSaver", "RngPreservingValidationHandler", "list_checkpoints", "read_training_checkpoint"]
from .collapse import CollapseMonitor
from .ema import EMATeacherUpdate, cosine_schedule, run_iterations
from .gradients import FreezeLastLayer, PerParameterGradientClipping
from .gradients import clip_gradients_per_parameter, optimizer_steps_now
from .schedules import LevelSchedule, SetEpoch, WeightDecaySchedule, find_level_transform, parse_level_schedule

__all__ += ["CollapseMonitor", "EMATeacherUpdate", "FreezeLastLayer", "LevelSchedule", "PerParameterGradientClipping"]
__all__ += ["SetEpoch", "WeightDecaySchedule", "clip_gradients_per_parameter", "cosine_schedule"]
__all__ += ["find_level_transform", "linear_probe_accuracy", "monitor_datalist"]
__all__ += ["optimizer_steps_now", "parse_level_schedule", "run_iterations"]
__all__ += ["EvaluatorResumeLineFilter", "quiet_evaluator_resume_line"]
__all__ += ["ClassificationAUC", "ROCCurveSaver", "classification_auc_metric", "plot_class_roc"]
__all__ += ["RunSummary", "TrainingSummary", "bundle_run_command", "datalist_manifest", "run_cv_command"]
