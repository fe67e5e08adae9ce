"""task_labels / TaskLabels / TASKS (the classify bundle's task id), check_task_labels and predict_proba per task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from modan_monai.evaluation.training import (
    TASKS,
    TaskLabels,
    binary_labels,
    check_task_labels,
    predict_proba,
    task_labels,
)

M = {"manifest": "m.csv"}


def rows(column: str, values: list) -> list[dict]:
    return [{**M, "row": i, "split": "train", column: v} for i, v in enumerate(values)]


def test_binary_is_binary_labels() -> None:
    data = rows("finding", ["benign", "malignant", "benign"])
    labelled = task_labels(data, "binary", "finding", positive_value="malignant")
    assert labelled == TaskLabels(binary_labels(data, "finding", "malignant"), ["negative", "positive"])
    named = task_labels(rows("label", [0, 1]), class_names=["benign", "malignant"])
    assert named.class_names == ["benign", "malignant"]
    assert TASKS == ("binary", "multiclass", "multilabel")


def test_multiclass_indices_and_class_order() -> None:
    data = rows("kl", [2, 0, 4, 1, 3, 10])
    labelled = task_labels(data, "multiclass", "kl")
    assert labelled.class_names == ["0", "1", "2", "3", "4", "10"]  # numerically sorted grades
    assert [d["label"] for d in labelled.datalist] == [2, 0, 4, 1, 3, 5]
    declared = task_labels(rows("dx", ["nv", "mel", "nv"]), "multiclass", "dx", class_names=["nv", "mel", "bcc"])
    assert [d["label"] for d in declared.datalist] == [0, 1, 0] and declared.class_names == ["nv", "mel", "bcc"]


def test_multilabel_findings_column() -> None:
    data = rows("Finding Labels", ["Mass|Edema", "No Finding", "Edema", "Hernia"])
    labelled = task_labels(data, "multilabel", "Finding Labels")
    assert labelled.class_names == ["Edema", "Hernia", "Mass"]
    assert [d["label"] for d in labelled.datalist] == [[1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0]]
    declared = task_labels(data, "multilabel", "Finding Labels", class_names=["Mass", "Edema", "Hernia", "Nodule"])
    assert declared.datalist[0]["label"] == [1.0, 1.0, 0.0, 0.0]


def test_multilabel_columns_with_uncertain_policies() -> None:
    data = [{**M, "row": 0, "Edema": "1", "Mass": "-1"}, {**M, "row": 1, "Edema": "", "Mass": "0"}]
    ignored = task_labels(data, "multilabel", label_columns=["Edema", "Mass"], uncertain_policy="ignore")
    assert ignored.class_names == ["Edema", "Mass"]
    assert ignored.datalist[0]["label"][0] == 1.0 and math.isnan(ignored.datalist[0]["label"][1])
    assert math.isnan(ignored.datalist[1]["label"][0]) and ignored.datalist[1]["label"][1] == 0.0
    ones = task_labels(data, "multilabel", label_columns=["Edema", "Mass"], uncertain_policy="ones")
    assert [d["label"] for d in ones.datalist] == [[1.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("data, kwargs, match", [
    (rows("label", [0, 1]), {"task": "multi"}, r"config id 'task' is 'multi': choose one of \['binary', 'multiclass'"),
    (rows("g", [0, 1, 2]), {"task": "binary", "label_column": "g"}, r"label column 'g' in manifest m\.csv is not "
     r"binary 0/1: values seen .*; for more than two classes set config id 'task' to 'multiclass'"),
    (rows("g", ["a", "b", "c"]), {"task": "binary", "label_column": "g", "positive_value": "a"}, r"not binary: 3 "
     r"distinct values seen .*task: multiclass"),
    (rows("g", [0, "", 2, None]), {"task": "multiclass", "label_column": "g"}, r"label column 'g' in manifest m\.csv "
     r"is empty in rows \[1, 3\]"),
    (rows("f", ["Mass", "Nodule|Mass"]), {"task": "multilabel", "label_column": "f", "class_names": ["Mass"]},
     r"findings column 'f' in manifest m\.csv row 1: finding\(s\) \['Nodule'\] not in the label list"),
    (rows("g", ["a", "b"]), {"task": "multiclass", "label_column": "g", "class_names": ["a"]}, r"holds \['b'\], not "
     r"among class_names \['a'\], in rows \[1\]"),
    ([{**M, "row": 7, "A": "-1", "B": ""}], {"task": "multilabel", "label_columns": ["A", "B"],
                                             "uncertain_policy": "ignore"}, r"rows \[7\] of manifest m\.csv have every "
     r"label of \['A', 'B'\] uncertain or empty, all ignored"),
    (rows("g", ["a", "b"]), {"task": "multiclass", "label_column": "g", "label_columns": ["g"]},
     r"config id 'label_columns' \(\['g'\]\) is for task 'multilabel'"),
    (rows("g", ["a", "b"]), {"task": "multiclass", "label_column": "g", "uncertain_policy": "ones"},
     r"config id 'uncertain_policy' \('ones'\) applies to"),
    (rows("g", ["a", "b"]), {"task": "multiclass", "label_column": "g", "positive_value": "a"},
     r"config id 'positive_value' \('a'\) is for task 'binary'"),
    ([{**M, "row": 0, "A": "1", "B": "0"}], {"task": "multilabel", "label_columns": ["A", "B"],
                                            "class_names": ["B", "A"]}, r"config id 'class_names' \['B', 'A'\] does "
     r"not match config id 'label_columns' \['A', 'B'\]"),
    (rows("label", [0, 1]), {"class_names": ["a", "b", "c"]}, r"config id 'class_names' names 3 classes"),
])
def test_bad_input_is_named(data: list[dict], kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        task_labels(data, **kwargs)


def test_check_task_labels_names_the_set_and_the_missing_classes() -> None:
    data = [{**M, "label": y} for y in (0, 1, 1)]
    check_task_labels(data, "fold0: validation", "multiclass", ["a", "b", "c"], training=False)
    with pytest.raises(ValueError, match=r"fold0: training data \(manifest m\.csv\) lacks the class\(es\) \['c'\]"):
        check_task_labels(data, "fold0: training", "multiclass", ["a", "b", "c"], training=True)
    with pytest.raises(ValueError, match=r"int class indices in \[0, 2\)"):
        check_task_labels([{**M, "label": 2}], "x", "multiclass", ["a", "b"], training=False)
    multilabel = [{**M, "label": [1.0, 0.0]}, {**M, "label": [0.0, math.nan]}]
    with pytest.raises(ValueError, match=r"training data \(manifest m\.csv\) has no positive of the label\(s\) \['B'\]"
                                         r" in its 2 rows"):
        check_task_labels(multilabel, "training", "multilabel", ["A", "B"], training=True)
    check_task_labels(multilabel, "validation", "multilabel", ["A", "B"], training=False)
    with pytest.raises(ValueError, match=r"a list of 3 values"):
        check_task_labels(multilabel, "validation", "multilabel", ["A", "B", "C"], training=False)


class Linear(nn.Module):
    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(4, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(len(x), -1)[:, :4])


@pytest.mark.parametrize("task, outputs, shape", [("binary", 2, (5,)), ("multiclass", 3, (5, 3)),
                                                  ("multilabel", 3, (5, 3))])
def test_predict_proba_per_task(task: str, outputs: int, shape: tuple) -> None:
    torch.manual_seed(0)
    model = Linear(outputs)
    data = [{"image": torch.rand(1, 2, 2)} for _ in range(5)]
    p = predict_proba(model, data, transform=lambda d: d, task=task)
    logits = model(torch.stack([d["image"] for d in data])).detach().double()
    expected = {"binary": lambda z: torch.softmax(z, 1)[:, 1], "multiclass": lambda z: torch.softmax(z, 1),
                "multilabel": torch.sigmoid}[task](logits).numpy()
    assert p.shape == shape
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="config id 'task' is 'ordinal'"):
        predict_proba(model, data, transform=lambda d: d, task="ordinal")
