"""Manifest builder for a folder tree of DICOM files (any depth, any file names).

Expected raw layout: any directory tree whose files are DICOM Part-10 files (with or without a ``.dcm`` suffix), for
example the shared TCGA CT slices::

    ct_tcga_dicom/dicom_dir/ID_0000_AGE_0060_CONTRAST_1_CT.dcm
    ct_tcga_dicom/dicom_dir/...

Every file is opened with ``pydicom.dcmread(stop_before_pixels=True)`` (which checks the 128-byte preamble and
``DICM`` prefix), so files are recognised by content, not by suffix. One row per file:

- ``modality`` / ``anatomy``: the raw ``Modality`` / ``BodyPartExamined`` values (e.g. ``CT`` / ``LUNG``); the
  vocabulary maps synonyms (``LUNG`` and ``CHEST`` both become ``chest``). Empty when the tag is absent.
- ``case_id``: ``PatientID``, or ``StudyInstanceUID`` when the patient id is empty.
- ``index`` empty (multi-frame files are expanded by the dataset), ``key`` empty.
- extra columns ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID``.

A file that is not DICOM is an error listing the files, unless ``ignore_non_dicom=True``, which logs a warning with the
count and names. ``DICOMDIR`` media directory files carry no image and are always left out with a warning.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from ._common import as_frame, logger, preview, require_dir

__all__ = ["build"]

_MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"


def _text(dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return "" if value is None else str(value).strip()


def build(
    root: str | Path,
    dataset: str = "dicom",
    split: str = "train",
    ignore_non_dicom: bool = False,
) -> pd.DataFrame:
    """Build a manifest of every DICOM file under ``root``.

    Args:
        root: folder to walk recursively.
        dataset: value of the ``dataset`` column.
        split: value of the ``split`` column.
        ignore_non_dicom: leave non-DICOM files out with a warning instead of raising.

    Returns:
        Manifest frame with absolute paths, sorted by path.

    Raises:
        FileNotFoundError: if ``root`` is not a folder.
        ValueError: if non-DICOM files are present (and not ignored), a file has neither PatientID nor
            StudyInstanceUID, or no DICOM file is found.
    """
    folder = require_dir(root, "DICOM root")
    rows, non_dicom, media_dirs = [], [], []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            header = dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError) as err:
            non_dicom.append((file, err))
            continue
        sop_class = _text(header.file_meta, "MediaStorageSOPClassUID") if hasattr(header, "file_meta") else ""
        if sop_class == _MEDIA_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in header:
            media_dirs.append(file)
            continue
        case_id = _text(header, "PatientID") or _text(header, "StudyInstanceUID")
        if not case_id:
            raise ValueError(f"DICOM file {file} has neither PatientID nor StudyInstanceUID: cannot set case_id.")
        rows.append(
            {
                "path": str(file),
                "modality": _text(header, "Modality"),
                "anatomy": _text(header, "BodyPartExamined"),
                "split": split,
                "dataset": dataset,
                "case_id": case_id,
                "StudyInstanceUID": _text(header, "StudyInstanceUID"),
                "SeriesInstanceUID": _text(header, "SeriesInstanceUID"),
                "SOPInstanceUID": _text(header, "SOPInstanceUID"),
            }
        )
    if media_dirs:
        logger.warning("DICOM root %s: left out %d DICOMDIR file(s) without images: %s", folder, len(media_dirs),
                       preview(media_dirs))
    if non_dicom:
        names = [str(f) for f, _ in non_dicom]
        if not ignore_non_dicom:
            raise ValueError(
                f"DICOM root {folder}: {len(non_dicom)} file(s) are not DICOM ({non_dicom[0][1]}): {preview(names)}. "
                "Remove them or pass ignore_non_dicom=True."
            )
        logger.warning("DICOM root %s: ignored %d non-DICOM file(s): %s", folder, len(names), preview(names, 50))
    return as_frame(rows, f"DICOM root {folder}")
