"""Utilities for exact resume: atomic file writes, the random states and settings of a run, state comparison."""

from __future__ import annotations

from .atomic import atomic_path, atomic_save, remove_stale_temporaries
from .distributed import all_gather_with_grad, distributed_world, gather_batch, is_rank_zero
from .compare import max_abs_difference, state_differences
from .lock import LOCK_NAME, RunLock, RunLockError, lock_output_dir
from .logs import LOG_FORMAT, STATS_HANDLER_LOGGER, progress_only, setup_logging
from .names import safe_file_name
from .random_state import RandomStates, preserved_rng_state, random_state_objects
from .run_settings import RunSettings
from .atomic import append_complete_lines, atomic_append_text, atomic_write_text

__all__ = [
    "LOCK_NAME",
    "LOG_FORMAT",
    "RandomStates",
    "RunLock",
    "RunLockError",
    "RunSettings",
    "STATS_HANDLER_LOGGER",
    "all_gather_with_grad",
    "atomic_path",
    "atomic_save",
    "distributed_world",
    "gather_batch",
    "is_rank_zero",
    "lock_output_dir",
    "max_abs_difference",
    "preserved_rng_state",
    "progress_only",
    "random_state_objects",
    "remove_stale_temporaries",
    "safe_file_name",
    "setup_logging",
    "state_differences",
    "append_complete_lines", "atomic_append_text", "atomic_write_text",
]
