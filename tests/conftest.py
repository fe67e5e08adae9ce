"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared real datasets folder: env ``MODAN_SHARED_DATASETS`` or ``<repo>/../shared/datasets``.

    Tests using it skip with a reason when the folder is absent (a fresh clone has no ``../shared``).
    """
    env = os.environ.get("MODAN_SHARED_DATASETS")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root} (set MODAN_SHARED_DATASETS)")
    return root
