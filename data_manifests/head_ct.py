"""Manifest builder for the Kaggle "Head CT - hemorrhage" set (Felipe Kitamura, 2018).

Expected raw layout::

    head_ct_hemorrhage/head_ct/000.png ... 199.png     (zero-padded 3-digit ids)
    head_ct_hemorrhage/labels.csv                      (header "id, hemorrhage": note the space after the comma)

``labels.csv`` rows ``0,1`` give the integer id (matched to ``NNN.png``) and the hemorrhage label. One row per image:
``modality`` ``CT``, ``anatomy`` ``head``, ``hemorrhage`` 1/0, ``case_id`` = file stem. A label row without an image
or an image without a label row is an error.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import IMAGE_SUFFIXES, as_frame, preview, require_dir, require_file

__all__ = ["build"]


def build(root: str | Path, dataset: str = "head_ct", split: str = "train") -> pd.DataFrame:
    """Build the head CT hemorrhage manifest.

    Args:
        root: folder holding ``head_ct/`` and ``labels.csv``.
        dataset: value of the ``dataset`` column.
        split: value of the ``split`` column.

    Returns:
        Manifest frame with a ``hemorrhage`` column.

    Raises:
        FileNotFoundError: if the image folder or ``labels.csv`` is missing.
        ValueError: for a malformed ``labels.csv``, duplicated ids, or ids and images that do not match.
    """
    folder = require_dir(root, "head CT root")
    images_dir = require_dir(folder / "head_ct", "head CT images")
    labels_csv = require_file(folder / "labels.csv", "head CT labels")
    labels = pd.read_csv(labels_csv, skipinitialspace=True)
    labels.columns = [str(c).strip() for c in labels.columns]
    missing = [c for c in ("id", "hemorrhage") if c not in labels.columns]
    if missing:
        raise ValueError(f"head CT labels {labels_csv}: missing column(s) {missing}; found {list(labels.columns)}.")
    for column in ("id", "hemorrhage"):
        numeric = pd.to_numeric(labels[column], errors="coerce")
        bad = numeric.isna() | (numeric % 1 != 0)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(f"head CT labels {labels_csv} row {row}: {column!r} must be an integer, "
                             f"got {labels[column].iloc[row]!r}.")
        labels[column] = numeric.astype("int64")
    duplicated = labels["id"][labels["id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"head CT labels {labels_csv}: duplicated id(s) {preview(duplicated)}.")
    images = {}
    for file in sorted(p for p in images_dir.iterdir() if p.is_file()):
        if file.suffix.lower() not in IMAGE_SUFFIXES or not file.stem.isdigit():
            raise ValueError(f"head CT images {images_dir}: unexpected file {file.name} (expected NNN.png).")
        images[int(file.stem)] = file
    no_image = sorted(set(labels["id"]) - set(images))
    if no_image:
        raise ValueError(f"head CT labels {labels_csv}: id(s) without an image in {images_dir}: {preview(no_image)}.")
    no_label = sorted(images[i].name for i in set(images) - set(labels["id"]))
    if no_label:
        raise ValueError(f"head CT images without a row in {labels_csv}: {preview(no_label)}.")
    rows = [
        {
            "path": str(images[i]),
            "modality": "CT",
            "anatomy": "head",
            "split": split,
            "dataset": dataset,
            "case_id": images[i].stem,
            "hemorrhage": int(h),
        }
        for i, h in sorted(zip(labels["id"], labels["hemorrhage"]))
    ]
    return as_frame(rows, f"head CT root {folder}")
