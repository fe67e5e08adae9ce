"""VICReg loss (variance-invariance-covariance regularisation) from small pure functions.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
ICLR 2022, with the conventions of the official code (also lightly's), as fixed in methods.md section 2:

- :func:`invariance_term`: mean squared error over all elements (``F.mse_loss``), not a per-row sum.
- :func:`variance_term`: ``mean_j relu(1 − sqrt(Var_j(Z) + eps))`` with the unbiased variance; the loss uses the
  mean of the two branches.
- :func:`covariance_term`: ``Σ_{i≠j} C_ij² / d`` with ``C = (Z − mean)ᵀ(Z − mean) / (N − 1)``; the loss uses
  the sum of the two branches.
- ``loss = 25 · inv + 25 · var + 1 · cov``, computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.distributed import distributed_world, gather_batch

__all__ = ["VICRegLoss", "covariance_term", "invariance_term", "variance_term", "vicreg_terms"]


def invariance_term(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the two branches over all ``N · D`` elements.

    Args:
        z_a: ``(N, D)``.
        z_b: ``(N, D)``.

    Returns:
        Scalar.
    """
    return F.mse_loss(z_a, z_b)


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the standard deviation of every dimension: ``mean_j relu(1 − sqrt(Var_j(z) + eps))``.

    Args:
        z: ``(N, D)`` with ``N >= 2``; the variance is unbiased (divides by ``N − 1``).
        eps: added to the variance under the square root.

    Returns:
        Scalar in ``[0, 1)``; ``1 − sqrt(eps)`` (0.99 for ``eps = 1e-4``) for a constant batch.
    """
    std = torch.sqrt(z.var(dim=0, unbiased=True) + eps)
    return F.relu(1.0 - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal covariances divided by the dimension: ``Σ_{i≠j} C_ij² / D``.

    Args:
        z: ``(N, D)`` with ``N >= 2``; ``C = (z − mean)ᵀ(z − mean) / (N − 1)``.

    Returns:
        Scalar ``>= 0``.
    """
    num, dim = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (num - 1)
    off_diagonal = cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()
    return off_diagonal / dim


def vicreg_terms(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """The three unweighted VICReg terms of a pair of branches (inputs are used as given, no dtype change).

    Args:
        z_a: ``(N, D)`` embeddings of the first views.
        z_b: ``(N, D)`` embeddings of the second views.
        eps: variance epsilon.

    Returns:
        ``{"invariance": inv, "variance": (var(z_a) + var(z_b)) / 2, "covariance": cov(z_a) + cov(z_b)}``.
    """
    return {
        "invariance": invariance_term(z_a, z_b),
        "variance": 0.5 * (variance_term(z_a, eps) + variance_term(z_b, eps)),
        "covariance": covariance_term(z_a) + covariance_term(z_b),
    }


def _check_pair(z_a: torch.Tensor, z_b: torch.Tensor, name: str = "VICRegLoss") -> None:
    if z_a.ndim != 2 or z_b.ndim != 2:
        raise ValueError(f"{name} expects z_a and z_b of shape (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}.")
    if z_a.shape != z_b.shape:
        raise ValueError(f"{name}: z_a {tuple(z_a.shape)} and z_b {tuple(z_b.shape)} must have the same shape.")
    if z_a.shape[0] < 2:
        raise ValueError(
            f"{name} needs N >= 2 rows for the unbiased variance and covariance, got shape {tuple(z_a.shape)}."
        )
    if not z_a.is_floating_point() or not z_b.is_floating_point():
        raise ValueError(f"{name} expects floating point inputs, got {z_a.dtype} and {z_b.dtype}.")


class VICRegLoss(nn.Module):
    """VICReg loss ``sim_weight · inv + var_weight · var + cov_weight · cov`` (Bardes et al., ICLR 2022).

    Uses the official code's conventions (module docstring / methods.md section 2): ``inv`` is ``F.mse_loss``,
    ``var = (var(Z) + var(Z')) / 2`` with the unbiased variance, ``cov = cov(Z) + cov(Z')`` with
    ``cov(Z) = Σ_{i≠j} C_ij² / D``. Inputs are cast to float32 (half-precision variances underflow).

    :meth:`terms` returns the unweighted terms (``invariance``, ``variance``, ``covariance``) and the total
    (``loss``) for logging.

    Args:
        sim_weight: weight of the invariance term (25).
        var_weight: weight of the variance term (25).
        cov_weight: weight of the covariance term (1).
        eps: added to the variance under the square root (1e-4).
        gather_distributed: when True and ``torch.distributed`` is initialised with ``world_size > 1``, both
            branches are gathered from every rank (with gradients, as the official VICReg ``FullGatherLayer``)
            and the loss is computed on the global batch; with DDP's gradient averaging the parameter gradients
            equal those of the single-process loss on the global batch. Every rank must pass the same ``N``.
            No effect without a process group.

    Shapes:
        - z_a, z_b: ``(N, D)``, ``N >= 2``.
        - output: scalar.

    Raises:
        ValueError: on negative weights, non-positive ``eps`` or bad input shapes.

    Example:
        >>> loss_fn = VICRegLoss()
        >>> z_a, z_b = torch.randn(16, 32), torch.randn(16, 32)
        >>> loss_fn(z_a, z_b).shape
        torch.Size([])
    """

    def __init__(
        self,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}.")
        self.sim_weight = float(sim_weight)
        self.var_weight = float(var_weight)
        self.cov_weight = float(cov_weight)
        self.eps = float(eps)
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:
        return (
            f"sim_weight={self.sim_weight}, var_weight={self.var_weight}, cov_weight={self.cov_weight}, "
            f"eps={self.eps}, gather_distributed={self.gather_distributed}"
        )

    def terms(self, z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted terms and the weighted total ``"loss"`` (with gradients), in float32.

        Args:
            z_a: ``(N, D)`` first-view embeddings.
            z_b: ``(N, D)`` second-view embeddings.

        Returns:
            ``{"invariance", "variance", "covariance", "loss"}`` scalars.

        Raises:
            ValueError: on bad shapes.
        """
        _check_pair(z_a, z_b, type(self).__name__)
        z_a, z_b = z_a.float(), z_b.float()
        rank, world_size = distributed_world()
        if self.gather_distributed and world_size > 1:
            pair, _, _ = gather_batch(torch.stack([z_a, z_b], dim=1), None, rank, world_size)
            z_a, z_b = pair[:, 0], pair[:, 1]
        terms = vicreg_terms(z_a, z_b, self.eps)
        terms["loss"] = (
            self.sim_weight * terms["invariance"]
            + self.var_weight * terms["variance"]
            + self.cov_weight * terms["covariance"]
        )
        return terms

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """VICReg loss of ``z_a (N, D)`` and ``z_b (N, D)``; a float32 scalar."""
        return self.terms(z_a, z_b)["loss"]
