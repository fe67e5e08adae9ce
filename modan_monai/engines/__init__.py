"""The training engine of every method (MONAI ``SupervisedTrainer`` + named loss terms) and its batch preparation."""

from __future__ import annotations

from .guards import MULTI_GPU_CONFIG, check_datalist, check_world_size, datalist_batches
from .methods import LABEL_FREE_LOSSES, LOSS_NETWORKS, check_method_config, loss_terms_output
from .prepare_batch import PrepareViewGroups
from .trainer import Trainer, batch_sources

__all__ = [
    "LABEL_FREE_LOSSES",
    "LOSS_NETWORKS",
    "MULTI_GPU_CONFIG",
    "PrepareViewGroups",
    "Trainer",
    "batch_sources",
    "check_datalist",
    "check_method_config",
    "check_world_size",
    "datalist_batches",
    "loss_terms_output",
]
