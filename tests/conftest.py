"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


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


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Import ``scripts/<name>.py`` as a module (in-process: a subprocess pays the MONAI import, ~5 s)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"{name}_script", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
