"""The Adam-v2 objective ``λ1 L_loc + λ2 L_comp + λ3 L_dec`` with its named terms.

Taher et al., "Representing Part-Whole Hierarchies in Foundation Models by Learning Localizability,
Composability, and Decomposability from Anatomy via Self-Supervision", CVPR 2024, Eq. 4 (all λ = 1). The terms
are :class:`~modan_monai.losses.dino.DINOLoss` (localizability), :class:`~modan_monai.losses.part_whole.CompositionLoss`
and :class:`~modan_monai.losses.part_whole.DecompositionLoss`; leaving the last two out gives the
localizability-only (plain DINO) phase. :class:`AdamV2Loss` reads the output mapping of
``modan_monai.networks.AdamV2Model`` and returns a mapping with ``"loss"``, the form the project's
``modan_monai.engines.Trainer`` logs term by term (with ``"ln_K"`` beside ``"loc"`` so a collapse, L_loc
stuck at ln K, is visible). An optional KoLeo term (:func:`koleo_loss`; DINOv2), off by default, spreads the
student's global-view backbone features over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .dino import DINOLoss
from .part_whole import CompositionLoss, DecompositionLoss

__all__ = ["AdamV2Loss", "koleo_loss"]


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo entropy estimator ``−mean_i log(min_{j≠i} ‖x_i − x_j‖ + eps)`` of the L2-normalised rows.

    Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019 (Kozachenko-Leonenko differential
    entropy estimator), as DINOv2 uses it on the student's class tokens (Oquab et al., TMLR 2024, Sec. 4,
    ``KoLeoLoss``): the nearest neighbour is taken by the largest inner product of the normalised rows and the
    distance is ``torch.nn.PairwiseDistance(2, eps=1e-8)``. Minimising it pushes the nearest rows apart, so a
    batch cannot collapse to one embedding.

    Args:
        features: ``(N, D)`` features, ``N >= 2``; computed in float32.
        eps: added inside the log (1e-8).

    Returns:
        float32 scalar.

    Raises:
        ValueError: on a shape other than ``(N >= 2, D >= 1)``.
    """
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1:
        raise ValueError(f"koleo_loss expects features (N >= 2, D >= 1), got {tuple(features.shape)}.")
    x = F.normalize(features.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(-2.0)  # below any inner product of unit vectors: never one's own neighbour
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=1e-8)
    return -torch.log(distances + eps).mean()


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
        koleo_weight: weight of the KoLeo term (0: off, no ``"koleo"`` key; DINOv2 uses 0.1): the sum over the
            student's global views of :func:`koleo_loss` over the batch, read from
            ``pred["student_global_features"]`` ``(B, Vg, D)``, as DINOv2 sums it over its global crops.

    Shapes (keys of ``pred``, as ``AdamV2Model`` returns them):
        - ``"student_logits"``: ``(B, Vs, K)``; ``"teacher_logits"``: ``(B, Vt, K)``.
        - ``"composed"``: ``(B, D)``; ``"teacher_whole"``: ``(B, D)`` (when ``composition`` is given).
        - ``"decomposed"``: ``(B, n, D)``; ``"teacher_parts"``: ``(B, n, D)`` (when ``decomposition`` is given).

    Returns (of ``forward``):
        ``{"loss": total, "loc": L_loc, "comp": L_comp, "dec": L_dec, "ln_K": ln K}``, float32 scalars,
        ``"comp"`` / ``"dec"`` only when their loss is given, ``"koleo"`` only when ``koleo_weight > 0``; the terms
        are unweighted.

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
        koleo_weight: float = 0.0,
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
        self.koleo_weight = _check_weight("koleo_weight", koleo_weight)

    def extra_repr(self) -> str:
        return (
            f"loc_weight={self.loc_weight}, comp_weight={self.comp_weight}, dec_weight={self.dec_weight}, "
            f"koleo_weight={self.koleo_weight}"
        )

    @property
    def required_keys(self) -> tuple[str, ...]:
        """The ``pred`` keys the configured terms read."""
        keys = ["student_logits", "teacher_logits"]
        if self.composition is not None:
            keys += ["composed", "teacher_whole"]
        if self.decomposition is not None:
            keys += ["decomposed", "teacher_parts"]
        if self.koleo_weight > 0:
            keys.append("student_global_features")
        return tuple(keys)

    def set_epoch(self, epoch: int) -> None:
        """Select the teacher temperature of the 0-based ``epoch`` (forwards to :meth:`DINOLoss.set_epoch`)."""
        self.dino.set_epoch(epoch)

    def forward(self, pred: Mapping[str, Any], target: Any = None) -> dict[str, torch.Tensor]:
        """Total and named terms of the model output ``pred``; ``target`` is ignored (self-supervised).

        Raises:
            KeyError: when ``pred`` is not a mapping holding :attr:`required_keys`.
            ValueError: with ``koleo_weight > 0``, for global-view features that are not ``(B >= 2, Vg, D)``.
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
        if self.koleo_weight > 0:
            glob = pred["student_global_features"]
            if glob.ndim != 3:
                raise ValueError(
                    f"AdamV2Loss: student_global_features must be (B, Vg, D), got {tuple(glob.shape)}."
                )
            if glob.shape[0] < 2:
                raise ValueError(
                    f"AdamV2Loss: koleo_weight {self.koleo_weight} needs at least 2 images per batch (the nearest "
                    f"neighbour of each), got a batch of {glob.shape[0]}; raise batch_size or set koleo_weight 0."
                )
            terms["koleo"] = sum(koleo_loss(glob[:, v]) for v in range(glob.shape[1]))
            total = total + self.koleo_weight * terms["koleo"]
        ln_k = torch.tensor(math.log(self.dino.out_dim), dtype=torch.float32, device=loc.device)
        return {"loss": total, **terms, "ln_K": ln_k}
