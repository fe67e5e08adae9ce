"""MLVICX loss: VICReg on the global embeddings plus λ · VICReg on the multi-level embeddings."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .vicreg import VICRegLoss

__all__ = ["MLVICXLoss"]

_LEVELS = ("global", "multilevel")


class MLVICXLoss(nn.Module):
    """``L = L_G + λ · L_L`` (Singh et al. 2024, Eq. 5): VICReg of the global ``(z, z')`` and multi-level ``(m, m')``.

    Takes the output of :class:`~modan_monai.networks.MLVICXModel` so that it plugs into the project's engine
    (:class:`modan_monai.engines.Trainer`) as ``loss_function(pred, target)`` (the target is ignored: MLVICX is
    label-free). Everything is computed in float32.

    Returns the total and its named terms, ``{"loss", "global/invariance", "global/variance",
    "global/covariance", "global/loss", "multilevel/..."}``: the engine steps on ``"loss"`` and logs every term
    (TensorBoard ``loss_terms/...``), and stops the run naming the first non-finite one.

    Args:
        multilevel_weight: ``λ`` (1).
        sim_weight: VICReg invariance weight (25).
        var_weight: VICReg variance weight (25).
        cov_weight: VICReg covariance weight (1).
        eps: VICReg variance epsilon (1e-4).
        gather_distributed: gather both branches from all ranks (see :class:`VICRegLoss`).

    Shapes:
        - pred: ``{"global": (N, V, D), "multilevel": (N, V, D')}`` with ``V >= 2`` (views 0 and 1 are used), or
          ``{"global": ((N, D), (N, D)), ...}`` pairs.
        - output: dict of float32 scalars.

    Raises:
        ValueError: when a key is missing or shapes are wrong.

    Example:
        >>> loss_fn = MLVICXLoss()
        >>> pred = {"global": torch.randn(8, 2, 32), "multilevel": torch.randn(8, 2, 32)}
        >>> out = loss_fn(pred)
        >>> out["loss"].shape, sorted(out)[:2]
        (torch.Size([]), ['global/covariance', 'global/invariance'])
    """

    def __init__(
        self,
        multilevel_weight: float = 1.0,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if multilevel_weight < 0:
            raise ValueError(f"multilevel_weight must be >= 0, got {multilevel_weight}.")
        self.multilevel_weight = float(multilevel_weight)
        self.vicreg = VICRegLoss(sim_weight, var_weight, cov_weight, eps, gather_distributed=gather_distributed)

    def extra_repr(self) -> str:
        return f"multilevel_weight={self.multilevel_weight}"

    @staticmethod
    def _pair(pred: Mapping[str, torch.Tensor], key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in pred:
            raise ValueError(f"MLVICXLoss: prediction has no {key!r} entry; keys present: {sorted(pred)}.")
        value = pred[key]
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(f"MLVICXLoss: {key!r} must be a pair of (N, D) tensors, got {len(value)} items.")
            return value[0], value[1]
        if value.ndim != 3 or value.shape[1] < 2:
            raise ValueError(f"MLVICXLoss: {key!r} must have shape (N, V >= 2, D), got {tuple(value.shape)}.")
        return value[:, 0], value[:, 1]

    def forward(self, pred: Mapping[str, torch.Tensor], target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``L_G + λ · L_L`` for the model output ``pred`` and its terms; ``target`` is ignored.

        Args:
            pred: ``{"global": (N, V, D), "multilevel": (N, V, D')}``.
            target: unused (the engine passes ``None``).

        Returns:
            ``{"loss": total, "<level>/<term>": ...}``, float32 scalars (the total with gradients).

        Raises:
            ValueError: on a missing key or a bad shape.
        """
        if not isinstance(pred, Mapping):
            raise ValueError(f"MLVICXLoss expects the dict output of MLVICXModel, got {type(pred).__name__}.")
        terms: dict[str, torch.Tensor] = {}
        for level in _LEVELS:
            for name, value in self.vicreg.terms(*self._pair(pred, level)).items():
                terms[f"{level}/{name}"] = value
        return {"loss": terms["global/loss"] + self.multilevel_weight * terms["multilevel/loss"], **terms}
