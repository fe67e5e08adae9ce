"""train_classifier / predict_proba / binary_labels and the demo classification task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import modan_monai.evaluation.training as training
from modan_monai.data import manifest_to_datalist, read_manifest
from modan_monai.data.demo_tasks import demo_classification_manifest
from modan_monai.evaluation.training import (
    binary_labels,
    classification_transforms,
    predict_proba,
    train_classifier,
)
from modan_monai.handlers import KeepBestWeights
from modan_monai.networks import build_classifier

TINY = {"image_size": 32, "batch_size": 8, "num_workers": 0}


@pytest.fixture(scope="module")
def demo_task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    manifest = demo_classification_manifest(tmp_path_factory.mktemp("demo_cls"), size=32, per_pair=4)
    rows = binary_labels(manifest_to_datalist(read_manifest(manifest)))
    return {s: [d for d in rows if d["split"] == s] for s in ("train", "val", "test")}


def test_demo_task_is_deterministic_stratified_and_grouped(tmp_path: Path) -> None:
    first = pd.read_csv(demo_classification_manifest(tmp_path, size=32, per_pair=4))
    second = pd.read_csv(demo_classification_manifest(tmp_path, size=32, per_pair=4))
    pd.testing.assert_frame_equal(first, second)
    for split in ("train", "val", "test"):
        assert set(first.loc[first["split"] == split, "label"]) == {0, 1}, split
    assert (first.groupby("case_id")["split"].nunique() == 1).all()
    chest = first["path"].str.contains("chest")
    assert (first.loc[chest, "label"] == 1).all() and (first.loc[~chest, "label"] == 0).all()


@pytest.mark.parametrize(
    "values, positive, expected",
    [
        ([0, 1, 1], None, [0, 1, 1]),
        (["0", "1.0", True], None, [0, 1, 1]),
        (["benign", "malignant", "benign"], "malignant", [0, 1, 0]),
        ([2, 5, 5], 5, [0, 1, 1]),
    ],
)
def test_binary_labels(values: list, positive: object, expected: list[int]) -> None:
    rows = [{"image": f"{i}.png", "finding": v, "row": i} for i, v in enumerate(values)]
    out = binary_labels(rows, "finding", positive)
    assert [d["label"] for d in out] == expected
    assert all("label" not in d for d in rows)  # input left alone


@pytest.mark.parametrize(
    "values, column, positive, match",
    [
        ([0, 1, 2], "label", None, r"label column 'label' in manifest m\.csv is not binary 0/1: values seen .*2"),
        (["a", "b", "c"], "label", "a", r"'label' .* 3 distinct values seen \{'a' \(x1\), 'b'"),
        (["a", "b"], "label", "z", r"positive_value 'z' not found in label column 'label'.*'b'"),
        ([0, 1], "nodule", None, r"label column 'nodule' not found in manifest m\.csv; columns: \["),
        ([0, None, 1, ""], "label", None, r"'label' in manifest m\.csv is empty in rows \[1, 3\]"),
    ],
)
def test_binary_labels_errors(values: list, column: str, positive: object, match: str) -> None:
    rows = [{"image": f"{i}.png", "label": v, "row": i, "manifest": "m.csv"} for i, v in enumerate(values)]
    with pytest.raises(ValueError, match=match):
        binary_labels(rows, column, positive)


def test_train_classifier_rejects_bad_labels(demo_task: dict[str, list[dict]]) -> None:
    model = build_classifier()
    raw = [{**d, "label": "yes"} for d in demo_task["train"]]
    with pytest.raises(ValueError, match=r"training data .* int 0/1 labels under 'label'.*'yes'"):
        train_classifier(model, raw, None, epochs=1, **TINY)
    one_class = [d for d in demo_task["val"] if d["label"] == 0]
    with pytest.raises(ValueError, match=r"validation data .* needs both classes.*only \[0\]"):
        train_classifier(model, demo_task["train"], one_class, epochs=1, **TINY)


def test_transforms_shapes(demo_task: dict[str, list[dict]]) -> None:
    item = classification_transforms(32, augment=True)(demo_task["train"][0])
    assert set(item) == {"image", "label"}
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0 + 1e-6


def test_linear_probe_leaves_encoder_and_batchnorm_statistics_unchanged(demo_task: dict[str, list[dict]]) -> None:
    torch.manual_seed(0)
    model = build_classifier(freeze_encoder=True)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    result = train_classifier(model, demo_task["train"], demo_task["val"], epochs=1, **TINY)
    after = result.model.encoder.state_dict()
    assert any("running_mean" in k for k in encoder_before)
    for k, v in encoder_before.items():  # weights, running_mean/var and num_batches_tracked
        assert torch.equal(after[k], v), k
    assert not torch.equal(result.model.classifier.weight, head_before["weight"])


class ScriptedKeepBestWeights(KeepBestWeights):
    """KeepBestWeights fed a fixed AUC sequence (best at epoch 1), recording the weights after every epoch."""

    sequence = [0.9, 0.4]
    snapshots: list[dict[str, torch.Tensor]] = []

    def __call__(self, engine) -> None:  # noqa: ANN001 - ignite engine
        type(self).snapshots.append({k: v.detach().clone() for k, v in self.network.state_dict().items()})
        engine.state.metrics[self.metric_name] = self.sequence[engine.state.epoch - 1]
        super().__call__(engine)


def test_finetune_restores_best_weights_not_final(
    demo_task: dict[str, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "KeepBestWeights", ScriptedKeepBestWeights)
    ScriptedKeepBestWeights.snapshots = []
    torch.manual_seed(0)
    model = build_classifier()
    running_mean_before = model.encoder.bn1.running_mean.clone()
    result = train_classifier(model, demo_task["train"], demo_task["val"], epochs=2, step_size=1, **TINY)
    best, final = ScriptedKeepBestWeights.snapshots
    assert result.best_epoch == 1 and result.best_val_auc == pytest.approx(0.9)
    state = result.model.state_dict()
    for k, v in best.items():
        assert torch.equal(state[k], v), k
    assert not torch.equal(state["classifier.weight"], final["classifier.weight"])
    assert not torch.equal(final["encoder.bn1.running_mean"], running_mean_before)  # fine-tuning moves BN stats
    assert [h["epoch"] for h in result.history] == [1, 2]
    np.testing.assert_allclose([h["lr"] for h in result.history], [1e-4, 1e-5])
    assert [h["val_auc"] for h in result.history] == pytest.approx([0.9, 0.4])
    probs = predict_proba(result.model, demo_task["test"], image_size=32)
    assert probs.shape == (len(demo_task["test"]),) and ((probs >= 0) & (probs <= 1)).all()
