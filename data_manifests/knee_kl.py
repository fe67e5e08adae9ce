"""Manifest builder for knee radiographs graded by Kellgren-Lawrence (KL) grade, one folder per grade.

Expected raw layout (the OAI crops of Chen et al. 2018 in the shared copy)::

    knee_kl/KL0/9001695L.png ... knee_kl/KL4/...       (file name = patient id + ``L`` / ``R`` knee)

The grade folders are exactly :data:`KL_GRADES` and hold images only (checked by
:func:`data_manifests.class_folders.build`: a missing or an extra folder, another file type or an empty grade is
refused naming the expected and the found entries). One row per image: ``modality`` ``XR``, ``anatomy`` ``knee``,
``kl_grade`` 0-4 (from the folder), ``laterality`` ``L`` / ``R``, ``case_id`` = the patient id, so both knees of a
patient form one case (one split, one fold). A file name that is not ``<patient id><L|R>.<suffix>`` is an error naming
the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from . import class_folders

__all__ = ["KL_GRADES", "build"]

#: the grade folders, KL0 (no osteoarthritis) to KL4 (severe).
KL_GRADES: tuple[str, ...] = ("KL0", "KL1", "KL2", "KL3", "KL4")
_NAME = re.compile(r"^(.+?)([LR])$", re.IGNORECASE)  # file stem: patient id, then the knee


def build(root: str | Path, dataset: str = "knee_kl", split: str = "train") -> pd.DataFrame:
    """Build the knee KL-grade manifest.

    Args:
        root: folder holding ``KL0`` ... ``KL4``.
        dataset: value of the ``dataset`` column.
        split: value of the ``split`` column.

    Returns:
        Manifest frame with ``kl_grade`` (int) and ``laterality`` columns, rows ordered by grade then file name.

    Raises:
        FileNotFoundError: if ``root`` or a grade folder is missing (naming the expected and found folders).
        ValueError: for an undocumented folder, a non-image file, an empty grade, or a file name without the ``L`` /
            ``R`` knee after the patient id.
    """
    classes = {grade: {"modality": "XR", "anatomy": "knee"} for grade in KL_GRADES}
    frame = class_folders.build(root, dataset=dataset, classes=classes, split=split)
    names = [_NAME.match(Path(path).stem) for path in frame["path"]]
    bad = [path for path, name in zip(frame["path"], names) if name is None]
    if bad:
        raise ValueError(f"knee KL image {bad[0]}: the file name must be <patient id><L|R>.<suffix> (e.g. "
                         f"9001695L.png), so that both knees of a patient form one case; {len(bad)} file(s) do not.")
    frame["case_id"] = [name.group(1) for name in names]
    frame["kl_grade"] = frame.pop("label").str[2:].astype("int64")
    frame["laterality"] = [name.group(2).upper() for name in names]
    return frame
