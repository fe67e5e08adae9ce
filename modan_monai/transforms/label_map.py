"""Between one-channel-per-structure masks and a single label map (what annotation clients show and return).

The segmentation bundle predicts one sigmoid channel per structure, so structures may overlap (a clavicle lies on
a lung). MONAI Label clients (3D Slicer, OHIF) show and return one integer label map: background 0 and structure
``c`` (the ``c``-th channel, 0-based) as value ``c + 1``. Where channels overlap, the pixel gets the structure
painted last in ``order`` (default: the channel order, so the structure listed last in the bundle's
``structures`` wins). The reverse direction turns a submitted label map into the channels training needs and
refuses values that are not declared labels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = [
    "StructuresToLabelMapd",
    "check_label_order",
    "label_map_to_structures",
    "label_values",
    "structures_to_label_map",
]


def label_values(names: Sequence[str]) -> dict[str, int]:
    """Label-map value of each structure channel: ``{name: channel + 1}`` (0 is background).

    Example:
        >>> label_values(["heart", "lungs", "clavicles"])
        {'heart': 1, 'lungs': 2, 'clavicles': 3}
    """
    return {str(name): i + 1 for i, name in enumerate(names)}


def check_label_order(order: Sequence[int] | None, num_channels: int) -> list[int]:
    """Validate a painting order of channel indices (``None``: ``0 .. C-1``).

    Raises:
        ValueError: ``order`` is not a permutation of ``range(num_channels)``.
    """
    if order is None:
        return list(range(num_channels))
    out = [int(c) for c in order]
    if sorted(out) != list(range(num_channels)):
        raise ValueError(
            f"label_order must list each of the {num_channels} structure channels 0..{num_channels - 1} once, "
            f"got {list(order)}"
        )
    return out


def structures_to_label_map(masks: torch.Tensor, order: Sequence[int] | None = None) -> torch.Tensor:
    """Paint binary structure channels into one label map.

    Args:
        masks: ``(C, *spatial)`` binary (``> 0.5`` counts as inside).
        order: channel indices in painting order; a later channel overwrites an earlier one where both are set.

    Returns:
        ``(1, *spatial)`` uint8 label map (values ``0 .. C``), a ``MetaTensor`` carrying ``masks``' metadata when
        ``masks`` is one.

    Example:
        >>> m = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]])  # two channels, 1 x 2 pixels
        >>> structures_to_label_map(m).tolist()
        [[[1, 2]]]
        >>> structures_to_label_map(m, order=[1, 0]).tolist()
        [[[1, 1]]]
    """
    if masks.ndim < 2:
        raise ValueError(f"masks must be (C, *spatial), got shape {tuple(masks.shape)}")
    painted = torch.zeros((1, *masks.shape[1:]), dtype=torch.uint8, device=masks.device)
    inside = torch.as_tensor(masks) > 0.5
    for c in check_label_order(order, masks.shape[0]):
        painted[0][inside[c]] = c + 1
    if isinstance(masks, MetaTensor):
        return MetaTensor(painted, meta=dict(masks.meta))
    return painted


def label_map_to_structures(label_map: Any, num_channels: int, *, source: str = "label map") -> np.ndarray:
    """Split a label map into ``num_channels`` binary channels (the inverse of :func:`structures_to_label_map`).

    Args:
        label_map: integer-valued array of any shape (a channel axis of size 1 is kept as is).
        num_channels: number of declared structures ``C`` (values ``1 .. C``).
        source: what to name in errors (the file or datastore label id).

    Returns:
        ``(C, *label_map.shape)`` uint8 array of 0/1.

    Raises:
        ValueError: values that are not integers in ``0 .. C``; the message names ``source`` and the values.
    """
    arr = np.asarray(label_map)
    if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
        raise ValueError(f"{source}: label values must be integers 0..{num_channels}, found non-integer values")
    values = np.unique(arr).astype(np.int64)
    bad = [int(v) for v in values if v < 0 or v > num_channels]
    if bad:
        raise ValueError(
            f"{source}: label values {bad} are not declared labels (0 = background, 1..{num_channels} = the "
            f"structures); found values {values.tolist()}"
        )
    return np.stack([(arr == c + 1) for c in range(num_channels)]).astype(np.uint8)


class StructuresToLabelMapd(MapTransform):
    """Dictionary wrapper of :func:`structures_to_label_map` (replaces ``(C, ...)`` masks by a ``(1, ...)`` map).

    Args:
        keys: keys of the binary channel stacks.
        order: painting order of the channels (see module docstring).
        allow_missing_keys: do not raise if a key is missing.
    """

    def __init__(
        self, keys: KeysCollection = "pred", order: Sequence[int] | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.order = None if order is None else [int(c) for c in order]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = structures_to_label_map(d[key], self.order)
        return d
