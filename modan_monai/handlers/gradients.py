"""Gradient handlers between backward and the optimiser step: per-parameter clipping and last-layer freezing.

Both run at MONAI's ``IterationEvents.BACKWARD_COMPLETED``, which ``SupervisedTrainer`` fires after
``loss.backward()`` and before ``optimizer.step()``. They follow DINO's ``utils.clip_gradients`` and
``utils.cancel_gradients_last_layer``, which Adam-v2's release uses (methods.md section 3: clipping per
parameter to norm 3.0, the DINO head's last layer not updated during the first epoch). The two act on
separate parameters one at a time, so their order does not change the result; the bundles attach clipping
first, as the release calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Union

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["FreezeLastLayer", "PerParameterGradientClipping", "clip_gradients_per_parameter", "optimizer_steps_now"]

Parameters = Union[torch.nn.Module, Callable[[], Iterable[torch.Tensor]], Iterable[torch.Tensor]]


def optimizer_steps_now(engine: Engine) -> bool:
    """Whether MONAI's ``SupervisedTrainer`` steps the optimiser at the current iteration.

    True except on the accumulating iterations of ``accumulation_steps > 1`` (the same rule as
    ``SupervisedTrainer._iteration``); engines without accumulation always step.
    """
    acc = int(getattr(engine, "accumulation_steps", 1) or 1)
    if acc <= 1:
        return True
    epoch_length = engine.state.epoch_length
    if epoch_length is not None:
        local = (int(engine.state.iteration) - 1) % int(epoch_length)
        return (local + 1) % acc == 0 or (local + 1) == int(epoch_length)
    return int(engine.state.iteration) % acc == 0


def _parameter_source(parameters: Parameters, who: str) -> Callable[[], list[torch.Tensor]]:
    """A callable giving the parameters now: a module's ``parameters()``, a callable's result, or a fixed list."""
    if isinstance(parameters, torch.nn.Module):
        module = parameters
        return lambda: list(module.parameters())
    if callable(parameters):
        source = parameters
        return lambda: list(source())
    if isinstance(parameters, torch.Tensor):
        fixed = [parameters]
    else:
        try:
            fixed = list(parameters)
        except TypeError as err:
            raise TypeError(
                f"{who}: parameters must be a module, a callable returning parameters or a list of them, "
                f"got {type(parameters).__name__}"
            ) from err
    bad = [type(p).__name__ for p in fixed if not isinstance(p, torch.Tensor)]
    if bad:
        raise TypeError(f"{who}: parameters must be tensors, got {bad[:3]}")
    return lambda: fixed


def clip_gradients_per_parameter(parameters: Iterable[torch.Tensor], max_norm: float) -> list[float]:
    """Scale each parameter's gradient so that its L2 norm is at most ``max_norm`` (DINO ``clip_gradients``).

    For every parameter with a gradient: ``coef = max_norm / (norm + 1e-6)``; the gradient is multiplied by
    ``coef`` when ``coef < 1`` and left untouched otherwise. Unlike ``torch.nn.utils.clip_grad_norm_``, each
    tensor is clipped on its own (no global norm).

    Args:
        parameters: the parameters.
        max_norm: the largest gradient norm of one parameter.

    Returns:
        The gradient norm of each parameter that had a gradient, before clipping.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([6.0, 8.0])
        >>> clip_gradients_per_parameter([p], 5.0), round(float(p.grad.norm()), 4)
        ([10.0], 5.0)
    """
    norms = []
    for param in parameters:
        if param.grad is None:
            continue
        norm = param.grad.detach().norm(2)
        norms.append(float(norm))
        coef = max_norm / (norm + 1e-6)
        if coef < 1:
            param.grad.detach().mul_(coef)
    return norms


class PerParameterGradientClipping:
    """Clip every parameter's gradient to L2 norm ``max_norm`` before the optimiser step (DINO, Adam-v2).

    At ``IterationEvents.BACKWARD_COMPLETED`` it applies :func:`clip_gradients_per_parameter` (3.0 in the
    Adam-v2 release). Under MONAI's AMP (``engine.amp`` with a ``GradScaler``) the gradients are unscaled first
    with ``engine.scaler.unscale_(engine.optimizer)``, as DINO does, so the bound is on the true gradients (the
    scaler's ``step`` then skips its own unscale). With gradient accumulation it clips on the iterations that
    step only, i.e. the accumulated gradient.

    Args:
        parameters: a module (all its parameters), a callable returning parameters (called each iteration), or
            a list of parameters.
        max_norm: the largest gradient norm of one parameter.

    Raises:
        ValueError: when ``max_norm`` is not positive.
        TypeError: when ``parameters`` is none of the accepted kinds.

    Example:
        >>> from monai.engines import SupervisedTrainer
        >>> net = torch.nn.Linear(2, 1)
        >>> trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[{"image": torch.ones(1, 2),
        ...     "label": torch.zeros(1, 1)}], network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        ...     loss_function=lambda p, t: 1e3 * p.sum(), decollate=False)
        >>> PerParameterGradientClipping(net, max_norm=3.0).attach(trainer)
        >>> trainer.run()
        >>> round(float(net.weight.grad.norm()), 3)
        3.0
    """

    def __init__(self, parameters: Parameters, max_norm: float = 3.0) -> None:
        if not float(max_norm) > 0:
            raise ValueError(f"PerParameterGradientClipping: max_norm must be > 0, got {max_norm}")
        self.parameters = _parameter_source(parameters, "PerParameterGradientClipping")
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        """Register the clipping at ``IterationEvents.BACKWARD_COMPLETED``."""
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Unscale (under AMP) and clip the gradients of this iteration."""
        if not optimizer_steps_now(engine):
            return
        scaler: Any = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)
        clip_gradients_per_parameter(self.parameters(), self.max_norm)


class FreezeLastLayer:
    """Drop the gradients of the DINO head's last layer during the first ``epochs`` epochs (DINO, Adam-v2).

    At ``IterationEvents.BACKWARD_COMPLETED``, while ``engine.state.epoch <= epochs`` (1-based epochs; DINO's
    ``cancel_gradients_last_layer`` with ``freeze_last_layer = 1``), every given parameter's ``grad`` is set
    to ``None``. ``torch.optim`` optimisers (SGD, Adam, AdamW) skip parameters whose grad is ``None``
    entirely, weight decay and moment updates included, so those parameters do not change. The rule depends on
    the epoch only, so resume is exact.

    Args:
        parameters: a callable returning the parameters (e.g. ``model.last_layer_parameters``, called each
            iteration), a module, or a list of parameters (e.g. ``model.last_layer_parameters()``).
        epochs: number of leading epochs during which they are frozen (0: never).

    Raises:
        ValueError: when ``epochs`` is negative.
        TypeError: when ``parameters`` is none of the accepted kinds.
    """

    def __init__(self, parameters: Parameters, epochs: int = 1) -> None:
        if int(epochs) < 0:
            raise ValueError(f"FreezeLastLayer: epochs must be >= 0, got {epochs}")
        self.parameters = _parameter_source(parameters, "FreezeLastLayer")
        self.epochs = int(epochs)

    def attach(self, engine: Engine) -> None:
        """Register the freezing at ``IterationEvents.BACKWARD_COMPLETED``."""
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Set the gradients to ``None`` while the epoch is within the frozen ones."""
        if int(engine.state.epoch) > self.epochs:
            return
        for param in self.parameters():
            param.grad = None
