"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="session", autouse=True)
def _private_dicom_salt(tmp_path_factory: pytest.TempPathFactory):
    """DICOM manifests built without a salt use ``$MODAN_DICOM_SALT_FILE``: a temporary one, not the user's
    ``~/.config/modan_monai/dicom.salt`` (set in ``os.environ`` so subprocesses see it too)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODAN_DICOM_SALT_FILE", str(tmp_path_factory.mktemp("salt") / "dicom.salt"))
        yield


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


@pytest.fixture
def single_thread_torch() -> Iterator[None]:
    """One intra-op thread: tiny models run many times faster than with threads fighting for busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Import ``scripts/<name>.py`` as a module (in-process: a subprocess pays the MONAI import, ~5 s)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"{name}_script", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def _tensorboard_tags(log_dir: Path) -> dict[str, list[str]]:
    """Scalar and image tags of the TensorBoard event files in ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(Path(log_dir).glob("events.out.tfevents.*")), f"no TensorBoard event file in {log_dir}"
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc.Tags()


@pytest.fixture
def tensorboard_tags() -> Callable[[Path], dict[str, list[str]]]:
    """``tensorboard_tags(log_dir) -> {"scalars": [...], "images": [...], ...}``."""
    return _tensorboard_tags
