"""Manifest builder for NIH ChestX-ray14 (Wang et al. 2017), multi-label chest radiographs with the official split.

Expected raw layout (the NIH release, as on the NIH Box folder and on Kaggle)::

    ChestX-ray14/
        Data_Entry_2017.csv          (exactly one Data_Entry_2017*.csv, e.g. Data_Entry_2017_v2020.csv)
        train_val_list.txt           official training + validation images, one image name a line
        test_list.txt                official test images, one image name a line
        images_001/images/00000001_000.png ...   (Kaggle: images_001 ... images_012, each with an inner images/)
        images/00000001_000.png ...              (or the NIH tarballs unpacked into one flat images/ folder)

``Data_Entry_2017.csv`` starts with the header ``Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,
Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]`` (NIH's last header cells
hold commas, so the header has more cells than their names; some copies end every line with a comma, and the 2020
revision writes ``Patient Sex``): the builder reads the columns ``Image Index``, ``Finding Labels`` and ``Patient ID``
(plus ``View Position`` when present) by name and ignores the others. ``Finding Labels`` holds ``|``-separated names
among :data:`CHESTXRAY14_FINDINGS`, or ``No Finding``.

One row per image: ``modality`` ``XR``, ``anatomy`` ``chest``, ``case_id`` = ``Patient ID`` (NIH's anonymous integer;
every image of a patient forms one case, one fold), ``split`` ``train`` (``train_val_list.txt``) or ``test``
(``test_list.txt``), the raw ``Finding Labels`` string, one 0/1 column per finding of
:data:`CHESTXRAY14_FINDINGS` (``No Finding`` is all zero) and ``view_position`` (``PA`` / ``AP``). Patient age,
sex, follow-up number and image size are not written.

Refused, naming the CSV line, the name or the image: a missing column, an empty ``Image Index`` / ``Finding Labels``
/ ``Patient ID``, a ``Patient ID`` that is not an integer (NIH's ids are; anything else may identify a person), a
duplicated ``Image Index``, a finding name outside :data:`CHESTXRAY14_FINDINGS` (or ``No Finding`` beside another
name), an image in both split lists or in neither, a split-list name without a CSV row, an image on disk without a
CSV row, two image files of one name, and a CSV row without an image on disk. ``partial=True`` (``--opt
partial=true``, for a copy of some of the ``images_NNN`` folders) drops the CSV rows without an image instead, and
logs how many; every other refusal stays. The layout is checked too: the root holds only ``images`` /
``images_NNN`` folders, each holding ``.png`` images (directly, or in one inner ``images/`` folder).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd

from ._common import as_frame, check_files, describe, find_one_file, logger, preview, require_dir

__all__ = ["CHESTXRAY14_COLUMNS", "CHESTXRAY14_FINDINGS", "CHESTXRAY14_SPLIT_LISTS", "NO_FINDING", "build"]

#: the 14 findings, in the order of Wang et al. (2017); each becomes a 0/1 column.
CHESTXRAY14_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
#: the ``Finding Labels`` value of an image without any of the findings.
NO_FINDING = "No Finding"
#: the CSV columns the builder reads (``View Position`` too, when present).
CHESTXRAY14_COLUMNS: tuple[str, ...] = ("Image Index", "Finding Labels", "Patient ID")
#: official split list -> manifest split.
CHESTXRAY14_SPLIT_LISTS: dict[str, str] = {"train_val_list.txt": "train", "test_list.txt": "test"}
_IMAGE_FOLDER = re.compile(r"^images(_\d+)?$")
_SUFFIXES = (".png",)


def _read_entries_unchecked(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line number, {column: cell})`` for each data line of the label CSV, cells stripped."""
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [cell.strip() for cell in next(reader, [])]
        missing = [c for c in CHESTXRAY14_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"ChestX-ray14 label CSV {csv_path}: missing column(s) {missing}; found {header} "
                             f"(expected the NIH header 'Image Index,Finding Labels,Follow-up #,Patient ID,...').")
        columns = {name: header.index(name) for name in (*CHESTXRAY14_COLUMNS, "View Position") if name in header}
        entries = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            row = {name: (cells[i].strip() if i < len(cells) else "") for name, i in columns.items()}
            entries.append((reader.line_num, row))
    if not entries:
        raise ValueError(f"ChestX-ray14 label CSV {csv_path}: no data line below the header.")
    return entries


