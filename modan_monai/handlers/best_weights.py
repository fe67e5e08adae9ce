"""Keep a copy of the network weights of the best validation epoch (and optionally write it to a file)."""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from modan_monai.networks.model_settings import attach_model_settings
from modan_monai.utils.distributed import is_rank_zero, unwrap_module

__all__ = ["KeepBestWeights"]


class KeepBestWeights:
    """Store a deep copy of ``network.state_dict()`` whenever a validation metric improves.

    Attach it to the evaluator (``SupervisedEvaluator`` run by ``ValidationHandler``): after each evaluation it
    reads ``engine.state.metrics[metric_name]`` and, when it beats the best so far (strictly; NaN never does),
    stores a *copy* of the weights and the epoch (the evaluator's ``state.epoch`` is the trainer's epoch).
    The official MulSupCon code kept the best model by reference, so its "best" weights were the final ones;
    the copy here is what :meth:`restore` loads back. With ``save_path`` every new best state is also written
    there (``torch.save`` of the state dict to a temporary file, then ``os.replace``), so a bundle has a single
    best-epoch rule for the weights it keeps in memory and on disk. :meth:`state_dict` /
    :meth:`load_state_dict` carry the kept copy through a training checkpoint; :meth:`load_state_dict` also puts
    the kept best value and epoch back into the state of the evaluator it is attached to (``best_metric``,
    ``best_metric_epoch``, as :class:`~modan_monai.handlers.BestModelSaver` does), so that after a resume the
    evaluator's best (MONAI's stats line, :class:`~modan_monai.handlers.TrainingSummary`) is the run's, not that
    of the epochs since the resume.

    Args:
        network: the model being trained.
        metric_name: key of the metric in ``engine.state.metrics``.
        mode: ``"max"`` (AUC, accuracy) or ``"min"`` (loss).
        save_path: file the best weights are written to (``None``: memory only).
        metadata: the training settings stored with the written weights (in the state dict's ``_metadata``, see
            :mod:`modan_monai.networks.model_settings`): image size, architecture, stem, task, class names.

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

    def __init__(
        self,
        network: torch.nn.Module,
        metric_name: str = "val_auc",
        mode: str = "max",
        save_path: str | os.PathLike | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        self.network = unwrap_module(network)  # the bare module's keys, as in the checkpoints
        self.metric_name = metric_name
        self.mode = mode
        self.save_path = None if save_path is None else Path(save_path)
        self.metadata = None if metadata is None else dict(metadata)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self.best_metric: float | None = None
        self.engine: Any = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Run after every evaluation (``Events.EPOCH_COMPLETED`` of the evaluator)."""
        self.engine = engine
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
        if self.save_path is not None and is_rank_zero():
            state = self.best_state if self.metadata is None else attach_model_settings(self.best_state, self.metadata)
            self._save(state, self.save_path)
        where = f" and written to {self.save_path}" if self.save_path is not None else ""
        self.logger.info(f"best {self.metric_name} {value:.4f} at epoch {self.best_epoch}: weights kept{where}")

    @staticmethod
    def _save(state: dict[str, torch.Tensor], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def state_dict(self) -> dict[str, Any]:
        """The kept copy, its epoch and metric (for a training checkpoint's ``save_dict``)."""
        return {"best_state": self.best_state, "best_epoch": self.best_epoch, "best_metric": self.best_metric}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a resumed run keeps comparing against the earlier best).

        Raises:
            KeyError: when ``state`` lacks one of ``best_state``, ``best_epoch``, ``best_metric``.
        """
        missing = [k for k in ("best_state", "best_epoch", "best_metric") if k not in state]
        if missing:
            raise KeyError(f"KeepBestWeights.load_state_dict: missing {missing}; keys: {sorted(state)}.")
        self.best_state = state["best_state"]
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.best_metric = None if state["best_metric"] is None else float(state["best_metric"])
        if self.engine is not None and self.best_epoch is not None:  # the attached evaluator's best, as it was
            self.engine.state.best_metric = self.best_metric
            self.engine.state.best_metric_epoch = self.best_epoch

    def restore(self) -> bool:
        """Load the best weights back into ``network``; returns False when no epoch was kept."""
        if self.best_state is None:
            return False
        self.network.load_state_dict(self.best_state)
        return True
