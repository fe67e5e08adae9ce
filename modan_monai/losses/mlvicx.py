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

    Takes the output of :class:`~modan_monai.networks.MLVICXModel` so that it plugs into MONAI's
    ``SupervisedTrainer`` as ``loss_function(pred, target)`` (the target is ignored: MLVICX is label-free).
    Everything is computed in float32.

    After every call :attr:`last_terms` holds the detached terms, named ``global/invariance``,
    ``global/variance``, ``global/covariance``, ``global/loss``, the same for ``multilevel/``, and ``loss`` (the
    total), for :class:`~modan_monai.handlers.LossTermsTensorBoardHandler`. A non-finite term stops training with
    a ``FloatingPointError`` naming it (and the iteration, when a handler sets :attr:`iteration`).

    Args:
        multilevel_weight: ``λ`` (1).
        sim_weight: VICReg invariance weight (25).
        var_weight: VICReg variance weight (25).
        cov_weight: VICReg covariance weight (1).
        eps: VICReg variance epsilon (1e-4).
        gather_distributed: gather both branches from all ranks (see :class:`VICRegLoss`).
        check_finite: raise on a non-finite term (default True).

    Shapes:
        - pred: ``{"global": (N, V, D), "multilevel": (N, V, D')}`` with ``V >= 2`` (views 0 and 1 are used), or
          ``{"global": ((N, D), (N, D)), ...}`` pairs.
        - output: scalar.

    Raises:
        ValueError: when a key is missing or shapes are wrong.
        FloatingPointError: when a term is NaN or infinite.

    Example:
        >>> loss_fn = MLVICXLoss()
        >>> pred = {"global": torch.randn(8, 2, 32), "multilevel": torch.randn(8, 2, 32)}
        >>> loss_fn(pred).shape
        torch.Size([])
    """

    def __init__(
        self,
        multilevel_weight: float = 1.0,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if multilevel_weight < 0:
            raise ValueError(f"multilevel_weight must be >= 0, got {multilevel_weight}.")
        self.multilevel_weight = float(multilevel_weight)
        self.vicreg = VICRegLoss(sim_weight, var_weight, cov_weight, eps, gather_distributed=gather_distributed)
        self.check_finite = bool(check_finite)
        self.last_terms: dict[str, torch.Tensor] = {}
        #: set by a handler (``LossTermsTensorBoardHandler``) to name the iteration in errors; ``None``: unknown.
        self.iteration: int | None = None

    def extra_repr(self) -> str:
        return f"multilevel_weight={self.multilevel_weight}, check_finite={self.check_finite}"

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

    def forward(self, pred: Mapping[str, torch.Tensor], target: torch.Tensor | None = None) -> torch.Tensor:
        """``L_G + λ · L_L`` for the model output ``pred``; ``target`` is ignored.

        Args:
            pred: ``{"global": (N, V, D), "multilevel": (N, V, D')}``.
            target: unused (the engine passes ``None``).

        Returns:
            Float32 scalar.

        Raises:
            ValueError: on a missing key or a bad shape.
            FloatingPointError: naming the first non-finite term.
        """
        if not isinstance(pred, Mapping):
            raise ValueError(f"MLVICXLoss expects the dict output of MLVICXModel, got {type(pred).__name__}.")
        terms: dict[str, torch.Tensor] = {}
        for level in _LEVELS:
            for name, value in self.vicreg.terms(*self._pair(pred, level)).items():
                terms[f"{level}/{name}"] = value
        total = terms["global/loss"] + self.multilevel_weight * terms["multilevel/loss"]
        terms["loss"] = total
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        if self.check_finite:
            self._raise_if_not_finite()
        return total

    def _raise_if_not_finite(self) -> None:
        names = list(self.last_terms)
        values = torch.stack([self.last_terms[n] for n in names])
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        # unweighted terms first, so that the error names the source rather than a total
        bad = [n for n, ok in zip(names, finite.tolist()) if not ok]
        first = next((n for n in bad if not n.endswith("loss")), bad[0])
        where = f" at iteration {self.iteration}" if self.iteration is not None else ""
        raise FloatingPointError(
            f"MLVICX term {first!r} is {float(self.last_terms[first])}{where} (non-finite terms: {bad}); "
            "lower the learning rate or check the input data."
        )
