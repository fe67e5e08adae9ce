"""ExamROCAUC against a plainly written reference: exam-level (mean / max / lse of slice scores) and image-level AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import ROCAUC, from_engine

from modan_monai.handlers import ExamROCAUC


def reference_auc(labels: list[int], scores: list[float]) -> float:
    """Mann-Whitney AUC: the share of (positive, negative) pairs ranked correctly, ties counting half."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def reference_exam_auc(exams: list[str], labels: list[int], scores: list[float], method: str, r: float = 5.0) -> float:
    per_exam: dict[str, list[float]] = {}
    label_of: dict[str, int] = {}
    for e, y, s in zip(exams, labels, scores):
        per_exam.setdefault(e, []).append(s)
        label_of[e] = y
    aggregated = {}
    for e, values in per_exam.items():
        if method == "mean":
            aggregated[e] = sum(values) / len(values)
        elif method == "max":
            aggregated[e] = max(values)
        else:  # (1/r) log mean exp(r p)
            aggregated[e] = math.log(sum(math.exp(r * v) for v in values) / len(values)) / r
    return reference_auc([label_of[e] for e in aggregated], list(aggregated.values()))


def slices(seed: int = 0, n_exams: int = 9) -> tuple[list[dict], list[float], list[int]]:
    """Rows of exams with 1-6 slices over two datasets (case ids repeat across datasets), scores and labels."""
    rng = np.random.default_rng(seed)
    rows, scores, labels = [], [], []
    for exam in range(n_exams):
        label = exam % 2
        for _ in range(int(rng.integers(1, 7))):
            rows.append({"dataset": f"d{exam % 3}", "case_id": str(exam // 3)})
            scores.append(float(np.clip(rng.normal(0.4 + 0.2 * label, 0.25), 0, 1)))
            labels.append(label)
    return rows, scores, labels


def run_metric(metric: ExamROCAUC, rows: list[dict], scores: list[float], labels: list[int], batch: int,
               decollated: bool) -> float:
    """Feed an ignite engine MONAI-evaluator-shaped iterations (softmax pairs, one-hot labels) of ``batch`` items."""
    chunks = [range(i, min(i + batch, len(rows))) for i in range(0, len(rows), batch)]

    def step(engine: Engine, idx: range) -> list[dict]:
        items = [rows[i] for i in idx]
        engine.state.batch = items if decollated else {k: [r[k] for r in items] for k in items[0]}
        return [{"pred": torch.tensor([1.0 - scores[i], scores[i]]),
                 "label": torch.nn.functional.one_hot(torch.tensor(labels[i]), 2).float()} for i in idx]

    engine = Engine(step)
    metric.attach(engine, "val_auc")
    engine.run(chunks, max_epochs=1)
    return float(engine.state.metrics["val_auc"])


@pytest.mark.parametrize("method", ["mean", "max", "lse"])
@pytest.mark.parametrize("decollated", [True, False])
def test_exam_level_matches_reference(method: str, decollated: bool) -> None:
    rows, scores, labels = slices()
    exams = [f"{r['dataset']}/{r['case_id']}" for r in rows]
    value = run_metric(ExamROCAUC(level="exam", aggregation=method), rows, scores, labels, 4, decollated)
    np.testing.assert_allclose(value, reference_exam_auc(exams, labels, scores, method), rtol=1e-12)
    # grouping matters: the same scores counted per slice give another value on this data
    assert value != pytest.approx(reference_auc(labels, scores))


def test_image_level_matches_reference_and_monai_rocauc() -> None:
    rows, scores, labels = slices(seed=1)
    value = run_metric(ExamROCAUC(level="image"), rows, scores, labels, 5, True)
    np.testing.assert_allclose(value, reference_auc(labels, scores), rtol=1e-12)
    engine = Engine(lambda e, i: [{"pred": torch.tensor([1.0 - scores[j], scores[j]]),
                                   "label": torch.nn.functional.one_hot(torch.tensor(labels[j]), 2).float()}
                                  for j in i])
    ROCAUC(output_transform=from_engine(["pred", "label"])).attach(engine, "monai_auc")
    engine.run([range(0, 10), range(10, len(rows))], max_epochs=1)
    np.testing.assert_allclose(value, engine.state.metrics["monai_auc"], rtol=1e-6)  # MONAI computes in float32


def test_reset_between_evaluations() -> None:
    rows, scores, labels = slices(seed=2)
    metric = ExamROCAUC(aggregation="max")
    first = run_metric(metric, rows, scores, labels, 3, True)
    again = run_metric(metric, rows, scores, labels, 7, True)  # a second epoch does not accumulate the first
    assert first == again


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"level must be one of \('exam', 'image'\), got 'slice'"):
        ExamROCAUC(level="slice")
    with pytest.raises(ValueError, match="aggregation must be one of"):
        ExamROCAUC(aggregation="median")
    rows, scores, labels = slices()
    with pytest.raises(KeyError, match=r"batch item 0 has no \['case_id'\] .*keep_keys"):
        run_metric(ExamROCAUC(), [{"dataset": r["dataset"]} for r in rows], scores, labels, 4, True)
    with pytest.raises(ValueError, match=r"ExamROCAUC\(mean per exam\): AUC is undefined: .*single class \[1\]"):
        run_metric(ExamROCAUC(), rows, scores, [1] * len(rows), 4, True)
    with pytest.raises(ValueError, match=r"exam\(s\) \['d0/0'\] have slices with different labels"):
        run_metric(ExamROCAUC(), rows, scores, [1 - labels[0]] + labels[1:], 4, True)