def _read_entries(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    """:func:`_read_entries_unchecked`, a file that is not UTF-8 text or not CSV refused naming it."""
    try:
        return _read_entries_unchecked(csv_path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"ChestX-ray14 label CSV {csv_path}: not a readable UTF-8 CSV file ({err}).") from err


def _findings(text: str, csv_path: Path, line: int) -> dict[str, int]:
    """The 0/1 finding columns of one ``Finding Labels`` cell."""
    names = [name.strip() for name in text.split("|")]
    if names == [NO_FINDING]:
        return dict.fromkeys(CHESTXRAY14_FINDINGS, 0)
    unknown = [name for name in names if name not in CHESTXRAY14_FINDINGS]
    if unknown:
        problem = f"'{NO_FINDING}' beside other findings" if NO_FINDING in unknown else f"unknown finding(s) {unknown}"
        raise ValueError(f"ChestX-ray14 label CSV {csv_path} line {line}: {problem} in 'Finding Labels' {text!r}; "
                         f"the findings are {list(CHESTXRAY14_FINDINGS)}, or '{NO_FINDING}' alone.")
    return {finding: int(finding in names) for finding in CHESTXRAY14_FINDINGS}


def _split_lists(folder: Path) -> dict[str, str]:
    """Image name -> manifest split, from the official lists; an image in both lists is refused."""
    splits: dict[str, str] = {}
    listed: dict[str, str] = {}
    for name, split in CHESTXRAY14_SPLIT_LISTS.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"ChestX-ray14 root {folder}: official split list {name} not found (expected "
                                    f"{list(CHESTXRAY14_SPLIT_LISTS)}); found {describe(folder)}.")
        try:
            names = path.read_text(encoding="utf-8").split()
        except UnicodeDecodeError as err:
            raise ValueError(f"ChestX-ray14 split list {path}: not UTF-8 text ({err}); expected one image name a "
                             "line.") from err
        for image in names:
            if image in splits and listed[image] != name:
                raise ValueError(f"ChestX-ray14 image {image} is listed in both {listed[image]} and {name}; each "
                                 "image belongs to one official split.")
            splits[image], listed[image] = split, name
    return splits


def _images(folder: Path) -> dict[str, Path]:
    """Image name -> file, from the ``images`` / ``images_NNN`` folders (each flat or with one inner ``images/``)."""
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    other = [d.name for d in dirs if not _IMAGE_FOLDER.match(d.name)]
    image_dirs = [d for d in dirs if _IMAGE_FOLDER.match(d.name)]
    if other or not image_dirs:
        problem = f"unexpected folder(s) {preview(other)}" if other else "no image folder"
        raise ValueError(f"ChestX-ray14 root {folder}: {problem}; expected only images_001 ... images_012 (each "
                         f"with an inner images/) or one images/ folder; found {describe(folder)}.")
    found: dict[str, Path] = {}
    for image_dir in image_dirs:
        inner = [p for p in image_dir.iterdir() if not p.name.startswith(".")]
        leaf = image_dir / "images" if [p.name for p in inner] == ["images"] and inner[0].is_dir() else image_dir
        for file in check_files(leaf, _SUFFIXES, "ChestX-ray14 image folder", "NNNNNNNN_NNN.png"):
            if file.name in found:
                raise ValueError(f"ChestX-ray14 image {file.name} is in two folders: {found[file.name]} and {file}.")
            found[file.name] = file
    return found


