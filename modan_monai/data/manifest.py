"""Manifest CSV files: one row per image or volume, with its metadata and optional task labels.

Columns (see ``README``): ``path`` (required, relative paths resolve against the manifest's directory), ``key``
(array name inside an ``.npz``), ``index`` (integer index into the array / slice of a volume; empty = whole image),
``modality``, ``anatomy`` (required; may be empty only for DICOM files, whose tags then supply them), ``split``
(train/val/test), ``dataset``, ``case_id`` (grouping that must never straddle folds), and any number of extra columns:
task labels (``label``, ``nodule``...), mask paths (``mask_<name>``) or further metadata groups (``plane``, ``view``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MANIFEST_COLUMNS",
    "REQUIRED_COLUMNS",
    "load_datalist",
    "manifest_to_datalist",
    "read_manifest",
    "write_manifest",
]

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "key", "index", "modality", "anatomy", "split", "dataset", "case_id")
REQUIRED_COLUMNS: tuple[str, ...] = ("path", "modality", "anatomy", "split", "dataset", "case_id")

# Columns whose content is a file path: `path` and every `mask_<name>` column.
_MASK_PREFIX = "mask_"
# Internal bookkeeping columns added by read_manifest and never written back.
_INTERNAL_COLUMNS = ("row", "manifest")
_STRING_COLUMNS = ("path", "key", "modality", "anatomy", "split", "dataset", "case_id")


def _path_columns(df: pd.DataFrame) -> list[str]:
    return ["path"] + [c for c in df.columns if str(c).startswith(_MASK_PREFIX)]


def _parse_index(values: pd.Series, manifest: str) -> pd.Series:
    """Parse the ``index`` column as nullable ``Int64``; a non-integer value raises naming the row."""
    parsed = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & (values.astype(str).str.strip() != "") & (parsed.isna() | (parsed % 1 != 0))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"manifest {manifest} row {row}: column 'index' must be an integer, got {values.iloc[row]!r}.")
    negative = parsed.notna() & (parsed < 0)
    if negative.any():
        row = int(np.flatnonzero(negative.to_numpy())[0])
        raise ValueError(f"manifest {manifest} row {row}: column 'index' must be >= 0, got {values.iloc[row]!r}.")
    return parsed.astype("Int64")


def read_manifest(
    path: str | Path, required: Sequence[str] = REQUIRED_COLUMNS, check_files: bool = True
) -> pd.DataFrame:
    """Read a manifest CSV, validate it and resolve file paths.

    Args:
        path: manifest CSV file.
        required: columns that must be present.
        check_files: check that every ``path`` and non-empty ``mask_*`` file exists.

    Returns:
        DataFrame with absolute ``path`` (and ``mask_*``) values, ``index`` as nullable ``Int64``, all other
        columns as read (empty cells are NaN) plus ``row`` (0-based data row number) and ``manifest`` (absolute
        manifest path).

    Raises:
        FileNotFoundError: if the manifest or a listed file does not exist
            (``"manifest <m> row <r>: file not found: <path>"``).
        ValueError: if required columns are missing (the message names them and the manifest), a required cell
            other than ``modality``/``anatomy`` is empty, or an ``index`` value is not a non-negative integer.
    """
    manifest = Path(path).resolve()
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    # dtype=str keeps labels/ids verbatim (e.g. zero-padded case ids); numeric label columns are converted below.
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False, na_values=[""])
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"manifest {manifest} is missing required column(s) {missing}; found columns {list(df.columns)}."
        )
    clash = [c for c in _INTERNAL_COLUMNS if c in df.columns]
    if clash:
        raise ValueError(f"manifest {manifest} uses reserved column name(s) {clash}.")
    for column in required:
        if column in ("modality", "anatomy"):
            # May be empty for DICOM files: the label transforms then read the DICOM tags.
            continue
        empty = df[column].isna()
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise ValueError(f"manifest {manifest} row {row}: required column {column!r} is empty.")
    if "index" in df.columns:
        df["index"] = _parse_index(df["index"], str(manifest))
    for column in df.columns:
        if column in _STRING_COLUMNS or column == "index" or column.startswith(_MASK_PREFIX):
            continue
        # Extra columns: numeric labels become numbers, everything else stays text.
        converted = pd.to_numeric(df[column], errors="coerce")
        if converted.notna().sum() == df[column].notna().sum():
            df[column] = converted
    base = manifest.parent
    for column in _path_columns(df):
        df[column] = pd.Series(
            [
                None if pd.isna(value)
                else str(Path(str(value))) if Path(str(value)).is_absolute()
                else str((base / str(value)).resolve())
                for value in df[column]
            ],
            index=df.index,
            dtype=object,
        )
    df["row"] = np.arange(len(df), dtype=np.int64)
    df["manifest"] = str(manifest)
    if check_files:
        for column in _path_columns(df):
            for row, value in zip(df["row"], df[column]):
                if not pd.isna(value) and not Path(value).exists():
                    raise FileNotFoundError(f"manifest {manifest} row {row}: file not found: {value}")
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest CSV with file paths relative to the CSV's directory.

    Args:
        df: manifest frame (e.g. from a ``data_manifests`` builder or :func:`read_manifest`).
        path: output CSV file; parent folders are created.

    Returns:
        The absolute path of the written file.

    Raises:
        ValueError: if a required column is missing (the message names it).
    """
    out = Path(path).resolve()
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"cannot write manifest {out}: missing required column(s) {missing}.")
    frame = df.drop(columns=[c for c in _INTERNAL_COLUMNS if c in df.columns]).copy()
    out.parent.mkdir(parents=True, exist_ok=True)
    for column in _path_columns(frame):
        frame[column] = [
            value if pd.isna(value) or value is None
            else Path(_relative(Path(str(value)).resolve(), out.parent)).as_posix()
            for value in frame[column]
        ]
    ordered = [c for c in MANIFEST_COLUMNS if c in frame.columns]
    ordered += [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    frame[ordered].to_csv(out, index=False)
    return out


def _relative(target: Path, base: Path) -> str:
    """Relative path from ``base`` to ``target`` (``..`` allowed); absolute when on another drive."""
    try:
        return os.path.relpath(target, base)
    except ValueError:  # different drives on Windows
        return str(target)


def _cell(value: Any) -> Any:
    """NaN / pandas NA -> None; numpy scalars -> Python scalars."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple, dict, np.ndarray)) and pd.isna(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def manifest_to_datalist(df: pd.DataFrame, splits: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Turn a manifest frame (from :func:`read_manifest`) into a MONAI datalist.

    Args:
        df: manifest frame.
        splits: keep only these splits (``"train"`` or ``["train", "val"]``); ``None`` keeps all rows.

    Returns:
        One dict per row: ``image`` (absolute path), ``key`` (str or None), ``index`` (int or None), ``modality``,
        ``anatomy``, ``split``, ``dataset``, ``case_id``, ``row``, ``manifest``, ``source`` (``"manifest <m> row
        <r>: <path>"``, a string that survives collation, so an error raised on a batch can name its files) and
        every extra column (NaN -> None).

    Raises:
        ValueError: if a required column is missing or a requested split has no rows.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest frame is missing required column(s) {missing}.")
    if splits is not None:
        wanted = [splits] if isinstance(splits, str) else list(splits)
        present = set(df["split"].dropna().astype(str))
        absent = [s for s in wanted if s not in present]
        if absent:
            raise ValueError(f"manifest has no rows for split(s) {absent}; splits present: {sorted(present)}.")
        df = df[df["split"].astype(str).isin(wanted)]
    items: list[dict[str, Any]] = []
    for position, record in enumerate(df.to_dict(orient="records")):
        item = {str(k): _cell(v) for k, v in record.items()}
        item["image"] = str(item.pop("path"))
        item["key"] = None if item.get("key") is None else str(item["key"])
        item["index"] = None if item.get("index") is None else int(item["index"])
        item["row"] = int(item["row"]) if item.get("row") is not None else position
        item["manifest"] = None if item.get("manifest") is None else str(item["manifest"])
        for column in ("split", "dataset", "case_id"):
            item[column] = str(item[column])
        item["source"] = f"manifest {item['manifest']} row {item['row']}: {item['image']}"
        items.append(item)
    return items


def load_datalist(
    manifest: str | Path | pd.DataFrame,
    splits: str | Sequence[str] | None = None,
    slice_mode: str = "all",
    central_slices: int = 1,
    *,
    check_files: bool = True,
) -> list[dict[str, Any]]:
    """Manifest -> MONAI datalist of 2D rows: :func:`read_manifest`, :func:`manifest_to_datalist`, slice expansion.

    The one expression every bundle needs, equal to
    ``expand_volume_slices(manifest_to_datalist(read_manifest(manifest), splits=splits), mode=slice_mode,
    k=central_slices)``: rows that point at a whole volume (MRNet ``.npy``, 3D NIfTI, multi-frame DICOM,
    ``index`` empty) become slice rows; every row keeps its ``source`` string (``"manifest <m> row <r>: <path>"``).

    Args:
        manifest: manifest CSV path, or a frame already returned by :func:`read_manifest`.
        splits: keep only these splits (``"train"`` or ``["train", "val"]``); ``None`` keeps all rows.
        slice_mode: ``"all"`` (one row per slice), ``"central"`` (the ``central_slices`` middle slices) or
            ``"random"`` (one row per volume, the slice drawn by ``RandSliced`` at load time).
        central_slices: number of central slices for ``slice_mode="central"``.
        check_files: check that every listed file exists (when ``manifest`` is a path).

    Returns:
        The datalist (one dict per 2D image or slice).

    Raises:
        FileNotFoundError: the manifest or a listed file is missing (naming the row).
        ValueError: a bad manifest (see :func:`read_manifest`), a split without rows, an unknown ``slice_mode``,
            ``central_slices`` < 1 or an unreadable volume (naming the row).

    Example:
        >>> rows = load_datalist("pretrain.csv", "train", slice_mode="central", central_slices=3)  # doctest: +SKIP

        In bundle JSON::

            "datalist": "$modan_monai.data.load_datalist(@manifest, splits=@splits, slice_mode=@slice_mode,
                         central_slices=@central_slices)"
    """
    from .slicing import expand_volume_slices

    df = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest, check_files=check_files)
    return expand_volume_slices(manifest_to_datalist(df, splits=splits), mode=slice_mode, k=central_slices)
