"""A ``DistributedSampler`` that can draw a set number of samples per epoch (the segment bundle's ``samples_per_epoch``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DistributedSampler as _TorchDistributedSampler

__all__ = ["DistributedSampler"]


class DistributedSampler(_TorchDistributedSampler):
    """``torch.utils.data.DistributedSampler`` with an optional number of draws per epoch over all ranks.

    With ``samples_per_epoch=None`` it is PyTorch's sampler (each rank takes every ``num_replicas``-th index
    of one seeded permutation per epoch). With a number it draws that many indices per epoch like
    ``RandomSampler(num_samples=...)`` (whole permutations, then part of one, so every image comes before any
    comes twice), from the generator seeded with ``seed + epoch`` that every rank shares, and splits them over
    the ranks the same way. MONAI's engines call ``set_epoch`` at each epoch start (it is a
    ``DistributedSampler``).

    Args:
        dataset: the dataset (only its length is used).
        samples_per_epoch: draws per epoch over all ranks (None: one pass over the dataset).
        num_replicas: number of ranks (default: the process group's).
        rank: this rank (default: the process group's).
        shuffle: draw at random (else in order, wrapping around).
        seed: seed shared by all ranks.
        drop_last: drop the tail that does not divide over the ranks (else pad it with the first indices).

    Raises:
        ValueError: ``samples_per_epoch`` below 1.

    Example:
        >>> sampler = DistributedSampler(range(10), samples_per_epoch=6, num_replicas=2, rank=1, seed=0)
        >>> len(sampler), len(set(sampler))
        (3, 3)
    """

    def __init__(
        self,
        dataset: Sized,
        samples_per_epoch: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)  # type: ignore[arg-type]
        if samples_per_epoch is not None and int(samples_per_epoch) < 1:
            raise ValueError(f"samples_per_epoch must be >= 1 or None, got {samples_per_epoch}")
        self.samples_per_epoch = None if samples_per_epoch is None else int(samples_per_epoch)
        draws = len(dataset) if self.samples_per_epoch is None else self.samples_per_epoch
        if self.drop_last and draws % self.num_replicas:
            self.num_samples = math.ceil((draws - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(draws / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.draws = draws

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            passes = math.ceil(self.draws / size)
            indices = torch.cat([torch.randperm(size, generator=generator) for _ in range(passes)])[: self.draws]
        else:
            indices = torch.arange(self.draws) % size
        if len(indices) < self.total_size:  # pad with the first indices, as PyTorch's sampler does
            repeats = math.ceil((self.total_size - len(indices)) / len(indices))
            indices = torch.cat([indices, indices.repeat(repeats)[: self.total_size - len(indices)]])
        indices = indices[: self.total_size]
        return iter(indices[self.rank : self.total_size : self.num_replicas].tolist())
