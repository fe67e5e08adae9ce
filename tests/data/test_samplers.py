"""``modan_monai.data.DistributedSampler``: PyTorch's sampler without ``samples_per_epoch``, seeded draws with it.

Checked: with ``samples_per_epoch=None`` every rank's indices and length equal ``torch.utils.data.DistributedSampler``
(several dataset sizes, world sizes, ``drop_last``, ``shuffle`` and epochs); with ``samples_per_epoch`` the lengths,
that the ranks together take the draws a single process takes, that no image comes twice before every image came
once, that the same seed gives the same indices and ``set_epoch`` other ones, and the error on a value below 1.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DistributedSampler as TorchDistributedSampler

from modan_monai.data import DistributedSampler


def rank_indices(size: int, world: int, **kwargs) -> list[list[int]]:
    """Every rank's indices for a dataset of ``size`` items."""
    return [list(DistributedSampler(range(size), num_replicas=world, rank=r, **kwargs)) for r in range(world)]


def interleave(per_rank: list[list[int]]) -> list[int]:
    """The global order the ranks' strided slices were taken from (rank r holds items r, r + world, ...)."""
    return [per_rank[r][i] for i in range(len(per_rank[0])) for r in range(len(per_rank))]


@pytest.mark.parametrize("size", [1, 5, 10, 11])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [True, False])
def test_without_samples_per_epoch_equals_torch_sampler(size: int, world: int, drop_last: bool, shuffle: bool) -> None:
    dataset = range(size)
    for rank in range(world):
        options = {"num_replicas": world, "rank": rank, "shuffle": shuffle, "seed": 7, "drop_last": drop_last}
        ours, ref = DistributedSampler(dataset, **options), TorchDistributedSampler(dataset, **options)
        assert (ours.num_samples, ours.total_size, len(ours)) == (ref.num_samples, ref.total_size, len(ref))
        for epoch in (0, 1, 3):
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert list(ours) == list(ref), (rank, epoch)
            assert len(list(ours)) == len(ours)


@pytest.mark.parametrize(
    "size, samples, world, drop_last, expected_len",
    [
        (10, 6, 2, False, 3),
        (10, 7, 2, False, 4),  # padded, as PyTorch pads the tail
        (10, 7, 2, True, 3),  # tail dropped
        (4, 12, 3, False, 4),  # more draws than images
        (5, 1, 2, True, 0),
        (5, 1, 2, False, 1),
    ],
)
def test_samples_per_epoch_lengths(size: int, samples: int, world: int, drop_last: bool, expected_len: int) -> None:
    per_rank = rank_indices(size, world, samples_per_epoch=samples, drop_last=drop_last, seed=3)
    for r, indices in enumerate(per_rank):
        sampler = DistributedSampler(range(size), samples_per_epoch=samples, num_replicas=world, rank=r,
                                     drop_last=drop_last)
        assert len(sampler) == expected_len == len(indices)
        assert all(0 <= i < size for i in indices)


@pytest.mark.parametrize("size, samples, world", [(10, 6, 2), (7, 21, 3), (5, 12, 4), (8, 8, 4), (3, 10, 2)])
@pytest.mark.parametrize("epoch", [0, 2])
def test_ranks_together_take_the_single_process_draws(size: int, samples: int, world: int, epoch: int) -> None:
    single = DistributedSampler(range(size), samples_per_epoch=samples, num_replicas=1, rank=0, seed=11)
    single.set_epoch(epoch)
    draws = list(single)
    assert len(draws) == samples
    samplers = [
        DistributedSampler(range(size), samples_per_epoch=samples, num_replicas=world, rank=r, seed=11)
        for r in range(world)
    ]
    for s in samplers:
        s.set_epoch(epoch)
    per_rank = [list(s) for s in samplers]
    total = math.ceil(samples / world) * world
    global_order = interleave(per_rank)
    assert global_order[:samples] == draws
    assert len(global_order) == total
    assert Counter(i for indices in per_rank for i in indices) >= Counter(draws)


@pytest.mark.parametrize("size, samples", [(10, 4), (10, 10), (6, 15), (4, 17)])
def test_no_image_twice_before_every_image_once(size: int, samples: int) -> None:
    draws = list(DistributedSampler(range(size), samples_per_epoch=samples, num_replicas=1, rank=0, seed=5))
    for start in range(0, samples, size):  # whole permutations, then part of one
        block = draws[start : start + size]
        assert len(set(block)) == len(block)
    counts = Counter(draws)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert len(counts) == min(size, samples)


def test_without_shuffle_draws_wrap_around_in_order() -> None:
    per_rank = rank_indices(4, 2, samples_per_epoch=10, shuffle=False)
    assert interleave(per_rank) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_same_seed_same_indices_and_set_epoch_changes_them() -> None:
    def sampler(seed: int) -> DistributedSampler:
        return DistributedSampler(range(50), samples_per_epoch=30, num_replicas=2, rank=1, seed=seed)

    a, b = sampler(4), sampler(4)
    assert list(a) == list(b)
    assert list(a) != list(sampler(5))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    a.set_epoch(0)
    assert list(a) == first


@pytest.mark.parametrize("samples", [0, -3])
def test_samples_per_epoch_below_one_raises(samples: int) -> None:
    with pytest.raises(ValueError, match="samples_per_epoch"):
        DistributedSampler(range(10), samples_per_epoch=samples, num_replicas=2, rank=0)


def test_draws_are_shared_by_ranks_not_by_torch_global_state() -> None:
    torch.manual_seed(0)
    first = rank_indices(20, 2, samples_per_epoch=12, seed=9)
    torch.manual_seed(1)
    assert rank_indices(20, 2, samples_per_epoch=12, seed=9) == first
