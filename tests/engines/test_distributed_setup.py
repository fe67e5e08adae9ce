"""Process-group set-up of the multi-GPU configs: ``modan_monai.engines.distributed`` and the rank-0 writer.

Checked: :func:`resolve_backend` (``auto``, unknown and unavailable backends), :func:`distributed_device` (gloo,
NCCL without a GPU for ``LOCAL_RANK``, a missing ``torchrun`` variable), :func:`init_distributed` in a
one-process gloo group, :func:`rank_batch_size`, :func:`rank_zero_handlers` (which handlers ranks > 0 drop and
keep) and :func:`modan_monai.handlers.rank_zero_summary_writer` (no event file on rank 1, a ``SummaryWriter`` on
rank 0).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from monai.handlers import (
    CheckpointSaver,
    LrScheduleHandler,
    MetricsSaver,
    StatsHandler,
    TensorBoardImageHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
)
from torch.utils.tensorboard import SummaryWriter

from modan_monai.engines import (
    destroy_distributed,
    distributed_device,
    init_distributed,
    rank_batch_size,
    rank_zero_handlers,
    resolve_backend,
)
from modan_monai.handlers import (
    EncoderCheckpointSaver,
    LearningRateTensorBoardHandler,
    ProgressPrinter,
    ResumeFromCheckpoint,
    TrainingCheckpointSaver,
    rank_zero_summary_writer,
)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_environ(local_rank: int = 0, port: int = 29500) -> dict[str, str]:
    """The variables torchrun sets for one process of a two-process run."""
    return {"RANK": str(local_rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(local_rank), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_auto_backend_is_gloo_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto") == "gloo"
    assert resolve_backend("GLOO") == "gloo"


def test_auto_backend_is_nccl_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    assert resolve_backend() == "nccl"


@pytest.mark.parametrize("backend", ["mpi", "", "cuda"])
def test_unknown_backend_names_the_config_id(backend: str) -> None:
    with pytest.raises(ValueError, match="'backend'"):
        resolve_backend(backend)


def test_unavailable_backend_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)
    with pytest.raises(ValueError, match="'backend'.*nccl"):
        resolve_backend("nccl")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="does not provide"):
        resolve_backend("auto")


def test_gloo_device_is_the_cpu() -> None:
    assert distributed_device("gloo", torchrun_environ(1)) == torch.device("cpu")


def test_nccl_device_is_cuda_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed_device("nccl", torchrun_environ(1)) == torch.device("cuda", 1)


@pytest.mark.parametrize("gpus, local_rank", [(1, 1), (0, 0), (2, 3)])
def test_nccl_without_a_gpu_for_local_rank_names_nproc_per_node(
    monkeypatch: pytest.MonkeyPatch, gpus: int, local_rank: int
) -> None:
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(ValueError, match=rf"LOCAL_RANK={local_rank}.*--nproc_per_node"):
        distributed_device("nccl", torchrun_environ(local_rank))


@pytest.mark.parametrize("missing", TORCHRUN_VARIABLES)
def test_missing_torchrun_variable_is_named(missing: str) -> None:
    environ = torchrun_environ()
    del environ[missing]
    with pytest.raises(RuntimeError, match=missing):
        distributed_device("gloo", environ)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed("gloo", environ=environ)


def test_init_distributed_starts_a_gloo_group_once(monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.distributed.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    try:
        assert init_distributed("gloo", timeout_minutes=1) == "gloo"
        assert torch.distributed.is_initialized()
        assert torch.distributed.get_world_size() == 1
        assert init_distributed("gloo") == "gloo"  # a second call returns at once
    finally:
        destroy_distributed()
    assert not torch.distributed.is_initialized()
    destroy_distributed()  # nothing without a group


@pytest.mark.parametrize("batch_size, world, expected", [(16, 2, 8), (16, 1, 16), (12, 4, 3), (2, 2, 1)])
def test_rank_batch_size_divides_the_global_batch(batch_size: int, world: int, expected: int) -> None:
    assert rank_batch_size(batch_size, world) == expected


@pytest.mark.parametrize("batch_size, world", [(15, 2), (1, 2), (0, 2), (8, 0)])
def test_rank_batch_size_not_a_multiple_names_batch_size_and_world_size(batch_size: int, world: int) -> None:
    with pytest.raises(ValueError, match=r"'batch_size'.*WORLD_SIZE"):
        rank_batch_size(batch_size, world)


class PlainHandler:
    """A handler without ``rank_zero_only``: every rank attaches it."""

    def attach(self, engine) -> None:  # pragma: no cover - never attached here
        pass


class ExplicitlyAllRanks(PlainHandler):
    rank_zero_only = False


def handler_lists(tmp_path: Path) -> tuple[list, list, list]:
    """``(all handlers in order, those ranks > 0 keep, those they drop)``."""
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    kept = [
        TrainingCheckpointSaver(tmp_path / "ckpt", {"network": net, "optimizer": optimizer}),
        ResumeFromCheckpoint(tmp_path / "ckpt", {"network": net, "optimizer": optimizer}),
        LrScheduleHandler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)),
        ValidationHandler(interval=1, validator=None),
        PlainHandler(),
        ExplicitlyAllRanks(),
    ]
    dropped = [
        StatsHandler(),
        TensorBoardStatsHandler(summary_writer=writer),
        TensorBoardImageHandler(summary_writer=writer),
        CheckpointSaver(save_dir=str(tmp_path / "monai_ckpt"), save_dict={"network": net}, save_final=True),
        MetricsSaver(save_dir=str(tmp_path / "metrics")),
        ProgressPrinter(),
        LearningRateTensorBoardHandler(writer, optimizer),
        EncoderCheckpointSaver(net, tmp_path / "enc"),
    ]
    handlers = [kept[0], dropped[0], kept[1], dropped[1], kept[2], dropped[2], kept[3], *dropped[3:], *kept[4:]]
    writer.close()
    return handlers, kept, dropped


def test_rank_zero_keeps_every_handler(tmp_path: Path) -> None:
    handlers, _, _ = handler_lists(tmp_path)
    assert rank_zero_handlers(handlers, rank=0) == handlers


def test_other_ranks_drop_writers_and_keep_training_handlers(tmp_path: Path) -> None:
    handlers, kept, dropped = handler_lists(tmp_path)
    on_rank_one = rank_zero_handlers(handlers, rank=1)
    assert [id(h) for h in on_rank_one] == [id(h) for h in kept]  # same objects, in their order
    assert not any(h in on_rank_one for h in dropped)
    assert rank_zero_handlers(handlers, rank=3) == on_rank_one


def test_rank_is_read_from_the_environment_without_a_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handlers, kept, _ = handler_lists(tmp_path)
    monkeypatch.setenv("RANK", "1")
    assert rank_zero_handlers(handlers) == kept
    monkeypatch.setenv("RANK", "0")
    assert rank_zero_handlers(handlers) == handlers
    monkeypatch.delenv("RANK")
    assert rank_zero_handlers(handlers) == handlers


def test_summary_writer_on_rank_one_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    log_dir = tmp_path / "tb"
    writer = rank_zero_summary_writer(str(log_dir))
    assert not isinstance(writer, SummaryWriter)
    writer.add_scalar("loss", 1.0, 1)
    writer.add_image("views", torch.zeros(1, 4, 4), 1)
    writer.flush()
    writer.close()
    assert not log_dir.exists() or not any(log_dir.iterdir())


def test_summary_writer_on_rank_zero_is_a_summary_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tensorboard_tags
) -> None:
    monkeypatch.setenv("RANK", "0")
    log_dir = tmp_path / "tb"
    writer = rank_zero_summary_writer(str(log_dir), flush_secs=1)
    assert isinstance(writer, SummaryWriter)
    writer.add_scalar("loss", 1.0, 1)
    writer.close()
    assert "loss" in tensorboard_tags(log_dir)["scalars"]
