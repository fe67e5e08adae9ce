"""ClassificationAUC (macro AUC + per-class values into the engine's metrics), its factory and ROCCurveSaver."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from modan_monai.handlers import ClassificationAUC, ExamROCAUC, ROCCurveSaver, classification_auc_metric


def _engine(preds: list, labels: list) -> SimpleNamespace:
    output = [{"pred": torch.tensor(p, dtype=torch.float32), "label": torch.tensor(y, dtype=torch.float32)}
              for p, y in zip(preds, labels)]
    return SimpleNamespace(state=SimpleNamespace(output=output, batch=None, metrics={}))


def test_multiclass_values_land_beside_the_key_metric() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    p = rng.dirichlet(np.ones(3), size=len(y))
    metric = ClassificationAUC("multiclass", ["0", "1", "2"], ordinal=True)
    engine = _engine(p.tolist(), np.eye(3)[y].tolist())  # one-hot labels, as the bundle's postprocessing gives
    metric.started(engine)
    metric.iteration_completed(engine)
    metric.completed(engine, "val_auc")
    per_class = [roc_auc_score(y == c, p[:, c]) for c in range(3)]
    m = engine.state.metrics
    assert m["val_auc"] == pytest.approx(np.mean(per_class))
    assert [m[f"val_auc_{c}"] for c in "012"] == pytest.approx(per_class)
    assert m["val_accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    assert {"val_balanced_accuracy", "val_kappa"} <= set(m)


def test_multilabel_ignores_nan_labels() -> None:
    labels = [[1, 0], [0, float("nan")], [1, 1], [0, 0], [0, 1]]
    preds = [[0.9, 0.2], [0.1, 0.99], [0.8, 0.7], [0.3, 0.4], [0.2, 0.1]]
    metric = ClassificationAUC("multilabel", ["Mass", "Edema"])
    engine = _engine(preds, labels)
    metric.started(engine)
    metric.iteration_completed(engine)
    metric.completed(engine, "test_auc")
    m = engine.state.metrics
    assert m["test_auc_Mass"] == 1.0
    # Edema counts 4 rows (the NaN one is out): positives 0.7, 0.1; negatives 0.2, 0.4 -> 2 of 4 pairs
    assert m["test_auc_Edema"] == pytest.approx(0.5)
    assert m["test_auc"] == pytest.approx(0.75) and "test_accuracy" not in m


def test_factory_and_errors() -> None:
    assert isinstance(classification_auc_metric("binary", ["n", "p"], level="exam"), ExamROCAUC)
    assert isinstance(classification_auc_metric("multilabel", ["a"]), ClassificationAUC)
    with pytest.raises(ValueError, match="config id 'val_level' is 'exam'"):
        classification_auc_metric("multiclass", ["a", "b"], level="exam")
    metric = ClassificationAUC("multiclass", ["a", "b", "c"])
    metric.reset()
    metric.update(([torch.tensor([0.5, 0.5])], [torch.tensor(0)]))
    with pytest.raises(ValueError, match=r"predictions with \[2\] values: expected 3"):
        metric.compute()
    with pytest.raises(ValueError, match="no predictions were accumulated"):
        ClassificationAUC("multilabel", ["a"]).compute()


@pytest.mark.parametrize("task, names, labels", [
    ("binary", ["negative", "positive"], [[1, 0], [0, 1], [0, 1], [1, 0]]),
    ("multiclass", ["a", "b", "c"], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]),
    ("multilabel", ["a", "b", "c"], [[1, 0, math.nan], [0, 1, 1], [1, 1, 0], [0, 0, 1]]),
])
def test_roc_png_is_written(tmp_path: Path, task: str, names: list[str], labels: list) -> None:
    rng = np.random.default_rng(1)
    preds = rng.uniform(size=(4, len(names))).tolist()
    saver = ROCCurveSaver(task, names, output_dir=tmp_path)
    engine = _engine(preds, labels)
    saver._reset(engine)
    saver._collect(engine)
    saver(engine)
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
