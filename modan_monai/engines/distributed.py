"""Process-group set-up for the multi-GPU bundle configs (``configs/multi_gpu_train.json``), run by ``torchrun``.

Each bundle's multi-GPU config merges after ``configs/train.json`` and calls these by dotted path:

- :func:`init_distributed` starts the process group from the ``torchrun`` environment, NCCL on GPU and gloo on
  CPU unless the ``backend`` id says otherwise;
- :func:`distributed_device` gives each process its device (``cuda:LOCAL_RANK`` or the CPU);
- :func:`rank_batch_size` splits the global ``batch_size`` over the ranks;
- :func:`rank_zero_handlers` keeps on ranks > 0 only the handlers that change training (resume, schedules,
  validation, checkpoint gathering), not those that print or write.

Every failure names the setting to change (the config id or the environment variable).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.handlers import CheckpointSaver, ClassificationSaver, MetricsSaver, StatsHandler, TensorBoardHandler

from modan_monai.utils.distributed import process_rank

__all__ = ["BACKENDS", "destroy_distributed", "distributed_device", "init_distributed", "rank_batch_size",
           "rank_zero_handlers", "resolve_backend"]

#: values of the multi-GPU configs' ``backend`` id
BACKENDS = ("auto", "nccl", "gloo")
#: MONAI handlers that print or write files: run on rank 0 only
_WRITER_TYPES = (StatsHandler, TensorBoardHandler, CheckpointSaver, MetricsSaver, ClassificationSaver)
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _environment(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    env = os.environ if environ is None else environ
    missing = [name for name in _TORCHRUN_VARIABLES if name not in env]
    if missing:
        raise RuntimeError(
            f"configs/multi_gpu_train.json is meant for torchrun, but the environment lacks {missing}: start it with "
            "torchrun --nproc_per_node N -m monai.bundle run --config_file "
            "\"['configs/train.json','configs/multi_gpu_train.json']\" (or drop multi_gpu_train.json to run one "
            "process)."
        )
    return env


def resolve_backend(backend: str = "auto") -> str:
    """The process-group backend for ``backend``: ``auto`` -> NCCL when CUDA is available, else gloo.

    Raises:
        ValueError: an unknown value, or a backend this PyTorch build lacks (naming the ``backend`` id).
    """
    name = str(backend).lower()
    if name not in BACKENDS:
        raise ValueError(f"config id 'backend' must be one of {list(BACKENDS)}, got {backend!r}.")
    if name == "auto":
        name = "nccl" if torch.cuda.is_available() else "gloo"
    available = {"nccl": torch.distributed.is_nccl_available(), "gloo": torch.distributed.is_gloo_available()}
    if not available[name]:
        other = [b for b, ok in available.items() if ok]
        raise ValueError(
            f"config id 'backend' is {backend!r} -> {name}, which this PyTorch build does not provide; available: "
            f"{other or 'none'}."
        )
    return name


def distributed_device(backend: str = "auto", environ: Mapping[str, str] | None = None) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` with NCCL, the CPU with gloo.

    Args:
        backend: the ``backend`` id (see :func:`resolve_backend`).
        environ: the environment (default ``os.environ``), set by ``torchrun``.

    Raises:
        ValueError: NCCL without a GPU for this local rank (names ``LOCAL_RANK``, the GPUs seen and
            ``--nproc_per_node``).
    """
    env = _environment(environ)
    name = resolve_backend(backend)
    if name == "gloo":
        return torch.device("cpu")
    local_rank = int(env["LOCAL_RANK"])
    gpus = torch.cuda.device_count()
    if local_rank >= gpus:
        raise ValueError(
            f"backend nccl needs one GPU per process, but LOCAL_RANK={local_rank} and this node has {gpus} GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', 'unset')}): lower torchrun's --nproc_per_node "
            "to the number of GPUs, or set the config id 'backend' to gloo to train on the CPU."
        )
    return torch.device("cuda", local_rank)


def init_distributed(
    backend: str = "auto", timeout_minutes: float = 30.0, environ: Mapping[str, str] | None = None
) -> str:
    """Start the default process group from the ``torchrun`` environment (once; later calls return at once).

    Args:
        backend: the ``backend`` id (``auto``, ``nccl``, ``gloo``).
        timeout_minutes: collective timeout (a rank that stops answering fails the run after this).
        environ: the environment (default ``os.environ``).

    Returns:
        The backend in use.

    Raises:
        RuntimeError: when not started by ``torchrun`` (names the missing variables).
        ValueError: see :func:`resolve_backend` and :func:`distributed_device`.
    """
    if torch.distributed.is_initialized():
        return str(torch.distributed.get_backend())
    _environment(environ)
    name = resolve_backend(backend)
    device = distributed_device(backend, environ)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend=name, timeout=datetime.timedelta(minutes=timeout_minutes))
    return name


def destroy_distributed() -> None:
    """End the process group at the end of a run (nothing without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def rank_batch_size(batch_size: int, world_size: int) -> int:
    """Each rank's batch: the global ``batch_size`` divided by the number of processes.

    The bundles' ``batch_size`` is the global batch (the one the losses and the learning-rate rules of the
    papers refer to), so one process and N processes train on the same batches.

    Raises:
        ValueError: when ``batch_size`` is not a positive multiple of ``world_size`` (naming both).
    """
    batch_size, world_size = int(batch_size), int(world_size)
    if world_size < 1 or batch_size < world_size or batch_size % world_size:
        multiple = max(world_size, 1)  # the suggestion below must not divide by a WORLD_SIZE of 0
        raise ValueError(
            f"config id 'batch_size' ({batch_size}, the global batch) must be a multiple of the number of processes "
            f"WORLD_SIZE={world_size} (torchrun --nproc_per_node x --nnodes): each rank takes batch_size / "
            f"WORLD_SIZE images; e.g. batch_size {max(multiple, batch_size // multiple * multiple)}."
        )
    return batch_size // world_size


def rank_zero_handlers(handlers: Sequence[Any], rank: int | None = None) -> list[Any]:
    """The handlers this rank attaches: all on rank 0; on the others, those that neither print nor write.

    Dropped on ranks > 0: MONAI's stats, TensorBoard, checkpoint and metrics-saving handlers and every handler
    whose class sets ``rank_zero_only = True``. Kept everywhere: the rest (resume, learning-rate and weight-decay
    schedules, validation, EMA teacher, gradient clipping, the training checkpoint saver, which gathers every
    rank's random states and writes on rank 0).

    Args:
        handlers: the bundle's handler list.
        rank: this process's rank (default: from ``torch.distributed``, else the ``RANK`` variable).
    """
    if rank is None:
        rank = process_rank()
    if rank == 0:
        return list(handlers)
    return [h for h in handlers if not (isinstance(h, _WRITER_TYPES) or getattr(h, "rank_zero_only", False))]
