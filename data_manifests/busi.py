"""Manifest builder for BUSI (Breast Ultrasound Images, Al-Dhabyani et al. 2020).

Expected raw layout (the original Kaggle/Mendeley release; the shared copy has the same tree without masks)::

    Dataset_BUSI_with_GT/
        benign/benign (1).png, benign (1)_mask.png, benign (1)_mask_1.png, ...
        malignant/malignant (1).png, malignant (1)_mask.png, ...
        normal/normal (1).png, normal (1)_mask.png, ...

Segmentation masks (``*_mask*.png``) are left out (their count is logged). Files at the root (e.g.
``all_captions.csv``) are not read. The layout is checked: the root holds exactly the class folders
``benign``/``malignant``/``normal`` (another folder, e.g. ``yes/``, is refused naming the expected and the found
folders), each class folder holds image files only and at least one image. One row per image: ``modality`` ``US``, ``anatomy`` ``breast``, ``label`` =
class folder, ``malignant`` = 1 (malignant) / 0 (benign) / empty (normal), ``case_id`` = file stem (BUSI has no
patient ids). BUSI is a downstream evaluation set: keep it out of pretraining manifests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ._common import IMAGE_SUFFIXES, as_frame, check_files, check_folders, check_option, logger, require_dir

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
        classes: class folders to read (a subset of :data:`BUSI_CLASSES`; the others may be absent).

    Returns:
        Manifest frame with ``label`` and ``malignant`` columns.

    Raises:
        FileNotFoundError: if ``root`` or a requested class folder is missing (naming expected and found folders).
        ValueError: for a class name outside :data:`BUSI_CLASSES`, a folder at the root that is not a BUSI class,
            or a class folder holding a sub-folder, a file that is not an image, or no image (naming what it found).
    """
    folder = require_dir(root, "BUSI root")
    classes = check_option("classes", classes, BUSI_CLASSES, f"BUSI root {folder}")
    check_folders(folder, BUSI_CLASSES, "BUSI root", required=classes)
    rows, masks = [], 0
    for name in classes:
        class_dir = folder / name
        files = check_files(class_dir, IMAGE_SUFFIXES, "BUSI class folder", f"'{name} (N).png' and masks")
        images = [f for f in files if "_mask" not in f.stem]
        if not images:
            raise ValueError(f"BUSI class folder {class_dir}: no images, only {len(files)} mask file(s) (*_mask*); "
                             f"expected '{name} (N).png' images.")
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
