"""Gradient handlers run between ``loss.backward()`` and the optimiser step (MONAI's ``BACKWARD_COMPLETED``).

Adam-v2's release (after DINO) clips every parameter's gradient to norm 3.0 on its own and does not update the DINO
head's last layer during the first epoch (methods.md §3 "Schedule and optimisation").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["FreezeLastLayer", "PerParameterGradientClipping", "clip_gradients_per_parameter"]


def _parameters(parameters: Any) -> list[torch.nn.Parameter]:
    if isinstance(parameters, torch.nn.Module):
        return list(parameters.parameters())
    if callable(parameters):
        parameters = parameters()
    return list(parameters)


def clip_gradients_per_parameter(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> list[float]:
    """Scale each parameter's gradient so its L2 norm is at most ``max_norm`` (DINO's ``clip_gradients``).

    Unlike ``torch.nn.utils.clip_grad_norm_`` (one norm over all parameters), every tensor is clipped on its own.

    Returns:
        The gradient norms before clipping (parameters without a gradient are skipped).
    """
    norms = []
    for p in parameters:
        if p.grad is None:
            continue
        norm = float(p.grad.detach().norm(2))
        norms.append(norm)
        coef = max_norm / (norm + 1e-6)
        if coef < 1.0:
            p.grad.detach().mul_(coef)
    return norms


class PerParameterGradientClipping:
    """Clip every parameter's gradient to norm ``max_norm`` before the optimiser step.

    Args:
        parameters: a module, an iterable of parameters, or a callable returning them.
        max_norm: 3.0 in Adam-v2's release; must be > 0.
    """

    def __init__(self, parameters: Any, max_norm: float = 3.0) -> None:
        if not float(max_norm) > 0:
            raise ValueError(f"PerParameterGradientClipping: max_norm (clip_grad) must be > 0, got {max_norm}.")
        self.parameters = _parameters(parameters)
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        """Run on ``IterationEvents.BACKWARD_COMPLETED`` (MONAI's ``SupervisedTrainer`` registers the event)."""
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        clip_gradients_per_parameter(self.parameters, self.max_norm)


class FreezeLastLayer:
    """Drop the gradients of ``parameters`` while ``engine.state.epoch <= epochs``: the optimiser leaves them as they are.

    PyTorch's optimisers (AdamW included, weight decay too) skip a parameter whose ``grad`` is ``None``.

    Args:
        parameters: the DINO head's last layer (``AdamV2Model.last_layer_parameters``), as a list or a callable.
        epochs: number of first epochs without an update (``freeze_last_layer``, 1 in Adam-v2); 0 disables.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter] | Callable[[], Iterable[torch.nn.Parameter]], epochs: int = 1) -> None:
        if int(epochs) < 0:
            raise ValueError(f"FreezeLastLayer: epochs (freeze_last_layer) must be >= 0, got {epochs}.")
        self.parameters = _parameters(parameters)
        self.epochs = int(epochs)

    def attach(self, engine: Engine) -> None:
        """Run on ``IterationEvents.BACKWARD_COMPLETED``."""
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch <= self.epochs:
            for p in self.parameters:
                p.grad = None
