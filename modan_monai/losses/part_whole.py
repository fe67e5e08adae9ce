"""Composability and decomposability losses of Adam-v2 (L_comp and L_dec) from small pure functions.

Taher et al., "Representing Part-Whole Hierarchies in Foundation Models by Learning Localizability,
Composability, and Decomposability from Anatomy via Self-Supervision", CVPR 2024, Eqs. 2-3, with the
conventions of methods.md section 3. Both compare pooled backbone features (no DINO head), the teacher side
L2-normalised and detached (stop-gradient):

- :class:`CompositionLoss`: ``MSE(normalize(h_C(parts)), normalize(teacher feature of the whole))``.
- :class:`DecompositionLoss`: ``MSE(h_D(whole) as n parts, normalize(teacher feature of each part))``, the
  prediction normalised part by part (``norm="per_part"``, default, minimum 0 at a perfect prediction) or as
  one ``n · D`` vector then sliced (``norm="concat"``, the official release; its infimum per element-mean is
  ``(1 − 1/sqrt(n))² / D``, not 0).

Reductions (:func:`squared_error`): ``"mean"`` is torch's ``MSELoss()`` over all elements, the official
choice, so for unit vectors each term is ``(2 − 2 cos) / D <= 4 / D``; ``"per_sample"`` sums the squared
differences over ``D`` (``2 − 2 cos`` for unit vectors) and averages over the rows (and parts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CompositionLoss",
    "DecompositionLoss",
    "normalize_parts",
    "squared_error",
]

_REDUCTIONS = ("mean", "per_sample")
_NORMS = ("per_part", "concat")


def squared_error(prediction: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared error between equally shaped tensors, in float32.

    Args:
        prediction: ``(..., D)``.
        target: ``(..., D)``, the shape of ``prediction``.
        reduction: ``"mean"`` (mean over every element, ``torch.nn.MSELoss()``) or ``"per_sample"`` (sum over
            the last dimension, mean over the leading ones; ``D`` times the ``"mean"`` value).

    Returns:
        float32 scalar.

    Raises:
        ValueError: on an unknown ``reduction``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    prediction, target = prediction.float(), target.float()
    if reduction == "mean":
        return F.mse_loss(prediction, target, reduction="mean")
    return (prediction - target).pow(2).sum(dim=-1).mean()


def normalize_parts(parts: torch.Tensor, norm: str = "per_part") -> torch.Tensor:
    """L2-normalise ``n`` part embeddings ``(B, n, D)`` part by part or as one concatenated vector.

    Args:
        parts: ``(B, n, D)``.
        norm: ``"per_part"`` (each ``(D,)`` part has norm 1) or ``"concat"`` (each ``(n · D,)`` row has norm 1,
            the official release: ``normalize`` of the whole decomposer output, then sliced into parts).

    Returns:
        float32 ``(B, n, D)``.

    Raises:
        ValueError: on an unknown ``norm`` or a ``parts`` that is not 3-D.
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}.")
    if parts.ndim != 3:
        raise ValueError(f"normalize_parts expects parts of shape (B, n, D), got {tuple(parts.shape)}.")
    parts = parts.float()
    if norm == "per_part":
        return F.normalize(parts, dim=-1)
    batch, num_parts, dim = parts.shape
    return F.normalize(parts.reshape(batch, num_parts * dim), dim=-1).reshape(batch, num_parts, dim)


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    return reduction


def _check_same_shape(
    name: str, pred_name: str, pred: torch.Tensor, target_name: str, target: torch.Tensor, layout: str
) -> None:
    ndim = len(layout.split(","))
    if pred.ndim != ndim or target.ndim != ndim:
        raise ValueError(
            f"{name} expects {pred_name} and {target_name} of shape {layout}, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}."
        )
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: {pred_name} {tuple(pred.shape)} and {target_name} {tuple(target.shape)} must have the same "
            "shape."
        )
    if pred.numel() == 0:
        raise ValueError(f"{name}: empty input, {pred_name} {tuple(pred.shape)}.")


class CompositionLoss(nn.Module):
    """Composability loss L_comp of Adam-v2: parts compose the whole (Taher et al., CVPR 2024, Eq. 2).

    ``squared_error(normalize(composed), normalize(teacher_whole).detach(), reduction)``: ``composed`` is the
    composability head's output on the concatenated student features of the n parts, ``teacher_whole`` the
    teacher backbone feature of the whole. Inputs are cast to float32.

    Args:
        reduction: ``"mean"`` (official ``MSELoss()``: ``(2 − 2 cos) / D`` averaged over rows) or
            ``"per_sample"`` (``2 − 2 cos`` averaged over rows).

    Shapes:
        - composed: ``(B, D)``.
        - teacher_whole: ``(B, D)``.
        - output: scalar.

    Raises:
        ValueError: on an unknown ``reduction`` or bad shapes.

    Example:
        >>> loss_fn = CompositionLoss()
        >>> x = torch.randn(4, 16)
        >>> round(float(loss_fn(x, 3 * x)), 6)
        0.0
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def forward(self, composed: torch.Tensor, teacher_whole: torch.Tensor) -> torch.Tensor:
        """L_comp of ``composed (B, D)`` against ``teacher_whole (B, D)`` (stop-gradient); float32 scalar."""
        _check_same_shape(type(self).__name__, "composed", composed, "teacher_whole", teacher_whole, "(B, D)")
        prediction = F.normalize(composed.float(), dim=-1)
        target = F.normalize(teacher_whole.detach().float(), dim=-1)
        return squared_error(prediction, target, self.reduction)


class DecompositionLoss(nn.Module):
    """Decomposability loss L_dec of Adam-v2: the whole decomposes into its parts (Taher et al., CVPR 2024, Eq. 3).

    ``squared_error(normalize_parts(decomposed, norm), normalize(teacher_parts).detach(), reduction)``:
    ``decomposed`` is the decomposability head's output on the student feature of the whole, reshaped into n
    parts (row-major TL, TR, BL, BR); ``teacher_parts`` are the teacher backbone features of the parts, each
    normalised. With ``reduction="mean"`` this equals the official mean over parts of per-part ``MSELoss()``.

    Args:
        norm: ``"per_part"`` (default: each predicted part normalised; minimum 0 at a perfect prediction) or
            ``"concat"`` (official: the ``n · D`` prediction normalised as one vector, then sliced).
        reduction: ``"mean"`` (official) or ``"per_sample"`` (see :func:`squared_error`).

    Shapes:
        - decomposed: ``(B, n, D)``.
        - teacher_parts: ``(B, n, D)``.
        - output: scalar.

    Raises:
        ValueError: on an unknown ``norm`` / ``reduction`` or bad shapes.

    Example:
        >>> loss_fn = DecompositionLoss()
        >>> x = torch.randn(4, 4, 16)
        >>> round(float(loss_fn(2 * x, x)), 6)
        0.0
    """

    def __init__(self, norm: str = "per_part", reduction: str = "mean") -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}.")
        self.norm = norm
        self.reduction = _check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, reduction={self.reduction!r}"

    def forward(self, decomposed: torch.Tensor, teacher_parts: torch.Tensor) -> torch.Tensor:
        """L_dec of ``decomposed (B, n, D)`` against ``teacher_parts (B, n, D)`` (stop-gradient); float32 scalar."""
        _check_same_shape(
            type(self).__name__, "decomposed", decomposed, "teacher_parts", teacher_parts, "(B, n, D)"
        )
        prediction = normalize_parts(decomposed, self.norm)
        target = F.normalize(teacher_parts.detach().float(), dim=-1)
        return squared_error(prediction, target, self.reduction)
