"""Keep a copy of the network weights of the best validation epoch."""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["KeepBestWeights"]


class KeepBestWeights:
    """Store a deep copy of ``network.state_dict()`` whenever a validation metric improves.

    Attach it to the evaluator (``SupervisedEvaluator`` run by ``ValidationHandler``): after each evaluation it
    reads ``engine.state.metrics[metric_name]`` and, when it beats the best so far (strictly; NaN never does),
    stores a *copy* of the weights and the epoch (the evaluator's ``state.epoch`` is the trainer's epoch).
    The official MulSupCon code kept the best model by reference, so its "best" weights were the final ones;
    the copy here is what :meth:`restore` loads back.

    Args:
        network: the model being trained.
        metric_name: key of the metric in ``engine.state.metrics``.
        mode: ``"max"`` (AUC, accuracy) or ``"min"`` (loss).

    Attributes:
        best_state: the copied state dict of the best epoch (``None`` before the first improvement).
        best_epoch: epoch of ``best_state`` (``None`` before the first improvement).
        best_metric: metric value at ``best_epoch``.

    Raises:
        ValueError: for an unknown ``mode``.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> net = torch.nn.Linear(2, 1)
        >>> keep = KeepBestWeights(net, metric_name="val_auc")
        >>> keep(SimpleNamespace(state=SimpleNamespace(metrics={"val_auc": 0.8}, epoch=1)))
        >>> keep.best_epoch, keep.best_metric
        (1, 0.8)
    """

    def __init__(self, network: torch.nn.Module, metric_name: str = "val_auc", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        self.network = network
        self.metric_name = metric_name
        self.mode = mode
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self.best_metric: float | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Run after every evaluation (``Events.EPOCH_COMPLETED`` of the evaluator)."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_metric is None:
            return True
        return value > self.best_metric if self.mode == "max" else value < self.best_metric

    def __call__(self, engine: Any) -> None:
        """Copy the weights if ``engine.state.metrics[metric_name]`` improved."""
        metrics = engine.state.metrics
        if self.metric_name not in metrics:
            raise KeyError(f"KeepBestWeights: metric {self.metric_name!r} not in engine metrics {sorted(metrics)}.")
        value = float(metrics[self.metric_name])
        if not self._improves(value):
            return
        self.best_state = copy.deepcopy(self.network.state_dict())
        self.best_epoch = int(engine.state.epoch)
        self.best_metric = value
        self.logger.info(f"best {self.metric_name} {value:.4f} at epoch {self.best_epoch}: weights kept")

    def restore(self) -> bool:
        """Load the best weights back into ``network``; returns False when no epoch was kept."""
        if self.best_state is None:
            return False
        self.network.load_state_dict(self.best_state)
        return True
