"""The Adam-v2 objective ``λ1 L_loc + λ2 L_comp + λ3 L_dec`` with its named terms.

Taher et al., "Representing Part-Whole Hierarchies in Foundation Models by Learning Localizability,
Composability, and Decomposability from Anatomy via Self-Supervision", CVPR 2024, Eq. 4 (all λ = 1). The terms
are :class:`~modan_monai.losses.dino.DINOLoss` (localizability), :class:`~modan_monai.losses.part_whole.CompositionLoss`
and :class:`~modan_monai.losses.part_whole.DecompositionLoss`; leaving the last two out gives the
localizability-only (plain DINO) phase. :class:`AdamV2Loss` reads the output mapping of
``modan_monai.networks.AdamV2Model`` and returns a mapping with ``"loss"``, the form the project's
``modan_monai.engines.Trainer`` logs term by term (with ``"ln_K"`` beside ``"loc"`` so a collapse, L_loc
stuck at ln K, is visible).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .dino import DINOLoss
from .part_whole import CompositionLoss, DecompositionLoss

__all__ = ["AdamV2Loss"]


def _check_weight(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


class AdamV2Loss(nn.Module):
    """Adam-v2 loss ``loc_weight · L_loc + comp_weight · L_comp + dec_weight · L_dec`` (Taher et al., CVPR 2024).

    Args:
        dino: the localizability loss (holds the centre buffer, saved with this module's state dict).
        composition: the composability loss, or None (DINO phase: no ``"comp"`` term).
        decomposition: the decomposability loss, or None (DINO phase: no ``"dec"`` term).
        loc_weight: λ1 (1.0).
        comp_weight: λ2 (1.0).
        dec_weight: λ3 (1.0).

    Shapes (keys of ``pred``, as ``AdamV2Model`` returns them):
        - ``"student_logits"``: ``(B, Vs, K)``; ``"teacher_logits"``: ``(B, Vt, K)``.
        - ``"composed"``: ``(B, D)``; ``"teacher_whole"``: ``(B, D)`` (when ``composition`` is given).
        - ``"decomposed"``: ``(B, n, D)``; ``"teacher_parts"``: ``(B, n, D)`` (when ``decomposition`` is given).

    Returns (of ``forward``):
        ``{"loss": total, "loc": L_loc, "comp": L_comp, "dec": L_dec, "ln_K": ln K}``, float32 scalars,
        ``"comp"`` / ``"dec"`` only when their loss is given; the terms are unweighted.

    Raises:
        ValueError: on a bad weight or a ``dino`` that is not a ``DINOLoss``.
        KeyError: when ``pred`` lacks a key a configured term needs (names the missing and the present keys).

    Example:
        >>> loss_fn = AdamV2Loss(DINOLoss(out_dim=8), CompositionLoss(), DecompositionLoss())
        >>> pred = {"student_logits": torch.randn(2, 3, 8), "teacher_logits": torch.randn(2, 1, 8),
        ...         "composed": torch.randn(2, 5), "teacher_whole": torch.randn(2, 5),
        ...         "decomposed": torch.randn(2, 4, 5), "teacher_parts": torch.randn(2, 4, 5)}
        >>> sorted(loss_fn(pred))
        ['comp', 'dec', 'ln_K', 'loc', 'loss']
    """

    def __init__(
        self,
        dino: DINOLoss,
        composition: CompositionLoss | None = None,
        decomposition: DecompositionLoss | None = None,
        loc_weight: float = 1.0,
        comp_weight: float = 1.0,
        dec_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(dino, DINOLoss):
            raise ValueError(f"dino must be a modan_monai.losses.DINOLoss, got {type(dino).__name__}.")
        self.dino = dino
        self.composition = composition
        self.decomposition = decomposition
        self.loc_weight = _check_weight("loc_weight", loc_weight)
        self.comp_weight = _check_weight("comp_weight", comp_weight)
        self.dec_weight = _check_weight("dec_weight", dec_weight)

    def extra_repr(self) -> str:
        return f"loc_weight={self.loc_weight}, comp_weight={self.comp_weight}, dec_weight={self.dec_weight}"

    @property
    def required_keys(self) -> tuple[str, ...]:
        """The ``pred`` keys the configured terms read."""
        keys = ["student_logits", "teacher_logits"]
        if self.composition is not None:
            keys += ["composed", "teacher_whole"]
        if self.decomposition is not None:
            keys += ["decomposed", "teacher_parts"]
        return tuple(keys)

    def set_epoch(self, epoch: int) -> None:
        """Select the teacher temperature of the 0-based ``epoch`` (forwards to :meth:`DINOLoss.set_epoch`)."""
        self.dino.set_epoch(epoch)

    def forward(self, pred: Mapping[str, Any], target: Any = None) -> dict[str, torch.Tensor]:
        """Total and named terms of the model output ``pred``; ``target`` is ignored (self-supervised).

        Raises:
            KeyError: when ``pred`` is not a mapping holding :attr:`required_keys`.
        """
        if not isinstance(pred, Mapping):
            raise KeyError(
                f"AdamV2Loss expects the model output mapping with keys {list(self.required_keys)}, got "
                f"{type(pred).__name__}."
            )
        missing = [key for key in self.required_keys if key not in pred]
        if missing:
            raise KeyError(
                f"AdamV2Loss: the model output lacks {missing} (needed by the configured terms); keys present: "
                f"{sorted(map(str, pred))}."
            )
        loc = self.dino(pred["student_logits"], pred["teacher_logits"])
        terms = {"loc": loc}
        total = self.loc_weight * loc
        if self.composition is not None:
            terms["comp"] = self.composition(pred["composed"], pred["teacher_whole"])
            total = total + self.comp_weight * terms["comp"]
        if self.decomposition is not None:
            terms["dec"] = self.decomposition(pred["decomposed"], pred["teacher_parts"])
            total = total + self.dec_weight * terms["dec"]
        ln_k = torch.tensor(math.log(self.dino.out_dim), dtype=torch.float32, device=loc.device)
        return {"loss": total, **terms, "ln_K": ln_k}
