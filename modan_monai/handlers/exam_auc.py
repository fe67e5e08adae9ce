"""ROC AUC at the level the test is scored: per exam (aggregated slice scores) or per image."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.handlers import from_engine

__all__ = ["ExamROCAUC", "LEVELS"]

#: Units a validation AUC is computed over.
LEVELS: tuple[str, ...] = ("exam", "image")


def _positive_scores(preds: Sequence[Any]) -> list[float]:
    """Positive-class score of each prediction: the last of 2 channels (softmax output) or a single value."""
    scores = []
    for p in preds:
        t = torch.as_tensor(p).detach().float().reshape(-1)
        if t.numel() not in (1, 2):
            raise ValueError(f"ExamROCAUC expects binary predictions (1 score or 2 probabilities), got shape "
                             f"{tuple(torch.as_tensor(p).shape)}.")
        scores.append(float(t[-1]))
    return scores


def _binary_labels(labels: Sequence[Any]) -> list[int]:
    """0/1 label of each item: a scalar, or the argmax of a one-hot pair."""
    out = []
    for y in labels:
        t = torch.as_tensor(y).detach().reshape(-1)
        out.append(int(t.argmax()) if t.numel() > 1 else int(t.item()))
    return out


class ExamROCAUC(Metric):
    """Binary ROC AUC over exams (slice scores aggregated per exam) or, with ``level="image"``, over items.

    The exam of an item is the ``/``-joined ``group_keys`` of its batch row (default ``"<dataset>/<case_id>"``,
    the protocol's case key), read from ``engine.state.batch``: the preprocessing must keep those keys
    (``classification_transforms(keep_keys=["dataset", "case_id"])``). The exam score is the ``aggregation``
    (``"mean"``, ``"max"`` or ``"lse"``) of its slice scores, as in
    :func:`modan_monai.evaluation.exam_level_auc`, which computes the value. With ``level="image"`` every item
    counts once (the value of ``monai.handlers.ROCAUC``), so one bundle id (``val_level``) switches a
    validation between the two levels. Usable as a MONAI evaluator's ``key_val_metric``.

    Args:
        level: ``"exam"`` (aggregate per exam) or ``"image"`` (score every item).
        aggregation: ``"mean"``, ``"max"`` or ``"lse"`` (see :func:`modan_monai.evaluation.aggregate_exam_scores`).
        sharpness: ``r`` of ``"lse"``.
        group_keys: batch keys whose values, joined by ``/``, name the exam.
        output_transform: maps ``engine.state.output`` to ``(preds, labels)``; preds are per-item probabilities
            ``(2,)`` (the last is the positive class) or a single score, labels are 0/1 or one-hot ``(2,)``.
        device: ignite metric device (values are accumulated on the CPU).

    Raises:
        ValueError: for an unknown ``level`` or ``aggregation`` (naming the value) or ``sharpness <= 0``.
        KeyError: at an iteration whose batch lacks a group key (names the keys present).
        ValueError: from :meth:`compute` when the evaluated set holds a single class, scores are not finite, or
            an exam's slices carry different labels (the message names the metric and the exams).

    Example:
        >>> from types import SimpleNamespace
        >>> import torch
        >>> metric = ExamROCAUC(aggregation="max")
        >>> metric.reset()
        >>> batch = [{"dataset": "knee", "case_id": c} for c in ("a", "a", "b", "c")]
        >>> output = [{"pred": torch.tensor([1 - p, p]), "label": torch.tensor(y)}
        ...           for p, y in ((0.9, 1), (0.1, 1), (0.6, 0), (0.4, 1))]
        >>> metric.iteration_completed(SimpleNamespace(state=SimpleNamespace(batch=batch, output=output)))
        >>> metric.compute()  # max per exam: a 0.9 (pos), b 0.6 (neg), c 0.4 (pos)
        0.5
    """

    def __init__(
        self,
        level: str = "exam",
        aggregation: str = "mean",
        sharpness: float = 5.0,
        group_keys: Sequence[str] = ("dataset", "case_id"),
        output_transform: Callable[[Any], Any] = from_engine(["pred", "label"]),
        device: str | torch.device = "cpu",
    ) -> None:
        from modan_monai.evaluation.mrnet import EXAM_AGGREGATIONS  # lazy: evaluation imports the handlers

        if aggregation not in EXAM_AGGREGATIONS:
            raise ValueError(f"ExamROCAUC aggregation must be one of {EXAM_AGGREGATIONS}, got {aggregation!r}.")
        if float(sharpness) <= 0:
            raise ValueError(f"ExamROCAUC sharpness must be > 0, got {sharpness}.")
        if level not in LEVELS:
            raise ValueError(f"ExamROCAUC level must be one of {LEVELS}, got {level!r}.")
        if level == "exam" and not group_keys:
            raise ValueError("ExamROCAUC needs at least one group key to aggregate per exam.")
        self.level = level
        self.by_exam = level == "exam"
        self.aggregation = aggregation
        self.sharpness = float(sharpness)
        self.group_keys = tuple(group_keys)
        self._scores: list[float] = []
        self._labels: list[int] = []
        self._groups: list[str] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        """Forget the accumulated items (ignite calls it when an evaluation starts)."""
        self._scores, self._labels, self._groups = [], [], []

    def _batch_groups(self, batch: Any, n: int) -> list[str]:
        if isinstance(batch, Mapping):  # not decollated: a dict of per-key lists
            rows = [{k: batch[k][i] for k in self.group_keys if k in batch} for i in range(n)]
        else:
            rows = list(batch)
        groups = []
        for i, row in enumerate(rows):
            missing = [k for k in self.group_keys if k not in row]
            if missing:
                raise KeyError(f"ExamROCAUC: batch item {i} has no {missing} to group slices into exams (keys "
                               f"{sorted(map(str, row))}); keep them in the evaluator's preprocessing "
                               "(classification_transforms keep_keys).")
            groups.append("/".join(str(row[k]) for k in self.group_keys))
        return groups

    def update(self, output: Sequence[Any]) -> None:
        """Add a batch: ``(preds, labels)`` or, to aggregate per exam, ``(preds, labels, exam_ids)``.

        Raises:
            ValueError: when the numbers of predictions, labels and exam ids differ, or exams are missing while
                ``level="exam"``.
        """
        preds, labels = output[0], output[1]
        groups = list(output[2]) if len(output) > 2 and output[2] is not None else None
        scores, ys = _positive_scores(preds), _binary_labels(labels)
        if len(scores) != len(ys) or (groups is not None and len(groups) != len(scores)):
            raise ValueError(f"ExamROCAUC: {len(scores)} predictions, {len(ys)} labels and "
                             f"{'no' if groups is None else len(groups)} exam ids in one batch.")
        if self.by_exam and groups is None:
            raise ValueError("ExamROCAUC(level='exam') needs the exam id of every item: (preds, labels, exam_ids).")
        self._scores += scores
        self._labels += ys
        self._groups += [str(g) for g in groups] if groups is not None else [str(len(self._groups) + i)
                                                                            for i in range(len(scores))]

    @torch.no_grad()
    def iteration_completed(self, engine: Engine) -> None:
        """Read predictions and labels from ``engine.state.output``, exam ids from ``engine.state.batch``."""
        preds, labels = self._output_transform(engine.state.output)[:2]
        groups = self._batch_groups(engine.state.batch, len(preds)) if self.by_exam else None
        self.update((preds, labels, groups))

    def _gathered(self) -> tuple[list[float], list[int], list[str]]:
        """All processes' items when a process group is running (one process: the local items)."""
        local = (self._scores, self._labels, self._groups)
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return local
        parts: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, local)
        return ([s for p in parts for s in p[0]], [y for p in parts for y in p[1]],
                [f"{r}:{g}" if not self.by_exam else g for r, p in enumerate(parts) for g in p[2]])

    def compute(self) -> float:
        """The AUC over exams (or items).

        Raises:
            ValueError: nothing was accumulated, a single class, non-finite scores, or conflicting exam labels.
        """
        from modan_monai.evaluation.mrnet import exam_level_auc
        from modan_monai.evaluation.stats import auc

        scores, labels, groups = self._gathered()
        if not scores:
            raise ValueError("ExamROCAUC: no predictions were accumulated (empty evaluation data?).")
        if not self.by_exam:
            return auc(labels, scores, context="ExamROCAUC(level='image'): ")
        value, _ = exam_level_auc(np.asarray(groups), labels, scores, self.aggregation, self.sharpness,
                                  context=f"ExamROCAUC({self.aggregation} per exam): ")
        return float(value)
