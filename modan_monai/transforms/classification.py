"""Pre- and postprocessing of the downstream classifier (the ``classify`` bundle and the CV protocol).

:func:`classification_transforms` is the bundle's ``train#preprocessing`` / ``validate#preprocessing`` (and
``preprocessing`` of ``inference.json``); :func:`classification_postprocessing` its ``postprocessing``. Both are
small MONAI ``Compose`` builders so that the shared load -> normalise -> resize preset can replace their first
three steps without changing the bundle's ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    EnsureTyped,
    RandAffined,
    RandFlipd,
    SelectItemsd,
)

from .presets import load_preprocess_transforms

__all__ = ["classification_postprocessing", "classification_transforms"]


def classification_transforms(
    image_size: int = 64,
    augment: bool = False,
    *,
    label_key: str | None = "label",
    keep_keys: Sequence[str] | None = (),
    ct_window: Sequence[float] = (-1000.0, 1000.0),
    vocabulary: Any = None,
    nan_policy: str = "error",
    flip_axis: int = 0,
    task: str = "binary",
) -> Compose:
    """Load, normalise and resize a manifest row to a ``(1, S, S)`` float image (+ an int64 label, or float32 labels
    for a multi-label ``task``).

    The shared preset (:func:`~modan_monai.transforms.load_preprocess_transforms`: ``LoadManifestImaged`` ->
    ``NormalizeByModalityd`` ([0, 1]) -> ``Resized`` (area)) -> when ``augment``:
    ``RandFlipd`` (horizontal: along ``flip_axis``, p=0.5) and ``RandAffined`` (p=0.5, rotation +-10 degrees,
    scale +-10%) -> ``EnsureTyped`` (plain tensors) -> ``SelectItemsd`` (``image``, the label, ``keep_keys``).

    Args:
        image_size: output side ``S``.
        augment: add the random flip / affine (training).
        label_key: key of the integer label, or ``None`` for unlabelled data (inference); rows without it are
            accepted either way.
        keep_keys: other row keys to keep, when present (e.g. ``"source"`` to name files in errors,
            ``"dataset"`` and ``"case_id"`` for exam-level metrics, ``"filename"`` to name predictions);
            ``None`` keeps every key of the row (no ``SelectItemsd``: a serving request such as MONAI Label's keeps
            the keys it passes).
        ct_window: HU window of CT images.
        vocabulary: modality vocabulary (default vocabulary when ``None``).
        nan_policy: ``"error"`` (NaN/Inf pixels raise naming the row and file) or ``"replace"`` (see
            :class:`~modan_monai.transforms.LoadManifestImaged`).
        flip_axis: spatial axis (MONAI ``spatial_axis``) of the horizontal flip: 0, the width axis of the
            readers' ``(C, x, y)`` images.
        task: the classify bundle's ``task``: ``"binary"`` / ``"multiclass"`` (an int64 class index) or
            ``"multilabel"`` (a float32 ``(L,)`` vector, ``NaN`` where a label is ignored).

    Returns:
        A MONAI ``Compose``.

    Raises:
        ValueError: ``flip_axis`` not 0 or 1, or an unknown ``task``.

    Example:
        >>> t = classification_transforms(32, augment=False, keep_keys=["source"])
        >>> [type(x).__name__ for x in t.transforms][:3]
        ['LoadManifestImaged', 'NormalizeByModalityd', 'Resized']
    """
    if flip_axis not in (0, 1):
        raise ValueError(f"flip_axis must be 0 or 1 (a spatial axis of a 2D image), got {flip_axis}.")
    _check_task(task)
    size = (int(image_size), int(image_size))
    transforms: list[Callable] = load_preprocess_transforms(
        "image", size, vocabulary=vocabulary, ct_window=tuple(ct_window), nan_policy=nan_policy
    )
    if augment:
        transforms += [
            RandFlipd(keys="image", prob=0.5, spatial_axis=flip_axis),
            RandAffined(
                keys="image", prob=0.5, rotate_range=(math.radians(10.0),), scale_range=(0.1, 0.1), padding_mode="zeros"
            ),
        ]
    transforms.append(EnsureTyped(keys="image", dtype=torch.float32, track_meta=False))
    keys = ["image", *(keep_keys or ())]
    if label_key:
        dtype = torch.float32 if task == "multilabel" else torch.long
        transforms.append(EnsureTyped(keys=label_key, dtype=dtype, allow_missing_keys=True))
        keys.append(label_key)
    if keep_keys is not None:
        transforms.append(SelectItemsd(keys=keys, allow_missing_keys=True))
    return Compose(transforms)


def _check_task(task: str) -> None:
    from modan_monai.evaluation.training import check_task  # lazy: the evaluation package imports the transforms

    check_task(task)


def classification_postprocessing(
    num_classes: int = 2, label_key: str | None = "label", task: str = "binary"
) -> Compose:
    """Softmax on ``pred`` and a one-hot label (the form ``monai.handlers.ROCAUC`` expects); sigmoid for multi-label.

    Args:
        num_classes: number of logits.
        label_key: key of the integer label, or ``None`` for unlabelled data (inference: activation only).
        task: ``"binary"`` / ``"multiclass"`` (softmax, one-hot label) or ``"multilabel"`` (one sigmoid per label;
            the ``(L,)`` label, ``NaN`` where ignored, is kept as it is). A model saved without a ``label_type`` is
            binary or multiclass: softmax.

    Returns:
        A MONAI ``Compose`` for an engine's ``postprocessing``.

    Raises:
        ValueError: an unknown ``task``.

    Example:
        >>> out = classification_postprocessing(2)({"pred": torch.zeros(2), "label": torch.tensor(1)})
        >>> out["pred"].tolist(), out["label"].tolist()
        ([0.5, 0.5], [0.0, 1.0])
    """
    _check_task(task)
    if task == "multilabel":
        return Compose([Activationsd(keys="pred", sigmoid=True)])
    transforms: list[Callable] = [Activationsd(keys="pred", softmax=True)]
    if label_key:
        transforms.append(AsDiscreted(keys=label_key, to_onehot=num_classes))
    return Compose(transforms)
