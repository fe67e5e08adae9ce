"""A two-process gloo harness shared by the distributed loss tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch


def _run_on_ranks(worker: Callable, init_dir: Path, world_size: int = 2) -> dict:
    """Spawn ``worker(rank, world_size, init_file, results)`` on ``world_size`` processes; return ``results``."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    context = torch.multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.start_processes(
            worker, args=(world_size, str(init_dir / "init"), results), nprocs=world_size, start_method="spawn"
        )
        return dict(results)


@pytest.fixture
def run_on_ranks() -> Callable[..., dict]:
    """``run_on_ranks(worker, init_dir, world_size=2) -> {rank: result}`` (skips without gloo)."""
    return _run_on_ranks