def build(
    root: str | Path, dataset: str = "chestxray14", labels: str | Path | None = None, partial: bool = False
) -> pd.DataFrame:
    """Build the ChestX-ray14 manifest.

    Args:
        root: folder holding ``Data_Entry_2017.csv``, the two split lists and the image folders.
        dataset: value of the ``dataset`` column.
        labels: the label CSV, relative to ``root`` (default: the one ``Data_Entry_2017*.csv``).
        partial: accept a copy of some of the image folders: CSV rows without an image are dropped (the number is
            logged) instead of refused.

    Returns:
        Manifest frame with ``Finding Labels``, one 0/1 column per finding of :data:`CHESTXRAY14_FINDINGS` and
        ``view_position`` (when the CSV has it), rows in CSV order.

    Raises:
        FileNotFoundError: if ``root``, the label CSV or a split list is missing.
        ValueError: for an undocumented folder or file type, a missing column, an empty or malformed cell, an unknown
            finding, a duplicated image, an image in both split lists or in neither, a split-list name without a CSV
            row, an image without a CSV row, or (without ``partial``) a CSV row without an image (naming the CSV
            line, the name or the file).
    """
    folder = require_dir(root, "ChestX-ray14 root")
    csv_path = find_one_file(folder, labels, "Data_Entry_2017*.csv", "ChestX-ray14 root", "label CSV", "labels")
    entries = _read_entries(csv_path)
    splits = _split_lists(folder)
    images = _images(folder)
    seen: dict[str, int] = {}
    findings: dict[str, dict[str, int]] = {}
    for line, row in entries:
        for column in CHESTXRAY14_COLUMNS:
            if not row[column]:
                raise ValueError(f"ChestX-ray14 label CSV {csv_path} line {line}: empty {column!r}.")
        name, patient = row["Image Index"], row["Patient ID"]
        if name in seen:
            raise ValueError(f"ChestX-ray14 label CSV {csv_path} line {line}: image {name} already has line "
                             f"{seen[name]}.")
        seen[name] = line
        if not patient.isdigit():
            raise ValueError(f"ChestX-ray14 label CSV {csv_path} line {line}: 'Patient ID' {patient!r} is not an "
                             "integer; NIH's patient ids are anonymous integers (a name or another identifier must "
                             "not enter a manifest).")
        if name not in splits:
            raise ValueError(f"ChestX-ray14 image {name} (label CSV {csv_path} line {line}) is in neither official "
                             f"split list {list(CHESTXRAY14_SPLIT_LISTS)}.")
        findings[name] = _findings(row["Finding Labels"], csv_path, line)
    unlisted = [name for name in splits if name not in seen]
    if unlisted:
        raise ValueError(f"ChestX-ray14 split lists in {folder}: {len(unlisted)} image(s) without a row in {csv_path}: "
                         f"{preview(unlisted)}.")
    no_row = [str(path) for name, path in images.items() if name not in seen]
    if no_row:
        raise ValueError(f"ChestX-ray14: {len(no_row)} image(s) on disk without a row in {csv_path}: "
                         f"{preview(no_row)}.")
    no_image = [f"{name} (line {line})" for line, row in entries if (name := row["Image Index"]) not in images]
    if no_image and not partial:
        raise ValueError(f"ChestX-ray14 label CSV {csv_path}: {len(no_image)} image(s) listed but not found under "
                         f"{folder}/images*/: {preview(no_image)} (a copy of some image folders? --opt partial=true "
                         "drops their rows).")
    if no_image:
        logger.warning("ChestX-ray14 label CSV %s: %d of %d row(s) have no image here and are dropped "
                       "(partial=true): %s", csv_path, len(no_image), len(entries), preview(no_image))
    rows = []
    for _, row in entries:
        name = row["Image Index"]
        if name not in images:
            continue
        record = {
            "path": str(images[name]),
            "modality": "XR",
            "anatomy": "chest",
            "split": splits[name],
            "dataset": dataset,
            "case_id": str(int(row["Patient ID"])),
            "Finding Labels": row["Finding Labels"],
        }
        record.update(findings[name])
        if "View Position" in row:
            record["view_position"] = row["View Position"]
        rows.append(record)
    return as_frame(rows, f"ChestX-ray14 root {folder}")
