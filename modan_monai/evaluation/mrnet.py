"""Exam-level evaluation of volumes (MRNet knee MRI) with a 2D slice classifier.

The 2D classifier is trained on the slices of the training exams (every slice inherits its exam's
label); an exam's score is an aggregation of its slice probabilities (mean, max or log-sum-exp) and
the AUC is computed over exams. Manifests come from ``data_manifests/mrnet.py``: one row per
(exam, plane) volume with a ``plane`` column; all planes of an exam share the ``case_id``, so an
exam's planes stay in one fold and, when several planes are selected, all their slices enter the
exam's score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from .stats import auc

__all__ = ["EXAM_AGGREGATIONS", "aggregate_exam_scores", "exam_labels", "exam_level_auc", "select_planes"]

#: Aggregations of slice probabilities into an exam score.
EXAM_AGGREGATIONS: tuple[str, ...] = ("mean", "max", "lse")


def _lse(values: np.ndarray, sharpness: float) -> float:
    # Normalised log-sum-exp (1/r) log(mean(exp(r p))): a smooth maximum between the mean (r -> 0) and the max
    # (r -> inf) that, unlike a plain log(sum(exp)), does not grow with the number of slices.
    return float((logsumexp(sharpness * values) - np.log(len(values))) / sharpness)


def aggregate_exam_scores(
    case_ids: Sequence[str] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    method: str = "mean",
    sharpness: float = 5.0,
) -> pd.Series:
    """Aggregate slice probabilities into one score per exam.

    Args:
        case_ids: ``(N,)`` exam of each slice.
        probs: ``(N,)`` positive-class probability of each slice.
        method: ``"mean"``, ``"max"`` or ``"lse"`` (normalised log-sum-exp ``(1/r) log mean exp(r p)``).
        sharpness: ``r`` of ``"lse"`` (> 0).

    Returns:
        Series of exam scores indexed by case id, exams in order of first appearance.

    Raises:
        ValueError: unknown ``method``, non-positive ``sharpness``, or lengths that differ / are zero.

    Example:
        >>> aggregate_exam_scores(["a", "a", "b"], [0.2, 0.4, 0.9], "max").to_dict()
        {'a': 0.4, 'b': 0.9}
    """
    if method not in EXAM_AGGREGATIONS:
        raise ValueError(f"exam aggregation must be one of {EXAM_AGGREGATIONS}, got {method!r}.")
    if float(sharpness) <= 0:
        raise ValueError(f"lse sharpness must be > 0, got {sharpness}.")
    ids = np.asarray(case_ids).astype(str).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if ids.shape != p.shape or ids.size == 0:
        raise ValueError(f"aggregate_exam_scores: {ids.size} case ids but {p.size} probabilities.")
    grouped = pd.Series(p).groupby(pd.Series(ids), sort=False)
    if method == "lse":
        return grouped.agg(lambda v: _lse(v.to_numpy(), float(sharpness))).rename("score")
    return grouped.agg(method).rename("score")


def exam_labels(case_ids: Sequence[str] | np.ndarray, labels: Sequence[int] | np.ndarray) -> pd.Series:
    """The label of each exam (all its slices must agree).

    Raises:
        ValueError: an exam whose slices carry different labels (names it).
    """
    ids = np.asarray(case_ids).astype(str).ravel()
    y = pd.Series(np.asarray(labels).astype(np.int64).ravel()).groupby(pd.Series(ids), sort=False)
    conflict = y.nunique()
    bad = conflict[conflict > 1].index.tolist()
    if bad:
        raise ValueError(f"exam(s) {bad[:10]} have slices with different labels; an exam-level label is needed.")
    return y.first().rename("label")


def exam_level_auc(
    case_ids: Sequence[str] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    method: str = "mean",
    sharpness: float = 5.0,
    context: str = "",
) -> tuple[float, pd.DataFrame]:
    """AUC over exams of aggregated slice probabilities.

    Args:
        case_ids: ``(N,)`` exam of each slice.
        labels: ``(N,)`` 0/1 label of each slice (constant within an exam).
        probs: ``(N,)`` slice probabilities.
        method: see :func:`aggregate_exam_scores`.
        sharpness: see :func:`aggregate_exam_scores`.
        context: prefix of error messages.

    Returns:
        ``(auc, table)`` with ``table`` columns ``case_id, label, score, n_slices``.
    """
    scores = aggregate_exam_scores(case_ids, probs, method, sharpness)
    y = exam_labels(case_ids, labels)
    counts = pd.Series(np.asarray(case_ids).astype(str).ravel()).value_counts()
    table = pd.DataFrame({"label": y, "score": scores, "n_slices": counts.reindex(scores.index)})
    table = table.rename_axis("case_id").reset_index()
    return auc(table["label"], table["score"], context=context), table


def select_planes(df: pd.DataFrame, planes: Sequence[str] | None, column: str = "plane") -> pd.DataFrame:
    """Keep the manifest rows of the given planes (``None``/empty: keep all rows).

    Raises:
        ValueError: planes requested but the manifest has no ``plane`` column, or a requested plane is absent
            (names the planes present).
    """
    if not planes:
        return df
    if column not in df.columns:
        raise ValueError(f"planes {list(planes)} requested but the manifest has no {column!r} column; columns: "
                         f"{list(df.columns)}.")
    present = sorted(set(df[column].dropna().astype(str)))
    absent = [p for p in planes if p not in present]
    if absent:
        raise ValueError(f"plane(s) {absent} not in the manifest's {column!r} column; planes present: {present}.")
    return df[df[column].astype(str).isin(list(planes))]
