"""Validation metrics of multi-class and multi-label classifiers: macro one-vs-rest AUC (the key metric) and more.

:class:`ClassificationAUC` accumulates an evaluator's probabilities and labels and, at the end of an evaluation,
puts into ``engine.state.metrics`` the macro AUC under its own name (``val_auc``: the key metric the best epoch is
picked on) and, beside it, the AUC of every class (``val_auc_<class>``), and for a multi-class task the accuracy,
balanced accuracy and, for ordinal classes, the quadratic-weighted kappa (``val_accuracy``,
``val_balanced_accuracy``, ``val_kappa``), so that ``StatsHandler``, ``TensorBoardStatsHandler`` and
``MetricsSaver`` log them. The values come from :mod:`modan_monai.evaluation.metrics` (scikit-learn).
:func:`classification_auc_metric` picks the classify bundle's key metric from its ``task`` id (binary:
:class:`~modan_monai.handlers.ExamROCAUC`, unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.handlers import from_engine

from .exam_auc import ExamROCAUC

__all__ = ["ClassificationAUC", "classification_auc_metric"]


def _rows(values: Sequence[Any]) -> list[np.ndarray]:
    return [torch.as_tensor(v).detach().float().cpu().reshape(-1).numpy() for v in values]


class ClassificationAUC(Metric):
    """Macro one-vs-rest AUC of a multi-class or multi-label prediction, with per-class values beside it.

    Multiclass: ``pred`` is ``(C,)`` class probabilities, ``label`` a class index or its one-hot ``(C,)``; the
    metrics are :func:`~modan_monai.evaluation.metrics.multiclass_metrics`. Multilabel: ``pred`` is ``(L,)`` sigmoid
    probabilities, ``label`` ``(L,)`` of 1 / 0 / ``NaN`` (ignored: out of the metric); the metric is
    :func:`~modan_monai.evaluation.metrics.multilabel_metrics`, the mean over the labels with a positive and a
    negative. Usable as a MONAI evaluator's ``key_val_metric``; with a process group the items of all processes
    count.

    Args:
        task: ``"multiclass"`` or ``"multilabel"``.
        class_names: the classes / labels in output order.
        ordinal: multiclass: also the quadratic-weighted Cohen's kappa.
        output_transform: maps ``engine.state.output`` to ``(preds, labels)``.
        device: ignite metric device (values are accumulated on the CPU).

    Raises:
        ValueError: an unknown task, fewer than two classes (multiclass) or no label; from :meth:`compute`, nothing
            accumulated, predictions that do not have one value per class, or no class with an AUC.

    Example:
        >>> from types import SimpleNamespace
        >>> metric = ClassificationAUC("multiclass", ["a", "b", "c"])
        >>> metric.reset()
        >>> preds = [torch.tensor(p) for p in ([.8, .1, .1], [.1, .8, .1], [.1, .1, .8], [.5, .3, .2])]
        >>> metric.update((preds, [torch.tensor(y) for y in (0, 1, 2, 2)]))
        >>> metric.compute()
        1.0
    """

    def __init__(
        self,
        task: str,
        class_names: Sequence[str],
        ordinal: bool = False,
        output_transform: Callable[[Any], Any] = from_engine(["pred", "label"]),
        device: str | torch.device = "cpu",
    ) -> None:
        if task not in ("multiclass", "multilabel"):
            raise ValueError(f"ClassificationAUC task must be 'multiclass' or 'multilabel', got {task!r} (binary: "
                             "ExamROCAUC).")
        names = [str(n) for n in class_names]
        if len(names) < (2 if task == "multiclass" else 1):
            raise ValueError(f"ClassificationAUC({task!r}) needs {'two classes' if task == 'multiclass' else 'a label'}"
                             f" or more, got class_names {names}.")
        self.task = task
        self.class_names = names
        self.ordinal = bool(ordinal) and task == "multiclass"
        self._preds: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        """Forget the accumulated items (ignite calls it when an evaluation starts)."""
        self._preds, self._labels = [], []

    def update(self, output: Sequence[Any]) -> None:
        """Add a batch ``(preds, labels)`` (lists of per-item tensors, or batched tensors).

        Raises:
            ValueError: different numbers of predictions and labels.
        """
        preds, labels = _rows(output[0]), _rows(output[1])
        if len(preds) != len(labels):
            raise ValueError(f"ClassificationAUC: {len(preds)} predictions but {len(labels)} labels in one batch.")
        self._preds += preds
        self._labels += labels

    def _gathered(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        local = (self._preds, self._labels)
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return local
        parts: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, local)
        return [p for part in parts for p in part[0]], [y for part in parts for y in part[1]]

    def values(self, name: str = "auc") -> dict[str, float]:
        """Every value, keyed as :meth:`completed` writes them for a metric called ``name``.

        Raises:
            ValueError: nothing accumulated, a prediction or label of the wrong size, or no class with an AUC.
        """
        from modan_monai.evaluation.metrics import multiclass_metrics, multilabel_metrics  # lazy: evaluation imports us

        preds, labels = self._gathered()
        context = f"{name} ({self.task}): "
        if not preds:
            raise ValueError(f"{context}no predictions were accumulated (empty evaluation data?).")
        n = len(self.class_names)
        sizes = sorted({len(p) for p in preds} - {n})
        if sizes:
            raise ValueError(f"{context}predictions with {sizes} values: expected {n}, one per class of "
                             f"{self.class_names} (check num_classes against class_names).")
        scores = np.stack(preds).astype(np.float64)
        stem = name[: -len("_auc")] if name.endswith("_auc") else name
        if self.task == "multiclass":
            y = np.array([int(t.argmax()) if len(t) > 1 else int(t[0]) for t in labels], dtype=np.int64)
            m = multiclass_metrics(y, scores, self.class_names, ordinal=self.ordinal, context=context)
            out = {name: m.auc.macro, **{f"{name}_{c}": v for c, v in m.auc.per_class.items()},
                   f"{stem}_accuracy": m.accuracy, f"{stem}_balanced_accuracy": m.balanced_accuracy}
            if m.kappa is not None:
                out[f"{stem}_kappa"] = m.kappa
            return out
        if {len(t) for t in labels} != {n}:
            raise ValueError(f"{context}labels with {sorted({len(t) for t in labels})} values: expected {n}, one per "
                             f"label of {self.class_names}.")
        targets = np.stack(labels).astype(np.float64)
        mask = ~np.isnan(targets)
        auc = multilabel_metrics(np.where(mask, targets, 0.0), scores, self.class_names, mask=mask, context=context)
        return {name: auc.macro, **{f"{name}_{c}": v for c, v in auc.per_class.items()}}

    def compute(self) -> float:
        """The macro AUC (the mean over the classes / labels where it is defined)."""
        return float(self.values()["auc"])

    def completed(self, engine: Engine, name: str) -> None:
        """Write the macro AUC under ``name`` and the other values beside it into ``engine.state.metrics``."""
        for key, value in self.values(name).items():
            engine.state.metrics[key] = float(value) if not math.isnan(value) else math.nan


def classification_auc_metric(
    task: str,
    class_names: Sequence[str],
    *,
    ordinal: bool = False,
    level: str = "image",
    aggregation: str = "mean",
    output_transform: Callable[[Any], Any] = from_engine(["pred", "label"]),
) -> Metric:
    """The classify bundle's AUC metric for its ``task`` (its ``validate#key_metric``).

    Args:
        task: ``"binary"`` (:class:`~modan_monai.handlers.ExamROCAUC`, as before), ``"multiclass"`` or
            ``"multilabel"`` (:class:`ClassificationAUC`).
        class_names: the classes / labels.
        ordinal: multiclass: add the quadratic-weighted kappa.
        level: ``"image"`` or (binary only) ``"exam"``.
        aggregation: exam aggregation (binary, ``level="exam"``).
        output_transform: maps ``engine.state.output`` to ``(preds, labels)``.

    Returns:
        An ignite metric.

    Raises:
        ValueError: an unknown task (naming config id ``task``), or ``level="exam"`` with a task other than binary
            (naming config id ``val_level``).
    """
    from modan_monai.evaluation.training import check_task  # lazy: evaluation imports the handlers

    check_task(task)
    if task == "binary":
        return ExamROCAUC(level=level, aggregation=aggregation, output_transform=output_transform)
    if level != "image":
        raise ValueError(f"config id 'val_level' is {level!r}: task {task!r} is scored per image (val_level 'image'); "
                         "exam-level aggregation is for task 'binary'.")
    return ClassificationAUC(task, class_names, ordinal=ordinal, output_transform=output_transform)
