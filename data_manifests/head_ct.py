"""Manifest builder for the Kaggle "Head CT - hemorrhage" set (Felipe Kitamura, 2018).

Expected raw layout::

    head_ct_hemorrhage/head_ct/000.png ... 199.png     (zero-padded 3-digit ids)
    head_ct_hemorrhage/labels.csv                      (header "id, hemorrhage": note the space after the comma)

``labels.csv`` rows ``0,1`` give the integer id (matched to ``NNN.png``) and the hemorrhage label. One row per image:
``modality`` ``CT``, ``anatomy`` ``head``, ``hemorrhage`` 1/0, ``case_id`` = file stem. A label row without an image
or an image without a label row is an error. The layout is checked: the root holds the one folder ``head_ct/`` (another
folder is refused naming the expected and the found ones), and ``head_ct/`` holds ``NNN.png`` images only, at least
one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import IMAGE_SUFFIXES, as_frame, check_files, check_folders, describe, preview, require_dir

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
        FileNotFoundError: if the image folder or ``labels.csv`` is missing (naming the expected and found entries).
        ValueError: for another folder at the root, a sub-folder / non-image file / no image in ``head_ct/``, a
            malformed ``labels.csv``, duplicated ids, or ids and images that do not match.
    """
    folder = require_dir(root, "head CT root")
    check_folders(folder, ("head_ct",), "head CT root")
    images_dir = folder / "head_ct"
    image_files = check_files(images_dir, IMAGE_SUFFIXES, "head CT images", "NNN.png")
    labels_csv = folder / "labels.csv"
    if not labels_csv.is_file():
        raise FileNotFoundError(f"head CT root {folder}: labels.csv not found; expected head_ct/ and labels.csv; "
                                f"found {describe(folder)}.")
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
    for file in image_files:
        if not file.stem.isdigit():
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
