"""Manifest builder for MRNet knee MRI (Bien et al. 2018, Stanford ML Group).

Expected raw layout (the ``MRNet-v1.0`` release)::

    MRNet-v1.0/train/{axial,coronal,sagittal}/0000.npy ... 1129.npy   (slices, 256, 256) uint8, one file per exam
    MRNet-v1.0/valid/{axial,coronal,sagittal}/1130.npy ... 1249.npy
    MRNet-v1.0/train-acl.csv, train-abnormal.csv, train-meniscus.csv   lines "case,label" without a header
    MRNet-v1.0/valid-acl.csv, valid-abnormal.csv, valid-meniscus.csv

One row per (exam, plane) volume: ``index`` empty (the dataset expands slices), ``plane`` column, ``split`` ``train``
(from ``train/``) or ``val`` (from ``valid/``), ``case_id`` ``"<folder>-<NNNN>"`` (e.g. ``train-0000``: the three
planes of one exam share it), label columns ``abnormal`` / ``acl`` / ``meniscus`` for the CSVs present, ``modality``
``MR``, ``anatomy`` ``knee``. Every exam must have all requested planes and a row in every label CSV present. Every
folder read must have the same label CSVs (a task's CSV present for ``valid/`` but not for ``train/`` would leave
empty label cells that training would misread): a missing one is an error naming it, with or without ``partial``
(read only the labelled folders with ``folders=valid``, or copy the CSV). A copy without any label CSV gives a
manifest without label columns (e.g. for pretraining). The layout is checked: the root holds only the split folders
``train/`` / ``valid/``, each split folder only plane folders, each plane folder only ``NNNN.npy`` files and at least
one exam; anything else is refused naming the expected and the found entries.

A partial copy (a subset of the volumes beside the full label CSVs) is refused unless ``partial=True``
(``--opt partial=true``): then label rows without a volume and exams that lack one of the requested planes are
dropped, and how many is logged per folder. Volumes without a label stay an error either way: an exam missing
from a label CSV, and the exams of a folder whose label CSVs are missing, are never written with empty labels nor
dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ._common import as_frame, check_files, check_folders, logger, preview, require_dir

__all__ = ["MRNET_FOLDERS", "MRNET_PLANES", "MRNET_TASKS", "build"]

MRNET_PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
MRNET_TASKS: tuple[str, ...] = ("abnormal", "acl", "meniscus")
#: raw folder -> manifest split
MRNET_FOLDERS: dict[str, str] = {"train": "train", "valid": "val"}


def _read_labels(csv: Path) -> dict[int, int]:
    table = pd.read_csv(csv, header=None, dtype=str)
    if table.shape[1] != 2:
        raise ValueError(f"MRNet labels {csv}: expected 2 columns 'case,label' without header, got {table.shape[1]}.")
    labels: dict[int, int] = {}
    for row, (case, label) in enumerate(zip(table[0], table[1])):
        try:
            labels[int(str(case).strip())] = int(str(label).strip())
        except ValueError as err:
            raise ValueError(f"MRNet labels {csv} row {row}: expected integers 'case,label', got "
                             f"{case!r},{label!r}.") from err
    return labels


def build(
    root: str | Path,
    dataset: str = "mrnet",
    planes: Sequence[str] = MRNET_PLANES,
    folders: Sequence[str] = tuple(MRNET_FOLDERS),
    partial: bool = False,
) -> pd.DataFrame:
    """Build the MRNet manifest.

    Args:
        root: the ``MRNet-v1.0`` folder.
        dataset: value of the ``dataset`` column.
        planes: planes to list.
        folders: raw split folders to read (``train``, ``valid``).
        partial: accept a partial copy: drop (and log the number of) label rows without a volume and exams
            missing a requested plane, instead of raising.

    Returns:
        Manifest frame, one row per exam and plane.

    Raises:
        FileNotFoundError: if a split or plane folder is missing (naming the expected and found folders).
        ValueError: for an unknown plane/folder, an undocumented folder, a file not named ``NNNN.npy``, a plane folder
            without exams, an exam missing a plane, label CSVs that do not match the exams (with ``partial``:
            only an exam without a label), or a label CSV present for one folder read and missing for another
            (with or without ``partial``).
    """
    folder = require_dir(root, "MRNet root")
    unknown = [p for p in planes if p not in MRNET_PLANES] + [f for f in folders if f not in MRNET_FOLDERS]
    if unknown:
        raise ValueError(
            f"MRNet: unknown plane/folder {unknown}; planes {MRNET_PLANES}, folders {tuple(MRNET_FOLDERS)}."
        )
    check_folders(folder, tuple(MRNET_FOLDERS), "MRNet root", required=folders)
    present = {raw: [t for t in MRNET_TASKS if (folder / f"{raw}-{t}.csv").is_file()] for raw in folders}
    labelled = sorted({t for tasks in present.values() for t in tasks}, key=MRNET_TASKS.index)
    absent = [f"{raw}-{t}.csv" for raw in folders for t in labelled if t not in present[raw]]
    if absent:
        have = [f"{raw}-{t}.csv" for raw in folders for t in present[raw]]
        complete = [raw for raw in folders if present[raw] == labelled]
        hint = f"read only the labelled folder(s) with --opt folders={','.join(complete)}" if complete else \
            "add the missing label CSV(s)"
        raise ValueError(f"MRNet root {folder}: label CSV(s) {absent} not found while {preview(have)} are: the exams "
                         f"of those folders would get empty label cells (partial=true does not change this). Copy "
                         f"the missing CSV(s), or {hint}.")
    rows = []
    for raw in folders:
        check_folders(folder / raw, MRNET_PLANES, f"MRNet {raw}/", required=planes)
        exams: dict[str, dict[int, Path]] = {}
        for plane in planes:
            plane_dir = folder / raw / plane
            files = check_files(plane_dir, (".npy",), f"MRNet {raw}/{plane}", "NNNN.npy (one volume per exam)")
            bad = [p.name for p in files if p.suffix != ".npy" or not p.stem.isdigit()]
            if bad:
                raise ValueError(f"MRNet folder {plane_dir}: unexpected file(s) {preview(bad)} (expected NNNN.npy).")
            exams[plane] = {int(p.stem): p for p in files}
        cases = sorted(set().union(*(set(e) for e in exams.values())))
        incomplete = sorted({c for found in exams.values() for c in cases if c not in found})
        for plane, found in exams.items():
            missing = [f"{c:04d}" for c in cases if c not in found]
            if missing and not partial:
                raise ValueError(f"MRNet {raw}/{plane}: exam(s) {preview(missing)} have other planes but no {plane} "
                                 "volume (a partial copy? --opt partial=true drops such exams).")
        if incomplete:
            logger.warning(f"MRNet {raw}/: {len(incomplete)} exam(s) lack a requested plane and are dropped "
                           f"(partial=true): {preview([f'{c:04d}' for c in incomplete])}")
            cases = [c for c in cases if c not in set(incomplete)]
        tasks = {}
        for task in MRNET_TASKS:
            csv = folder / f"{raw}-{task}.csv"
            if csv.is_file():
                tasks[task] = _read_labels(csv)
                no_label = [f"{c:04d}" for c in cases if c not in tasks[task]]
                no_exam = [f"{c:04d}" for c in tasks[task] if c not in set(cases) and c not in set(incomplete)]
                if no_label or (no_exam and not partial):
                    raise ValueError(f"MRNet labels {csv}: exams without a label {preview(no_label)}; labels without "
                                     f"an exam {preview(no_exam)}.")
                dropped = sum(c not in set(cases) for c in tasks[task])
                if dropped:
                    logger.info(f"MRNet labels {csv}: {dropped} of {len(tasks[task])} label rows have no complete exam "
                                "here and are dropped (partial=true)")
        for case in cases:
            for plane in planes:
                row = {
                    "path": str(exams[plane][case]),
                    "modality": "MR",
                    "anatomy": "knee",
                    "split": MRNET_FOLDERS[raw],
                    "dataset": dataset,
                    "case_id": f"{raw}-{case:04d}",
                    "plane": plane,
                }
                row.update({task: labels[case] for task, labels in tasks.items()})
                rows.append(row)
    return as_frame(rows, f"MRNet root {folder}")
