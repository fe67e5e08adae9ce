"""Multi-class and multi-label metrics (modan_monai.evaluation.metrics) against hand-computed and sklearn values."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from modan_monai.evaluation import multiclass_metrics, multilabel_metrics, one_vs_rest_auc


def _pairwise_auc(truth, scores) -> float:
    """AUC as the share of (positive, negative) pairs ranked right, ties counting one half (Mann-Whitney)."""
    pos = [s for t, s in zip(truth, scores) if t == 1]
    neg = [s for t, s in zip(truth, scores) if t == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _quadratic_kappa(y, pred, classes) -> float:
    """Cohen's kappa with weights (i - j)^2 / (C - 1)^2, written out: 1 - sum(w O) / sum(w E)."""
    observed = np.zeros((classes, classes))
    for a, b in zip(y, pred):
        observed[a, b] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / len(y)
    i, j = np.indices((classes, classes))
    weights = (i - j) ** 2 / (classes - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


Y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
PRED = np.array([0, 0, 0, 0, 1, 0, 2, 1])
NAMES = ["KL0", "KL1", "KL2"]


def _probabilities(pred, classes, seed=0) -> np.ndarray:
    """Rows summing to 1 whose arg-max is ``pred``, with varied scores so the AUCs are not trivial."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.3, size=(len(pred), classes))
    p[np.arange(len(pred)), pred] = rng.uniform(0.5, 0.9, size=len(pred))
    return p / p.sum(axis=1, keepdims=True)


def test_multiclass_metrics_hand_computed():
    p = _probabilities(PRED, 3)
    metrics = multiclass_metrics(Y, p, NAMES, ordinal=True)
    assert metrics.accuracy == pytest.approx(6 / 8)
    assert metrics.balanced_accuracy == pytest.approx((4 / 4 + 1 / 2 + 1 / 2) / 3)
    # confusion [[4,0,0],[1,1,0],[0,1,1]]: sum(wO) = 0.5, sum(wE) = 2.5 (worked by hand)
    assert metrics.kappa == pytest.approx(0.8)
    assert metrics.kappa == pytest.approx(_quadratic_kappa(Y, PRED, 3))
    expected = {name: _pairwise_auc(Y == c, p[:, c]) for c, name in enumerate(NAMES)}
    assert metrics.auc.per_class == pytest.approx(expected)
    assert metrics.auc.macro == pytest.approx(np.mean(list(expected.values())))
    assert metrics.auc.macro == pytest.approx(roc_auc_score(Y, p, multi_class="ovr", average="macro"))
    assert metrics.auc.averaged_over == tuple(NAMES) and metrics.auc.undefined == ()
    assert multiclass_metrics(Y, p, NAMES).kappa is None


def test_a_class_absent_from_the_truth_is_nan_and_named(caplog):
    y = np.array([0, 0, 1, 1, 0])
    p = _probabilities(np.array([0, 1, 1, 2, 0]), 3, seed=1)
    with caplog.at_level(logging.WARNING, logger="modan_monai.evaluation.metrics"):
        metrics = multiclass_metrics(y, p, NAMES)
    auc = metrics.auc
    assert math.isnan(auc.per_class["KL2"])
    assert auc.averaged_over == ("KL0", "KL1") and auc.undefined == ("KL2",)
    assert auc.macro == pytest.approx((_pairwise_auc(y == 0, p[:, 0]) + _pairwise_auc(y == 1, p[:, 1])) / 2)
    assert "['KL2']" in caplog.text and "over the 2 class(es)" in caplog.text
    row = auc.as_row()
    assert row["auc"] == auc.macro and row["auc_n_classes"] == 2 and math.isnan(row["auc_KL2"])
    assert list(row) == ["auc", "auc_n_classes", "auc_KL0", "auc_KL1", "auc_KL2"]


def test_no_class_with_an_auc_is_an_error():
    with pytest.raises(ValueError, match=r"repeat 0: AUC is undefined for every class: positives per class "
                                         r"\{'KL0': '3 of 3', 'KL1': '0 of 3', 'KL2': '0 of 3'\}"):
        multiclass_metrics([0, 0, 0], _probabilities(np.array([0, 1, 2]), 3), NAMES, context="repeat 0: ")


def test_multilabel_auc_honours_the_ignore_mask():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
    scores = np.array([[0.9, 0.2], [0.4, 0.7], [0.3, 0.6], [0.5, 0.1], [0.8, 0.9], [0.2, 0.4]])
    plain = multilabel_metrics(targets, scores, ["Edema", "Fracture"])
    assert list(plain.per_class.values()) == pytest.approx(roc_auc_score(targets, scores, average=None))
    mask = np.ones_like(targets, dtype=bool)
    mask[4, 1] = mask[2, 0] = False  # two ignored (uncertain) labels
    masked = multilabel_metrics(targets, scores, ["Edema", "Fracture"], mask=mask)
    keep0, keep1 = mask[:, 0], mask[:, 1]
    assert masked.per_class["Edema"] == pytest.approx(_pairwise_auc(targets[keep0, 0], scores[keep0, 0]))
    assert masked.per_class["Fracture"] == pytest.approx(_pairwise_auc(targets[keep1, 1], scores[keep1, 1]))
    assert masked.per_class != plain.per_class
    # what an ignored cell holds does not count
    flipped_targets, flipped_scores = targets.copy(), scores.copy()
    flipped_targets[4, 1], flipped_scores[2, 0] = 0, 0.99
    again = multilabel_metrics(flipped_targets, flipped_scores, ["Edema", "Fracture"], mask=mask)
    assert again.per_class == masked.per_class
    assert masked.macro == pytest.approx(np.mean(list(masked.per_class.values())))


def test_a_label_without_positives_is_named():
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    auc = one_vs_rest_auc(targets, np.random.default_rng(0).random((4, 2)), ["Mass", "Hernia"])
    assert auc.undefined == ("Hernia",) and auc.averaged_over == ("Mass",) and auc.macro == auc.per_class["Mass"]


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: multiclass_metrics([0, 1], [[0.5, 0.5, 0.0]], NAMES), r"y_true of shape \(2,\).*expected \(1,\)"),
        (lambda: multiclass_metrics([0, 3], [[0.5, 0.5, 0], [0, 0, 1]], NAMES), r"class indices \[3\] are outside"),
        (lambda: multiclass_metrics([0, 1], [[0.5, 0.5], [0, 1]], NAMES),
         r"scores of shape \(2, 2\): expected \(N, 3\)"),
        (lambda: multiclass_metrics([0.0, 1.0], [[0.5, 0.5, 0], [0, 1, 0]], NAMES), r"integer class indices"),
        (lambda: multilabel_metrics([[1, 2], [0, 1]], [[0.1, 0.2], [0.3, 0.4]], "ab"),
         r"targets must be 0/1; found \[2.0\]"),
        (lambda: multilabel_metrics([[1, 0], [0, 1]], [[np.nan, 0.2], [0.3, 0.4]], "ab"), r"1 score\(s\) are NaN"),
        (lambda: multilabel_metrics([[1, 0], [0, 1]], [[0.1, 0.2], [0.3, 0.4]], "ab", mask=[[True, True]]),
         r"mask of shape \(1, 2\)"),
        (lambda: multilabel_metrics([[1, 0], [0, 1]], [[0.1, 0.2], [0.3, 0.4]], "aa"), r"not unique"),
    ],
)
def test_refusals(call, message):
    with pytest.raises(ValueError, match=message):
        call()
