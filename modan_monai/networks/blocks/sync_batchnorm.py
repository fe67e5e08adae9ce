"""Batch normalisation over the global batch of all ranks, on every backend (gloo on CPU included).

Contrastive and VICReg-style pretraining normalise each layer over the whole batch the loss sees (SimCLR's
"global BN"); with per-rank statistics a multi-process run trains a different model than one process over the
same global batch. ``torch.nn.SyncBatchNorm`` does this on GPUs only (its forward refuses CPU tensors), so
:class:`GlobalBatchNorm` is written here: each rank's per-channel count, mean and biased variance are gathered
with gradients (:func:`modan_monai.utils.distributed.all_gather_with_grad`) and combined exactly
(``var = Σ n_r (var_r + (mean_r − mean)²) / N``); running statistics follow ``torch.nn.BatchNorm`` (unbiased
variance, ``momentum`` or the cumulative average). Outside training, or without a process group, it is the
plain batch norm.
"""

from __future__ import annotations

import torch
from torch import nn

from ...utils.distributed import all_gather_with_grad, distributed_world

__all__ = ["GlobalBatchNorm", "convert_global_batchnorm"]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``BatchNorm{1,2,3}d`` whose training statistics are taken over every rank's batch.

    Args:
        num_features: channels ``C`` of inputs ``(N, C, *spatial)``.
        eps, momentum, affine, track_running_stats: as ``torch.nn.BatchNorm2d``.

    Example:
        >>> bn = GlobalBatchNorm(3)
        >>> ref = torch.nn.BatchNorm2d(3)
        >>> x = torch.randn(4, 3, 5, 5)
        >>> torch.allclose(bn(x), ref(x), atol=1e-6)
        True
    """

    #: gather the statistics over the ranks in training (False: this rank's batch only, e.g. for a copy that one
    #: rank recalibrates on its own while the others train, as the k-NN monitor does)
    global_stats = True

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input (N, C, ...) of at least 2 dimensions, got {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (torch's name)
        """Normalise ``input`` ``(N, C, *spatial)`` with the global batch statistics in training."""
        self._check_input_dim(input)
        if not (self.training and self.global_stats and distributed_world()[1] > 1):
            return super().forward(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.float()
        count = torch.tensor([x.numel() / channels], dtype=torch.float32, device=x.device)
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        stats = all_gather_with_grad(torch.cat([count, mean, var])[None])  # (world, 1 + 2C)
        counts, means, variances = stats[:, :1], stats[:, 1 : 1 + channels], stats[:, 1 + channels :]
        total = counts.sum()
        global_mean = (counts * means).sum(0) / total
        global_var = (counts * (variances + (means - global_mean) ** 2)).sum(0) / total
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = global_var * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - factor).add_(global_mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        shape = (1, channels) + (1,) * (input.dim() - 2)
        out = (x - global_mean.view(shape)) * torch.rsqrt(global_var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``torch.nn.BatchNorm*`` of ``module`` by a :class:`GlobalBatchNorm`, in place.

    Parameters and buffers are kept (the same tensors), so optimisers, EMA teachers and checkpoints see the
    same state dict keys. Returns ``module`` itself (a bare batch norm is returned converted).

    Args:
        module: a network.

    Returns:
        The converted network.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        return _converted(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
                setattr(parent, name, _converted(child))
    return module


def _converted(bn: nn.modules.batchnorm._BatchNorm) -> GlobalBatchNorm:
    new = GlobalBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias
    if bn.track_running_stats:
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    return new
