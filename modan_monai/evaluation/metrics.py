"""Multi-class and multi-label classification metrics (scikit-learn): per-class AUC and its macro mean, accuracy,
balanced accuracy, quadratic-weighted kappa.

The papers' "mean AUC" (ChestX-ray14's 14 findings in MLVICX Table I and Adam-v2 Table 2) is the unweighted mean of
the one-vs-rest AUC of each class or label. A class absent from the truth (no positive, or no negative, among the
rows that count) has no AUC: it is ``NaN`` in :attr:`ClassAUC.per_class`, named in :attr:`ClassAUC.undefined`, left out
of the mean and logged; :attr:`ClassAUC.averaged_over` names the classes the mean was taken over. Nothing is
dropped in silence, and a set where no class has an AUC is an error.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score, roc_auc_score

__all__ = ["ClassAUC", "MulticlassMetrics", "multiclass_metrics", "multilabel_metrics", "one_vs_rest_auc"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassAUC:
    """Per-class one-vs-rest AUCs and their macro mean.

    Attributes:
        per_class: class name -> AUC (``NaN`` where undefined), in class order.
        macro: the mean AUC over :attr:`averaged_over`.
        averaged_over: the classes with an AUC, the ones the mean was taken over.
        undefined: the classes without an AUC (absent from the truth, or present in every counted row).
    """

    per_class: dict[str, float]
    macro: float
    averaged_over: tuple[str, ...]
    undefined: tuple[str, ...]

    def as_row(self, prefix: str = "auc") -> dict[str, float | int]:
        """Flat columns for a results table: ``auc`` (macro), ``auc_n_classes`` and ``auc_<class>`` per class.

        Args:
            prefix: the name of the macro column and the prefix of the others.

        Returns:
            ``{prefix: macro, f"{prefix}_n_classes": len(averaged_over), f"{prefix}_{name}": AUC, ...}``.
        """
        row: dict[str, float | int] = {prefix: self.macro, f"{prefix}_n_classes": len(self.averaged_over)}
        row.update({f"{prefix}_{name}": value for name, value in self.per_class.items()})
        return row


@dataclass(frozen=True)
class MulticlassMetrics:
    """Metrics of a multi-class prediction.

    Attributes:
        auc: per-class one-vs-rest AUCs and their macro mean.
        accuracy: share of rows whose arg-max class is the true one.
        balanced_accuracy: mean recall over the classes present in the truth (a class only predicted has no recall
            and is not averaged).
        kappa: quadratic-weighted Cohen's kappa of the arg-max class (ordinal labels), ``None`` unless asked.
    """

    auc: ClassAUC
    accuracy: float
    balanced_accuracy: float
    kappa: float | None


def _scores(scores: np.ndarray | Sequence[Sequence[float]], names: Sequence[str], context: str) -> np.ndarray:
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(names):
        raise ValueError(f"{context}scores of shape {p.shape}: expected (N, {len(names)}), one column per class of "
                         f"{list(names)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"{context}class names {list(names)} are not unique.")
    if not np.isfinite(p).all():
        raise ValueError(f"{context}{int((~np.isfinite(p)).sum())} score(s) are NaN or infinite.")
    return p


def one_vs_rest_auc(
    targets: np.ndarray | Sequence[Sequence[int]],
    scores: np.ndarray | Sequence[Sequence[float]],
    names: Sequence[str],
    mask: np.ndarray | Sequence[Sequence[bool]] | None = None,
    context: str = "",
) -> ClassAUC:
    """AUC of each class (column) against the rest, with :func:`sklearn.metrics.roc_auc_score`, and their mean.

    Args:
        targets: ``(N, C)`` 0/1 targets (one-hot for a multi-class task).
        scores: ``(N, C)`` scores (probabilities or logits) of each class.
        names: the ``C`` class names.
        mask: ``(N, C)`` bool, false where a target does not count (an ignored uncertain label); ``None``: all count.
        context: prefix of messages (``"repeat 0 fold 1: "``).

    Returns:
        The per-class AUCs and their macro mean over the classes where it is defined.

    Raises:
        ValueError: for shapes that do not match, scores that are not finite, targets other than 0/1, or no class
            with an AUC (naming the classes).

    Example:
        >>> r = one_vs_rest_auc([[1, 0], [0, 1], [1, 0]], [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]], ["a", "b"])
        >>> r.per_class, r.macro
        ({'a': 1.0, 'b': 1.0}, 1.0)
    """
    names = [str(n) for n in names]
    p = _scores(scores, names, context)
    y = np.asarray(targets, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"{context}targets of shape {y.shape} but scores of shape {p.shape}.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{context}targets must be 0/1; found {sorted(set(np.unique(y).tolist()) - {0.0, 1.0})}.")
    m = np.ones(y.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != y.shape:
        raise ValueError(f"{context}mask of shape {m.shape} but targets of shape {y.shape}.")
    per_class: dict[str, float] = {}
    for j, name in enumerate(names):
        truth = y[m[:, j], j]
        defined = 0 < truth.sum() < len(truth)
        per_class[name] = float(roc_auc_score(truth, p[m[:, j], j])) if defined else math.nan
    averaged = tuple(n for n in names if not math.isnan(per_class[n]))
    undefined = tuple(n for n in names if math.isnan(per_class[n]))
    if not averaged:
        counts = {n: f"{int(y[m[:, j], j].sum())} of {int(m[:, j].sum())}" for j, n in enumerate(names)}
        raise ValueError(f"{context}AUC is undefined for every class: positives per class {counts}; the evaluated "
                         "set needs positives and negatives of at least one class.")
    if undefined:
        logger.warning("%sno AUC for class(es) %s (absent from the truth, or in every counted row): the mean AUC "
                       "is taken over the %d class(es) %s.", context, list(undefined), len(averaged), list(averaged))
    return ClassAUC(per_class, float(np.mean([per_class[n] for n in averaged])), averaged, undefined)


def multiclass_metrics(
    y_true: np.ndarray | Sequence[int],
    probabilities: np.ndarray | Sequence[Sequence[float]],
    class_names: Sequence[str],
    ordinal: bool = False,
    context: str = "",
) -> MulticlassMetrics:
    """Per-class AUC (one-vs-rest) and macro AUC, accuracy, balanced accuracy and, for ordinal classes, kappa.

    Args:
        y_true: ``(N,)`` class indices (from :func:`modan_monai.evaluation.labels.multiclass_labels`).
        probabilities: ``(N, C)`` class probabilities; the predicted class is the arg-max.
        class_names: the ``C`` class names, in index order.
        ordinal: the classes are ordered grades (Kellgren-Lawrence 0-4): add the quadratic-weighted Cohen's kappa.
        context: prefix of messages.

    Returns:
        The metrics.

    Raises:
        ValueError: for shapes that do not match, class indices outside ``[0, C)``, scores that are not finite, or
            no class with an AUC.

    Example:
        >>> m = multiclass_metrics([0, 1, 2, 2], [[.8, .1, .1], [.2, .7, .1], [.1, .2, .7], [.5, .1, .4]], "abc")
        >>> round(m.accuracy, 2), m.auc.macro
        (0.75, 1.0)
    """
    names = [str(n) for n in class_names]
    p = _scores(probabilities, names, context)
    y = np.asarray(y_true)
    if y.shape != (len(p),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{context}y_true of shape {y.shape} ({y.dtype}): expected ({len(p)},) integer class "
                         "indices, one per row of the probabilities.")
    outside = sorted(set(y[(y < 0) | (y >= len(names))].tolist()))
    if outside:
        raise ValueError(f"{context}class indices {outside} are outside [0, {len(names)}) for classes {names}.")
    onehot = np.eye(len(names), dtype=np.int64)[y]
    predicted = p.argmax(axis=1)
    kappa = None
    if ordinal:
        kappa = float(cohen_kappa_score(y, predicted, labels=np.arange(len(names)), weights="quadratic"))
    with warnings.catch_warnings():  # a predicted class absent from the truth: documented, its recall is left out
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(y, predicted))
    return MulticlassMetrics(
        auc=one_vs_rest_auc(onehot, p, names, context=context),
        accuracy=float(accuracy_score(y, predicted)),
        balanced_accuracy=balanced,
        kappa=kappa,
    )


def multilabel_metrics(
    targets: np.ndarray | Sequence[Sequence[int]],
    scores: np.ndarray | Sequence[Sequence[float]],
    label_names: Sequence[str],
    mask: np.ndarray | Sequence[Sequence[bool]] | None = None,
    context: str = "",
) -> ClassAUC:
    """Per-label AUC and the mean AUC of a multi-label prediction, ignored labels (``mask`` false) left out.

    Args:
        targets: ``(N, L)`` 0/1 targets (from :mod:`modan_monai.evaluation.labels`).
        scores: ``(N, L)`` sigmoid probabilities (or logits) per label.
        label_names: the ``L`` label names.
        mask: ``(N, L)`` bool, false where the label is ignored (uncertain under the ``ignore`` policy).
        context: prefix of messages.

    Returns:
        The per-label AUCs and their mean (the papers' "mean AUC").

    Raises:
        ValueError: as :func:`one_vs_rest_auc`.
    """
    return one_vs_rest_auc(targets, scores, label_names, mask=mask, context=context)
