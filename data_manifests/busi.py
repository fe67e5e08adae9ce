"""Manifest builder for BUSI (Breast Ultrasound Images, Al-Dhabyani et al. 2020).

Expected raw layout (the original Kaggle/Mendeley release; the shared copy has the same tree without masks)::

    Dataset_BUSI_with_GT/
        benign/benign (1).png, benign (1)_mask.png, benign (1)_mask_1.png, ...
        malignant/malignant (1).png, malignant (1)_mask.png, ...
        normal/normal (1).png, normal (1)_mask.png, ...

Segmentation masks (``*_mask*.png``) are left out (their count is logged). Files at the root (e.g.
``all_captions.csv``) are not read. One row per image: ``modality`` ``US``, ``anatomy`` ``breast``, ``label`` =
class folder, ``malignant`` = 1 (malignant) / 0 (benign) / empty (normal), ``case_id`` = file stem (BUSI has no
patient ids). BUSI is a downstream evaluation set: keep it out of pretraining manifests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ._common import IMAGE_SUFFIXES, as_frame, logger, preview, require_dir

__all__ = ["BUSI_CLASSES", "build"]

BUSI_CLASSES: tuple[str, ...] = ("benign", "malignant", "normal")
_MALIGNANT = {"benign": 0, "malignant": 1}


def build(
    root: str | Path,
    dataset: str = "busi",
    split: str = "train",
    classes: Sequence[str] = BUSI_CLASSES,
) -> pd.DataFrame:
    """Build the BUSI manifest.

    Args:
        root: folder holding the class folders.
        dataset: value of the ``dataset`` column.
        split: value of the ``split`` column (BUSI has no official split; folds come from the CV protocol).
        classes: class folders to read.

    Returns:
        Manifest frame with ``label`` and ``malignant`` columns.

    Raises:
        FileNotFoundError: if ``root`` or a class folder is missing.
        ValueError: if a class folder holds a file that is neither an image nor a mask.
    """
    folder = require_dir(root, "BUSI root")
    rows, masks = [], 0
    for name in classes:
        class_dir = require_dir(folder / name, f"BUSI class {name!r}")
        files = sorted(p for p in class_dir.iterdir() if p.is_file())
        others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            raise ValueError(f"BUSI class folder {class_dir}: unexpected non-image file(s): {preview(others)}.")
        for file in files:
            if "_mask" in file.stem:
                masks += 1
                continue
            rows.append(
                {
                    "path": str(file),
                    "modality": "US",
                    "anatomy": "breast",
                    "split": split,
                    "dataset": dataset,
                    "case_id": file.stem,
                    "label": name,
                    "malignant": _MALIGNANT.get(name),
                }
            )
    if masks:
        logger.info("BUSI root %s: left out %d segmentation mask file(s) (*_mask*.png).", folder, masks)
    frame = as_frame(rows, f"BUSI root {folder}")
    frame["malignant"] = pd.array(frame["malignant"], dtype="Int64")
    return frame
