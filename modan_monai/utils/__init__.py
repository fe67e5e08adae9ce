"""Utilities: atomic file writes and the random states of a run (exact resume)."""

from __future__ import annotations

from .atomic import atomic_path, atomic_save, remove_stale_temporaries
from .random_state import RandomStates, preserved_rng_state, random_state_objects
from .run_settings import RunSettings

__all__ = [
    "RandomStates",
    "RunSettings",
    "atomic_path",
    "atomic_save",
    "preserved_rng_state",
    "random_state_objects",
    "remove_stale_temporaries",
]
