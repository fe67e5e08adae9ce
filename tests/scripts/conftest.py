"""Fixtures of the script tests: data trees written by other test folders' helpers (reused, not copied)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def chestxray14_tree() -> Callable[..., Path]:
    """``tree(root, lines=..., train_val=..., test=...)``: a ChestX-ray14 tree in NIH's exact layout
    (``Data_Entry_2017.csv``, ``train_val_list.txt``, ``test_list.txt``, ``images_00N/images/*.png``), written by
    the helper of ``tests/data_manifests/test_chestxray14.py``."""
    spec = importlib.util.spec_from_file_location("chestxray14_tree_helpers",
                                                  TESTS / "data_manifests" / "test_chestxray14.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._tree
