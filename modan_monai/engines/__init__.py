"""The training engine of every method (MONAI ``SupervisedTrainer`` + named loss terms) and its batch preparation."""

from __future__ import annotations

from .distributed import (
    BACKENDS,
    destroy_distributed,
    distributed_device,
    init_distributed,
    rank_batch_size,
    rank_zero_handlers,
    resolve_backend,
)
from .guards import MULTI_GPU_CONFIG, check_datalist, check_world_size, datalist_batches
from .methods import LABEL_FREE_LOSSES, LOSS_NETWORKS, check_method_config, loss_terms_output
from .precision import PRECISIONS, PrecisionInferer, autocast_dtype, memory_format
from .prepare_batch import PrepareViewGroups
from .trainer import Trainer, batch_sources

__all__ = [
    "BACKENDS",
    "LABEL_FREE_LOSSES",
    "LOSS_NETWORKS",
    "MULTI_GPU_CONFIG",
    "PRECISIONS",
    "PrecisionInferer",
    "PrepareViewGroups",
    "Trainer",
    "autocast_dtype",
    "batch_sources",
    "check_datalist",
    "check_method_config",
    "check_world_size",
    "datalist_batches",
    "destroy_distributed",
    "distributed_device",
    "init_distributed",
    "loss_terms_output",
    "memory_format",
    "rank_batch_size",
    "rank_zero_handlers",
    "resolve_backend",
]
