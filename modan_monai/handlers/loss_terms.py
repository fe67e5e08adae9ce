"""TensorBoard scalars for the individual terms of a multi-term loss (e.g. MLVICX's invariance/variance/covariance)."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events
from torch import nn

__all__ = ["LossTermsTensorBoardHandler"]


class LossTermsTensorBoardHandler:
    """Write every entry of ``loss_fn.last_terms`` as a TensorBoard scalar, so collapse is visible.

    A loss that exposes ``last_terms`` (a dict of detached scalar tensors, e.g.
    :class:`~modan_monai.losses.MLVICXLoss` or :class:`~modan_monai.losses.VICRegLoss`) is read after each
    iteration; tags are ``{prefix}/{term}`` (``loss_terms/global/variance``...). At the start of each iteration the
    handler also sets ``loss_fn.iteration`` (when the loss has that attribute) so that a non-finite-term error
    names the iteration.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``.
        loss_fn: the loss module.
        interval: iterations between writes.
        prefix: tag prefix.

    Raises:
        ValueError: when ``loss_fn`` has no ``last_terms`` attribute.
    """

    def __init__(self, summary_writer: Any, loss_fn: nn.Module, interval: int = 1, prefix: str = "loss_terms") -> None:
        if not hasattr(loss_fn, "last_terms"):
            raise ValueError(f"{type(loss_fn).__name__} has no last_terms attribute to log.")
        self.writer = summary_writer
        self.loss_fn = loss_fn
        self.interval = max(1, int(interval))
        self.prefix = prefix

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self.set_iteration)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def set_iteration(self, engine: Engine) -> None:
        """Tell the loss which iteration it is computing (for error messages)."""
        if hasattr(self.loss_fn, "iteration"):
            self.loss_fn.iteration = int(engine.state.iteration)

    def __call__(self, engine: Engine) -> None:
        for name, value in self.loss_fn.last_terms.items():
            self.writer.add_scalar(f"{self.prefix}/{name}", float(value), engine.state.iteration)
