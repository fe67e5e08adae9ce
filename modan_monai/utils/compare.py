"""Compare two saved states (checkpoints, state dicts) entry by entry, bit for bit."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["max_abs_difference", "state_differences"]


def _pairs(a: Any, b: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """``(path, a_leaf, b_leaf)`` for every leaf; a structural mismatch is one pair of the containers."""
    if isinstance(a, Mapping) and isinstance(b, Mapping) and set(a) == set(b):
        for key in a:
            yield from _pairs(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _pairs(x, y, f"{path}[{i}]")
    else:
        yield path, a, b


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        # the bytes themselves: NaN equals the same NaN, -0.0 differs from 0.0
        return (
            isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
            and a.shape == b.shape and torch.equal(_bits(a), _bits(b))
        )
    if isinstance(a, (Mapping, list, tuple)) or isinstance(b, (Mapping, list, tuple)):
        return False  # containers reach here only when their keys or lengths differ
    return type(a) is type(b) and (a == b or (a != a and b != b))  # NaN equals NaN here


def state_differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths at which two nested states differ (tensors compared exactly, dtype and shape included).

    Args:
        a: a state: nested mappings / lists / tuples of tensors and plain values.
        b: the other state.
        path: prefix of the returned paths.

    Returns:
        The differing paths (``[]`` when equal bit for bit), e.g. ``["['network']['fc.weight']"]``.

    Example:
        >>> import torch
        >>> state_differences({"w": torch.ones(2), "epoch": 3}, {"w": torch.ones(2), "epoch": 4})
        ["['epoch']"]
    """
    return [p for p, x, y in _pairs(a, b, path) if not _equal(x, y)]


def max_abs_difference(a: Any, b: Any) -> float:
    """The largest absolute difference between floating-point tensors at the same path of two states.

    Args:
        a: a state (e.g. a network's state dict).
        b: the other state.

    Returns:
        The maximum over all floating tensors of equal shape (0.0 when there are none).

    Example:
        >>> import torch
        >>> max_abs_difference({"w": torch.zeros(2)}, {"w": torch.tensor([0.0, -0.5])})
        0.5
    """
    largest = 0.0
    for _, x, y in _pairs(a, b, ""):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.is_floating_point() and x.shape == y.shape:
            if x.numel():
                largest = max(largest, float((x.double() - y.double()).abs().max()))
    return largest
