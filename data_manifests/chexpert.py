"""Manifest builder for CheXpert (Irvin et al. 2019): chest radiographs, 14 observations labelled 1 / 0 / -1 / blank.

Expected raw layout (``CheXpert-v1.0-small`` or ``CheXpert-v1.0`` as unpacked)::

    CheXpert-v1.0-small/                       (root)
        train.csv, valid.csv
        train/patient00001/study1/view1_frontal.jpg ...
        valid/patient64541/study1/view1_frontal.jpg ...

Each CSV starts with ``Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung
Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,
Support Devices``; ``Path`` is relative to the root's parent (``CheXpert-v1.0-small/train/patient00001/study1/
view1_frontal.jpg``), so it starts with the root folder's name. The observation cells hold ``1.0`` (positive),
``0.0`` (negative), ``-1.0`` (uncertain) or nothing (not mentioned in the report).

One row per CSV line: ``modality`` ``XR``, ``anatomy`` ``chest``, ``case_id`` = the patient folder
(``patient00001``, CheXpert's anonymous id: all studies and views of a patient form one case, one fold), ``split``
``train`` (``train.csv``) or ``test`` (``valid.csv``: the radiologist-labelled set the papers report on, since
CheXpert's own test set is not public; a validation split for picking epochs comes from ``train``), one column per
observation of :data:`CHEXPERT_OBSERVATIONS` named as in the CSV, holding ``1`` / ``0`` / ``-1`` or an empty cell
**as the CSV has them** (the uncertain and the unmentioned stay apart: the policy ``ones`` / ``zeros`` / ``ignore``
is applied by the training side, see :mod:`modan_monai.evaluation.labels`), and ``frontal_lateral`` / ``ap_pa``
(when the CSV has them). ``Sex`` and ``Age`` are not written.

Refused, naming the CSV line, the column or the file: a missing column, an empty or malformed ``Path`` (not
``<root name>/<train|valid>/patientN/studyN/viewN_<frontal|lateral>.jpg``, or a ``train.csv`` path into ``valid/``),
a duplicated ``Path``, an observation value other than 1 / 0 / -1 / blank, an image on disk without a CSV line, and
a CSV line without its image (``partial=True``, ``--opt partial=true``, drops such lines instead and logs how
many). The layout is checked too: the root holds only the ``train/`` / ``valid/`` folders of the CSVs read.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ._common import as_frame, check_folders, check_option, describe, logger, preview, require_dir, walk_files

__all__ = ["CHEXPERT_CSVS", "CHEXPERT_OBSERVATIONS", "build"]

#: the 14 observations, in the CSV's order; each becomes a column holding 1 / 0 / -1 / empty.
CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
#: CSV -> (image folder, manifest split).
CHEXPERT_CSVS: dict[str, tuple[str, str]] = {"train.csv": ("train", "train"), "valid.csv": ("valid", "test")}
#: optional CSV columns -> manifest column.
_VIEW_COLUMNS: dict[str, str] = {"Frontal/Lateral": "frontal_lateral", "AP/PA": "ap_pa"}
_PATH = re.compile(
    r"^(?P<top>[^/]+)/(?P<folder>[^/]+)/(?P<patient>patient\d+)/study\d+/view\d+_(frontal|lateral)\.jpg$"
)
_VALUES = {1.0: 1, 0.0: 0, -1.0: -1}


def _value(text: str, csv_path: Path, line: int, column: str) -> int | None:
    """One observation cell: 1 / 0 / -1, or ``None`` for a blank cell."""
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if number not in _VALUES:
        raise ValueError(f"CheXpert CSV {csv_path} line {line}: column {column!r} holds {text!r}; expected 1, 0, -1 "
                         "(uncertain) or an empty cell (not mentioned).")
    return _VALUES[number]


def _read_csv_unchecked(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line number, {column: cell})`` for each data line, cells stripped."""
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [cell.strip() for cell in next(reader, [])]
        missing = [c for c in ("Path", *CHEXPERT_OBSERVATIONS) if c not in header]
        if missing:
            raise ValueError(f"CheXpert CSV {csv_path}: missing column(s) {missing}; found {header}.")
        entries = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise ValueError(f"CheXpert CSV {csv_path} line {reader.line_num}: {len(cells)} cells for the "
                                 f"{len(header)} columns of the header.")
            entries.append((reader.line_num, {name: cell.strip() for name, cell in zip(header, cells)}))
    if not entries:
        raise ValueError(f"CheXpert CSV {csv_path}: no data line below the header.")
    return header, entries


