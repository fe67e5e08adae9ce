"""Manifest builder for HAM10000 dermoscopic images (Tschandl et al. 2018) with their metadata CSV.

Expected raw layout (the flat sample of the shared copy)::

    ham10000_sample/ISIC_0024306.jpg ...
    ham10000_sample/HAM10000_metadata_subset.csv     (or HAM10000_metadata.csv: exactly one HAM10000_metadata*.csv)

The CSV lists ``lesion_id,image_id,dx,...`` (one row per image; ``image_id`` is the file stem). One row per image:
``modality`` ``DMS`` (dermoscopy), ``anatomy`` ``skin``, ``case_id`` = ``lesion_id`` (several images of one lesion
form one case: one split, one fold), ``dx`` the diagnosis (nv, mel, bkl, bcc, akiec, vasc, df). The layout is
checked: images directly inside the root (a sub-folder is refused; other files are logged and not read), the
metadata CSV with the columns :data:`HAM10000_COLUMNS`; an unreadable CSV, an image without a CSV row, a CSV row
without an image, a duplicated ``image_id`` and an empty ``lesion_id`` / ``dx`` are errors naming the file or the
CSV row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import as_frame, find_one_file, logger, preview, require_dir
from .image_folder import list_images

__all__ = ["HAM10000_COLUMNS", "build"]

#: metadata columns the builder reads.
HAM10000_COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx")


def build(
    root: str | Path, dataset: str = "ham10000", split: str = "train", metadata: str | Path | None = None
) -> pd.DataFrame:
    """Build the HAM10000 manifest.

    Args:
        root: folder holding the images and the metadata CSV.
        dataset: value of the ``dataset`` column.
        split: value of the ``split`` column.
        metadata: the metadata CSV, relative to ``root`` (default: the one ``HAM10000_metadata*.csv``).

    Returns:
        Manifest frame with a ``dx`` column, rows ordered by file name.

    Raises:
        FileNotFoundError: if ``root`` or the metadata CSV is missing.
        ValueError: for a sub-folder, no image, an unreadable CSV, a CSV without the columns
            :data:`HAM10000_COLUMNS`, a duplicated ``image_id``, an empty ``lesion_id`` / ``dx``, or images and CSV
            rows that do not match.
    """
    folder = require_dir(root, "HAM10000 root")
    csv = find_one_file(folder, metadata, "HAM10000_metadata*.csv", "HAM10000 root", "metadata CSV", "metadata")
    images, others = list_images(folder, f"HAM10000 root {folder}")
    others = [p.name for p in others if p != csv]
    if others:
        logger.info("HAM10000 root %s: %d file(s) besides the images and %s are not read: %s", folder, len(others),
                    csv.name, preview(others))
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"HAM10000 metadata {csv}: not a readable UTF-8 CSV file ({err}).") from err
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in HAM10000_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"HAM10000 metadata {csv}: missing column(s) {missing}; found {list(table.columns)}.")
    for column in HAM10000_COLUMNS:
        table[column] = table[column].str.strip()
        empty = table.index[table[column].eq("")].tolist()
        if empty:
            raise ValueError(f"HAM10000 metadata {csv} line {empty[0] + 2}: empty {column!r}.")
    duplicated = table["image_id"][table["image_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"HAM10000 metadata {csv}: duplicated image_id(s) {preview(duplicated)}.")
    by_stem = {image.stem: image for image in images}
    no_image = [i for i in table["image_id"] if i not in by_stem]
    if no_image:
        raise ValueError(f"HAM10000 metadata {csv}: image_id(s) without an image in {folder}: {preview(no_image)}.")
    rows_by_id = table.set_index("image_id")
    no_row = [image.name for image in images if image.stem not in rows_by_id.index]
    if no_row:
        raise ValueError(f"HAM10000 images without a row in {csv}: {preview(no_row)}.")
    rows = [{"path": str(image), "modality": "DMS", "anatomy": "skin", "split": split, "dataset": dataset,
             "case_id": rows_by_id.at[image.stem, "lesion_id"], "dx": rows_by_id.at[image.stem, "dx"]}
            for image in images]
    return as_frame(rows, f"HAM10000 root {folder}")
