"""LARS optimiser (layer-wise adaptive rate scaling) and its parameter groups.

You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks" (2017), in the form used by VICReg and
MLVICX: for each parameter ``w`` with gradient ``g``::

    g ← g + wd · w                                  (not for excluded parameters)
    g ← g · η ‖w‖ / ‖g‖   if ‖w‖ > 0 and ‖g‖ > 0    (trust ratio; not for excluded parameters)
    μ ← momentum · μ + g
    w ← w − lr · μ

Biases and normalisation parameters (the 1-D tensors) are excluded from both weight decay and the trust ratio.

Written here because none of the project's dependencies (PyTorch, MONAI, ignite) ships a maintained LARS:
``torch.optim`` has none, MONAI offers ``Novograd``/``LearningRateFinder``, and the LARS implementations of
other libraries (apex, lightly, timm) are not in the dependency set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["LARS", "lars_param_groups"]


def lars_param_groups(model: nn.Module, weight_decay: float = 1e-6) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``model`` into a LARS group and an excluded group.

    Args:
        model: the network.
        weight_decay: weight decay of the non-excluded parameters.

    Returns:
        ``[{"params": >=2-D tensors, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": 1-D tensors (biases, norm weights), "weight_decay": 0.0, "lars_exclude": True}]``; an empty
        group is left out. Frozen parameters (``requires_grad=False``) are not included.

    Example:
        >>> groups = lars_param_groups(nn.Linear(4, 2), weight_decay=1e-6)
        >>> [(len(g["params"]), g["lars_exclude"]) for g in groups]
        [(1, False), (1, True)]
    """
    regular, excluded = [], []
    for param in model.parameters():
        if param.requires_grad:
            (excluded if param.ndim <= 1 else regular).append(param)
    groups = [
        {"params": regular, "weight_decay": float(weight_decay), "lars_exclude": False},
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [g for g in groups if g["params"]]


class LARS(torch.optim.Optimizer):
    """LARS with momentum, excluding biases and normalisation parameters from weight decay and the trust ratio.

    Args:
        params: parameters or parameter groups (e.g. :func:`lars_param_groups`). A group may set
            ``lars_exclude``: ``True`` excludes all its parameters, ``False`` none, ``None`` (default) excludes the
            1-D ones (``param.ndim <= 1``: biases, BatchNorm/LayerNorm weights).
        lr: learning rate (the bundles use ``base_lr · batch_size / 256``).
        momentum: momentum (0.9).
        weight_decay: weight decay (1e-6 in methods.md).
        eta: trust coefficient ``η`` (0.001).

    Raises:
        ValueError: on a negative ``lr``, ``momentum``, ``weight_decay`` or ``eta``.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> opt = LARS(lars_param_groups(model, 1e-6), lr=0.1)
        >>> model(torch.randn(3, 4)).sum().backward()
        >>> opt.step()
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.2,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        eta: float = 0.001,
    ) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay), ("eta", eta)):
            if value < 0:
                raise ValueError(f"LARS {name} must be >= 0, got {value}.")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "lars_exclude": None}
        super().__init__(params, defaults)

    @staticmethod
    def is_excluded(param: torch.Tensor, group: dict[str, Any]) -> bool:
        """Whether ``param`` of ``group`` skips weight decay and the trust ratio."""
        flag = group.get("lars_exclude")
        return param.ndim <= 1 if flag is None else bool(flag)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        """Perform one optimisation step.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if not self.is_excluded(param, group):
                    if group["weight_decay"] != 0:
                        update = update.add(param, alpha=group["weight_decay"])
                    param_norm = torch.linalg.vector_norm(param)
                    update_norm = torch.linalg.vector_norm(update)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(
                        param_norm > 0,
                        torch.where(update_norm > 0, group["eta"] * param_norm / update_norm, one),
                        one,
                    )
                    update = update.mul(trust)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                param.add_(buffer, alpha=-group["lr"])
        return loss
