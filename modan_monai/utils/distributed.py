"""``torch.distributed`` helpers shared by the losses, the batch-norm layers and the multi-GPU bundle configs.

Every function works without a process group (one process: rank 0 of a world of 1), so single-process code
calls them unconditionally.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["all_gather_with_grad", "distributed_world", "gather_batch", "is_rank_zero", "process_rank", "unwrap_module"]


def distributed_world() -> tuple[int, int]:
    """Return ``(rank, world_size)``; ``(0, 1)`` when torch.distributed is unavailable or not initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def process_rank() -> int:
    """This process's rank: from the process group when one is initialised, else the ``RANK`` variable that
    ``torchrun`` sets (for code that runs before the group exists, such as a bundle's config ids), else 0."""
    rank, world = distributed_world()
    return rank if world > 1 else int(os.environ.get("RANK", "0").strip() or 0)


def is_rank_zero() -> bool:
    """True in a single process and on rank 0 of a process group: the process that writes files."""
    return distributed_world()[0] == 0


def unwrap_module(obj: Any) -> Any:
    """The module inside a ``DataParallel`` / ``DistributedDataParallel`` wrapper (anything else unchanged).

    Checkpoints and kept weights hold the bare module's state dict, so files of one process and of N match.
    """
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return obj.module
    return obj


class _AllGatherWithGradient(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward sums the incoming gradients over ranks and returns this rank's slice.

    Hand-written instead of ``torch.distributed.nn.functional.all_gather``: that function is deprecated, and on
    gloo (CPU) its all-to-all backward gave gradients that did not match the single-process loss in
    ``test_gather_distributed_matches_global_batch``. ``all_reduce`` is supported by every backend.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        ctx.batch = tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
        torch.distributed.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        torch.distributed.all_reduce(grad, op=torch.distributed.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ``(N, ...)`` of every rank along dim 0 -> ``(world_size · N, ...)``, with gradients.

    The backward all-reduces (sums) the gradient and returns this rank's rows, so with DDP's gradient averaging
    a loss over the gathered rows gets the gradients of the same loss over one global batch. Every rank must
    give the same shape. Without a process group the tensor is returned as it is.
    """
    if distributed_world()[1] == 1:
        return tensor
    return _AllGatherWithGradient.apply(tensor)


def gather_batch(
    features: torch.Tensor, labels: torch.Tensor | None, rank: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """All-gather features (with gradients) and labels from every rank along the batch dimension.

    Args:
        features: ``(N, ...)`` this rank's rows.
        labels: ``(N, ...)`` or None.
        rank: this process's rank.
        world_size: number of processes.

    Returns:
        The global features ``(world_size · N, ...)``, the global labels and the offset of this rank's rows in
        the global batch.

    Raises:
        ValueError: when the ranks give different ``N`` (all_gather needs equal sizes).
    """
    sizes = [torch.zeros(1, dtype=torch.long, device=features.device) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, torch.tensor([features.shape[0]], device=features.device))
    if len({int(s.item()) for s in sizes}) != 1:
        raise ValueError(
            f"gather_distributed needs the same batch size on every rank, got {[int(s.item()) for s in sizes]}; "
            "use drop_last=True / an even DistributedSampler."
        )
    global_features = _AllGatherWithGradient.apply(features)
    global_labels = None
    if labels is not None:
        gathered = [torch.empty_like(labels) for _ in range(world_size)]
        torch.distributed.all_gather(gathered, labels.contiguous())
        global_labels = torch.cat(gathered, dim=0)
    return global_features, global_labels, rank * features.shape[0]
