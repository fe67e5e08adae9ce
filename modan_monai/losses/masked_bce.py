"""Binary cross-entropy on logits for multi-label classification, with masked (ignored) labels and positive weights.

Uncertain labels under the ``ignore`` policy (:mod:`modan_monai.evaluation.labels`) are ``NaN`` targets: they are
left out of the loss, which is the mean over the labels that count. :func:`balanced_pos_weight` gives the usual
per-label weight of the positives, negatives / positives of the training rows, and :func:`classification_loss` picks
the classify bundle's loss from its ``task`` id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedBCEWithLogitsLoss", "balanced_pos_weight", "classification_loss"]


class MaskedBCEWithLogitsLoss(nn.Module):
    """``torch.nn.BCEWithLogitsLoss`` averaged over the targets that are not ``NaN``.

    The loss of one entry is ``-[w_l y log s(x) + (1 - y) log(1 - s(x))]`` (``w_l`` the positive weight of label
    ``l``, ``s`` the sigmoid); entries whose target is ``NaN`` (an uncertain label ignored) weigh 0, and the sum is
    divided by the number of entries that count. Without ``NaN`` it equals ``BCEWithLogitsLoss(pos_weight=w)``.

    Shapes: ``logits`` and ``targets`` ``(N, L)``; the loss is a scalar.

    Args:
        pos_weight: ``(L,)`` weights of the positives (``None``: 1).

    Raises:
        ValueError: (forward) shapes that differ, or a batch where every target is ``NaN`` (nothing to learn from).

    Example:
        >>> loss = MaskedBCEWithLogitsLoss()
        >>> loss(torch.zeros(1, 2), torch.tensor([[1.0, float("nan")]])).item() == F.softplus(torch.tensor(0.0)).item()
        True
    """

    def __init__(self, pos_weight: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        weight = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32).reshape(-1)
        if weight is not None and not (torch.isfinite(weight).all() and (weight > 0).all()):
            raise ValueError(f"pos_weight must be finite and > 0 per label, got {weight.tolist()}.")
        self.register_buffer("pos_weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean BCE over the non-``NaN`` targets."""
        if logits.shape != targets.shape:
            raise ValueError(f"logits of shape {tuple(logits.shape)} but targets of shape {tuple(targets.shape)}.")
        targets = targets.to(logits.dtype)
        mask = ~torch.isnan(targets)
        counted = mask.sum()
        if counted == 0:
            raise ValueError(f"every target of the batch ({tuple(targets.shape)}) is NaN (ignored): no label to learn.")
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device, logits.dtype)
        loss = F.binary_cross_entropy_with_logits(
            logits, torch.where(mask, targets, torch.zeros_like(targets)), weight=mask.to(logits.dtype),
            pos_weight=pos_weight, reduction="sum",
        )
        return loss / counted


def balanced_pos_weight(labels: Sequence[Sequence[float]] | np.ndarray, names: Sequence[str]) -> list[float]:
    """Per-label positive weight ``negatives / positives`` of the training labels (``NaN`` entries not counted).

    Args:
        labels: ``(N, L)`` 1.0 / 0.0 / ``NaN`` training labels.
        names: the ``L`` label names (for the message).

    Returns:
        ``L`` weights.

    Raises:
        ValueError: a shape that does not match ``names``, or a label without a positive or a negative (naming it).

    Example:
        >>> balanced_pos_weight([[1.0, 0.0], [0.0, 1.0], [0.0, float("nan")]], ["a", "b"])
        [2.0, 1.0]
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != len(names):
        raise ValueError(f"labels of shape {y.shape}: expected (N, {len(names)}), one column per label of "
                         f"{list(names)}.")
    known = ~np.isnan(y)
    positives = np.where(known, y, 0.0).sum(axis=0)
    negatives = known.sum(axis=0) - positives
    undefined = [str(n) for n, p, q in zip(names, positives, negatives) if p == 0 or q == 0]
    if undefined:
        raise ValueError(f"pos_weight 'balanced': label(s) {undefined} have no positive or no negative among the "
                         f"{len(y)} training rows; give config id 'pos_weight' as a list of weights instead.")
    return [float(q / p) for p, q in zip(positives, negatives)]


def classification_loss(
    task: str,
    pos_weight: str | Sequence[float] | None = None,
    train_labels: Sequence[Any] | None = None,
    class_names: Sequence[str] | None = None,
) -> nn.Module:
    """The classify bundle's loss for its ``task``: cross-entropy (binary, multiclass) or masked BCE (multilabel).

    Args:
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        pos_weight: multilabel only: ``None``, ``"balanced"`` (:func:`balanced_pos_weight` of ``train_labels``) or
            one weight per label.
        train_labels: the training rows' labels (lists of 1.0 / 0.0 / ``NaN``), for ``"balanced"``.
        class_names: the label names (their number is ``L``).

    Returns:
        ``torch.nn.CrossEntropyLoss()`` or :class:`MaskedBCEWithLogitsLoss`.

    Raises:
        ValueError: naming config id ``task`` or ``pos_weight``: an unknown task, a ``pos_weight`` for a task other
            than multilabel, an unknown string, or a list whose length is not the number of labels.
    """
    from modan_monai.evaluation.training import check_task  # lazy: the evaluation package imports the losses

    check_task(task)
    if task != "multilabel":
        if pos_weight is not None:
            raise ValueError(f"config id 'pos_weight' ({pos_weight!r}) is for task 'multilabel', not {task!r}.")
        return nn.CrossEntropyLoss()
    names = [str(n) for n in class_names or []]
    if pos_weight is None:
        return MaskedBCEWithLogitsLoss()
    if isinstance(pos_weight, str):
        if pos_weight != "balanced":
            raise ValueError(f"config id 'pos_weight' is {pos_weight!r}: give null, 'balanced' or a list of "
                             f"{len(names)} weights (labels {names}).")
        return MaskedBCEWithLogitsLoss(balanced_pos_weight(list(train_labels or []), names))
    weights = [float(w) for w in pos_weight]
    if len(weights) != len(names):
        raise ValueError(f"config id 'pos_weight' gives {len(weights)} weights {weights} for {len(names)} labels "
                         f"{names}.")
    return MaskedBCEWithLogitsLoss(weights)
