"""The monitor's datalist: any labelled manifest, every split, a missing or empty label column named with its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modan_monai.data import write_manifest
from modan_monai.handlers import monitor_datalist


def labelled_manifest(root: Path, labels: list[object]) -> Path:
    """A manifest of small PNGs (US / breast), one per label, alternating train / val, with a ``tumour`` column."""
    rows = []
    for i, label in enumerate(labels):
        path = root / f"img{i}.png"
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(path)
        rows.append({"path": str(path), "modality": "US", "anatomy": "breast", "split": ("train", "val")[i % 2],
                     "dataset": "busi_like", "case_id": f"case{i}", "tumour": label})
    return write_manifest(pd.DataFrame(rows), root / "labelled.csv")


def test_rows_of_every_split_keep_the_label_column(tmp_path: Path) -> None:
    manifest = labelled_manifest(tmp_path, ["benign", "malignant", "malignant", "benign"])
    rows = monitor_datalist(manifest, label_column="tumour")
    assert [r["split"] for r in rows] == ["train", "val", "train", "val"]
    assert [r["tumour"] for r in rows] == ["benign", "malignant", "malignant", "benign"]
    assert monitor_datalist(manifest) == rows  # no label column: nothing checked, the same rows


def test_missing_label_column_names_the_file_the_column_and_the_ids(tmp_path: Path) -> None:
    manifest = labelled_manifest(tmp_path, ["benign", "malignant"])
    with pytest.raises(ValueError) as err:
        monitor_datalist(manifest, label_column="diagnosis")
    message = str(err.value)
    assert f"monitor manifest {manifest}" in message and "'monitor_manifest'" in message
    assert "no label column 'diagnosis' (config id 'monitor_label')" in message and "'tumour'" in message


def test_empty_label_cells_are_named_by_row(tmp_path: Path) -> None:
    manifest = labelled_manifest(tmp_path, ["benign", None, "malignant", ""])
    with pytest.raises(ValueError, match=r"label column 'tumour' \(config id 'monitor_label'\) is empty in row\(s\) "
                                         r"\[1, 3\]"):
        monitor_datalist(manifest, label_column="tumour")
