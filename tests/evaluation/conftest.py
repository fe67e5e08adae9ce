"""Tiny labelled manifests for the evaluation tests, written in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from evaluation_data import write_png_manifest


@pytest.fixture(autouse=True)
def _one_thread(single_thread_torch: None) -> None:
    """Every evaluation test trains tiny models: tests/conftest.py's single_thread_torch for all of them."""


@pytest.fixture(scope="module")
def png_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_png_manifest(tmp_path_factory.mktemp("toy"))
