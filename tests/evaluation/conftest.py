"""Tiny labelled manifests for the evaluation tests, written in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from evaluation_data import write_png_manifest


@pytest.fixture(autouse=True)
def single_thread_torch():
    """One intra-op thread: these tiny models run many times faster than with threads fighting for busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def png_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_png_manifest(tmp_path_factory.mktemp("toy"))
