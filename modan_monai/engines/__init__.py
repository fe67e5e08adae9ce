"""The training engine of every method (MONAI ``SupervisedTrainer`` + named loss terms) and its batch preparation."""

from __future__ import annotations

from .methods import LABEL_FREE_LOSSES, LOSS_NETWORKS, check_method_config, loss_terms_output
from .prepare_batch import PrepareViewGroups
from .trainer import Trainer, batch_sources

__all__ = [
    "LABEL_FREE_LOSSES",
    "LOSS_NETWORKS",
    "PrepareViewGroups",
    "Trainer",
    "batch_sources",
    "check_method_config",
    "loss_terms_output",
]