def _read_csv(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """:func:`_read_csv_unchecked`, a file that is not UTF-8 text or not CSV refused naming it."""
    try:
        return _read_csv_unchecked(csv_path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"CheXpert CSV {csv_path}: not a readable UTF-8 CSV file ({err}).") from err


def build(
    root: str | Path,
    dataset: str = "chexpert",
    csvs: Sequence[str] = tuple(CHEXPERT_CSVS),
    partial: bool = False,
) -> pd.DataFrame:
    """Build the CheXpert manifest.

    Args:
        root: the ``CheXpert-v1.0-small`` (or ``CheXpert-v1.0``) folder holding the CSVs and image folders.
        dataset: value of the ``dataset`` column.
        csvs: CSVs to read (``train.csv``, ``valid.csv``).
        partial: accept a copy of some of the images: CSV lines without an image are dropped (the number is
            logged) instead of refused.

    Returns:
        Manifest frame with one ``Int64`` column per observation of :data:`CHEXPERT_OBSERVATIONS` (1 / 0 / -1 /
        ``<NA>``) and ``frontal_lateral`` / ``ap_pa`` when the CSV has them, rows in CSV order.

    Raises:
        FileNotFoundError: if ``root``, a CSV or its image folder is missing.
        ValueError: for an unknown CSV, an undocumented folder, a missing column, a malformed or duplicated
            ``Path``, an observation value other than 1 / 0 / -1 / blank, an image without a CSV line, or (without
            ``partial``) a CSV line without an image (naming the CSV line, the column or the file).
    """
    folder = require_dir(root, "CheXpert root")
    csvs = check_option("csvs", csvs, tuple(CHEXPERT_CSVS), f"CheXpert root {folder}")
    check_folders(folder, [CHEXPERT_CSVS[name][0] for name in CHEXPERT_CSVS], "CheXpert root",
                  required=[CHEXPERT_CSVS[name][0] for name in csvs])
    rows = []
    for name in csvs:
        image_folder, split = CHEXPERT_CSVS[name]
        csv_path = folder / name
        if not csv_path.is_file():
            raise FileNotFoundError(f"CheXpert root {folder}: {name} not found; found {describe(folder)}.")
        header, entries = _read_csv(csv_path)
        on_disk = {p.relative_to(folder).as_posix(): p for p in walk_files(folder / image_folder, "CheXpert folder")}
        seen: dict[str, int] = {}
        dropped = []
        for line, row in entries:
            match = _PATH.match(row["Path"])
            if match is None or match["top"] != folder.name or match["folder"] != image_folder:
                raise ValueError(f"CheXpert CSV {csv_path} line {line}: Path {row['Path']!r} is not "
                                 f"'{folder.name}/{image_folder}/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg' "
                                 f"(paths are relative to the root's parent {folder.parent}, and start with the root "
                                 "folder's name).")
            relative = row["Path"].split("/", 1)[1]
            if relative in seen:
                raise ValueError(f"CheXpert CSV {csv_path} line {line}: Path {row['Path']!r} already on line "
                                 f"{seen[relative]}.")
            seen[relative] = line
            record = {
                "path": str(folder / relative),
                "modality": "XR",
                "anatomy": "chest",
                "split": split,
                "dataset": dataset,
                "case_id": match["patient"],
            }
            record.update({c: _value(row[c], csv_path, line, c) for c in CHEXPERT_OBSERVATIONS})
            record.update({out: row[c] for c, out in _VIEW_COLUMNS.items() if c in header})
            if relative in on_disk:
                rows.append(record)
            else:
                dropped.append(f"{row['Path']} (line {line})")
        no_line = [str(path) for relative, path in on_disk.items() if relative not in seen]
        if no_line:
            raise ValueError(f"CheXpert: {len(no_line)} file(s) under {folder / image_folder} without a line in "
                             f"{csv_path}: {preview(no_line)}.")
        if dropped and not partial:
            raise ValueError(f"CheXpert CSV {csv_path}: {len(dropped)} image(s) listed but not found: "
                             f"{preview(dropped)} (a copy of some of the images? --opt partial=true drops their "
                             "lines).")
        if dropped:
            logger.warning("CheXpert CSV %s: %d of %d line(s) have no image here and are dropped (partial=true): %s",
                           csv_path, len(dropped), len(entries), preview(dropped))
    frame = as_frame(rows, f"CheXpert root {folder}")
    for column in CHEXPERT_OBSERVATIONS:
        frame[column] = pd.array(frame[column], dtype="Int64")
    return frame
