"""Fixtures shared by the app tests: the synthetic classification images of the classify bundle's task tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

CLASSIFY_TASK_TESTS = Path(__file__).resolve().parents[1] / "bundles" / "test_classify_tasks.py"


@pytest.fixture(scope="session")
def classify_task_rows() -> Callable[..., list[dict]]:
    """``classify_task_rows(root, {name: pattern}, per_class=8) -> manifest rows``: the synthetic PNGs (a bright
    ``left`` / ``right`` half, ``centre`` square, combined by spaces) and rows of
    ``tests/bundles/test_classify_tasks.py`` (``_rows``: split train / val / test as its ``SPLITS``, ``case_id``
    the file stem), reused rather than copied."""
    spec = importlib.util.spec_from_file_location("classify_task_tests", CLASSIFY_TASK_TESTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._rows
