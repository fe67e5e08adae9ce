"""Multi-class and multi-label targets from manifest rows (modan_monai.evaluation.labels)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modan_monai.data.manifest import load_datalist, write_manifest
from modan_monai.evaluation import (
    UNCERTAIN_POLICIES,
    multiclass_labels,
    multilabel_from_columns,
    multilabel_from_findings,
)


def _rows(column: str, values: list) -> list[dict]:
    return [{"row": i, "manifest": "m.csv", column: v} for i, v in enumerate(values)]


def test_multiclass_order_from_the_column_or_a_list():
    indices, names = multiclass_labels(_rows("dx", ["nv", "mel", "bkl", "nv"]), "dx")
    assert names == ["bkl", "mel", "nv"] and indices.tolist() == [2, 1, 0, 2]
    # integer grades as a manifest reads them back (text, int, float) sort numerically: "10" after "9"
    indices, names = multiclass_labels(_rows("g", ["2", 0, 10.0, "9", 2.0]), "g")
    assert names == ["0", "2", "9", "10"] and indices.tolist() == [1, 0, 3, 2, 1]
    indices, names = multiclass_labels(_rows("g", ["1", "0"]), "g", class_names=[0, 1, 2, 3, 4])
    assert names == ["0", "1", "2", "3", "4"] and indices.tolist() == [1, 0]
    indices, names = multiclass_labels(_rows("label", ["normal", "benign"]),
                                       class_names=["normal", "benign", "malignant"])
    assert indices.tolist() == [0, 1] and indices.dtype == np.int64


@pytest.mark.parametrize(
    "values,options,message",
    [
        (["a", "", "b", None], {}, r"'dx' in manifest m.csv is empty in rows \[1, 3\]"),
        (["a", "c", "b"], {"class_names": ["a", "b"]},
         r"holds \['c'\], not among class_names \['a', 'b'\], in rows \[1\]"),
        (["a", "a"], {}, r"at least 2 classes, got \['a'\]"),
        (["a", "b"], {"class_names": ["a", "b", "a"]}, r"name the class\(es\) \['a'\] twice"),
    ],
)
def test_multiclass_refusals_name_the_rows(values, options, message):
    with pytest.raises(ValueError, match=message):
        multiclass_labels(_rows("dx", values), "dx", **options)


def test_missing_column_names_the_columns():
    with pytest.raises(ValueError, match=r"label column 'grade' not found in manifest m.csv; columns: \['dx', "):
        multiclass_labels(_rows("dx", ["a", "b"]), "grade")


# CheXpert-like cells: 1 / 0 / -1 (uncertain) / blank (not mentioned), as builders write and manifests read them back.
CELLS = {"A": ["1", "-1", "", 0.0], "B": [-1.0, "0", "1.0", float("nan")]}


def _chexpert_rows() -> list[dict]:
    return [{"row": i, "manifest": "c.csv", "A": CELLS["A"][i], "B": CELLS["B"][i]} for i in range(4)]


@pytest.mark.parametrize(
    "uncertain,blank,targets,mask",
    [
        ("ones", "zeros", [[1, 1], [1, 0], [0, 1], [0, 0]], [[1, 1], [1, 1], [1, 1], [1, 1]]),
        ("zeros", "ones", [[1, 0], [0, 0], [1, 1], [0, 1]], [[1, 1], [1, 1], [1, 1], [1, 1]]),
        ("ignore", "zeros", [[1, 0], [0, 0], [0, 1], [0, 0]], [[1, 0], [0, 1], [1, 1], [1, 1]]),
        ("zeros", "ignore", [[1, 0], [0, 0], [0, 1], [0, 0]], [[1, 1], [1, 1], [0, 1], [1, 0]]),
        ("ones", None, [[1, 1], [1, 0], [1, 1], [0, 1]], [[1, 1], [1, 1], [1, 1], [1, 1]]),
    ],
)
def test_multilabel_columns_uncertain_policies(uncertain, blank, targets, mask):
    y, m = multilabel_from_columns(_chexpert_rows(), ["A", "B"], uncertain=uncertain, blank=blank)
    assert y.dtype == np.float32 and y.tolist() == targets
    assert m.dtype == bool and m.astype(int).tolist() == mask


def test_multilabel_columns_refusals():
    rows = _chexpert_rows()
    with pytest.raises(ValueError, match=r"'A' in manifest c.csv is uncertain \(-1\) in rows \[1\]; .*uncertain="):
        multilabel_from_columns(rows, ["A", "B"])
    with pytest.raises(ValueError, match=r"'A' in manifest c.csv is empty in rows \[2\]; .*blank="):
        multilabel_from_columns(rows, ["A", "B"], uncertain="zeros", blank="error")
    with pytest.raises(ValueError, match=r"policy 'maybe' is not one of"):
        multilabel_from_columns(rows, ["A", "B"], uncertain="maybe")
    bad = [{"row": 7, "manifest": "c.csv", "A": "2"}, {"row": 8, "manifest": "c.csv", "A": "yes"}]
    with pytest.raises(ValueError, match=r"'A' in manifest c.csv holds \['2', 'yes'\] in rows \[7, 8\]"):
        multilabel_from_columns(bad, ["A"], uncertain="ignore")
    # a row whose labels are all ignored carries no label: refused, naming it
    multilabel_from_columns(rows, ["A", "B"], uncertain="ignore", blank="ignore")  # every row keeps a label
    rows.append({"row": 4, "manifest": "c.csv", "A": "-1", "B": ""})
    with pytest.raises(ValueError, match=r"rows \[4\] of manifest c.csv have every label of \['A', 'B'\] uncertain"):
        multilabel_from_columns(rows, ["A", "B"], uncertain="ignore", blank="ignore")
    multilabel_from_columns(rows, ["A", "B"], uncertain="ignore", blank="zeros")
    with pytest.raises(ValueError, match=r"label column 'C' not found"):
        multilabel_from_columns(rows, ["A", "C"], uncertain="ignore")
    assert "ignore" in UNCERTAIN_POLICIES


FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Hernia"]


def test_multilabel_from_findings():
    rows = _rows("Finding Labels", ["Cardiomegaly|Effusion", "No Finding", "Hernia", " Atelectasis | Hernia "])
    y, m = multilabel_from_findings(rows, "Finding Labels", FINDINGS)
    assert y.tolist() == [[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 1]]
    assert m.all() and m.shape == (4, 4)


@pytest.mark.parametrize(
    "values,labels,message",
    [
        (["Hernia", ""], FINDINGS, r"'Finding Labels' in manifest m.csv is empty in rows \[1\]"),
        (["Hernia", "Mass|Hernia"], FINDINGS, r"row 1: finding\(s\) \['Mass'\] not in the label list"),
        (["No Finding|Hernia"], FINDINGS, r"row 0: 'No Finding' beside other findings"),
        (["Hernia"], FINDINGS + ["No Finding"], r"not 'No Finding'"),
    ],
)
def test_multilabel_from_findings_refusals(values, labels, message):
    with pytest.raises(ValueError, match=message):
        multilabel_from_findings(_rows("Finding Labels", values), "Finding Labels", labels)


def test_chexpert_manifest_round_trip(tmp_path):
    """-1 and blank cells written by a builder-style frame keep their meaning through write_manifest/load_datalist."""
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    frame = pd.DataFrame({"path": [str(image)] * 3, "key": None, "index": pd.array([0, 1, 2], dtype="Int64"),
                          "modality": "XR", "anatomy": "chest", "split": "train", "dataset": "x",
                          "case_id": ["p1", "p2", "p3"],
                          "Edema": pd.array([1, -1, None], dtype="Int64"),
                          "Fracture": pd.array([0, 0, 1], dtype="Int64")})
    datalist = load_datalist(write_manifest(frame, tmp_path / "m.csv"), check_files=False)
    y, m = multilabel_from_columns(datalist, ["Edema", "Fracture"], uncertain="ignore", blank="zeros")
    assert y.tolist() == [[1, 0], [0, 0], [0, 1]]
    assert m.tolist() == [[True, True], [False, True], [True, True]]
