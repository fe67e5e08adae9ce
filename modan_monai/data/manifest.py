"""Manifest CSV files: one row per image or volume, with its metadata and optional task labels.

Columns (see ``README``): ``path`` (required, relative paths resolve against the manifest's directory), ``key``
(array name inside an ``.npz``), ``index`` (integer index into the array / slice of a volume; empty = whole image),
``modality``, ``anatomy`` (required; may be empty only for DICOM files, whose tags then supply them), ``split``
(train/val/test), ``dataset``, ``case_id`` (grouping that must never straddle folds), and any number of extra columns:
task labels (``label``, ``nodule``...), mask paths (``mask_<name>``) or further metadata groups (``plane``, ``view``).

Checks at read time (no row is ever dropped in silence): a ``split`` value outside :data:`SPLITS` and an image entry
``(path, key, index)`` listed twice raise a ``ValueError`` naming the manifest and the rows (duplicates become a
warning with ``duplicates="warn"``); a row whose path is a folder, and an ``.npz`` row without ``index`` whose array
is a stack of images, raise naming the row and the file. The row counts of every datalist (rows per split, slices
expanded from volumes) are logged at INFO by the ``modan_monai.data`` loggers.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DUPLICATE_POLICIES",
    "MANIFEST_COLUMNS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "check_duplicates",
    "check_splits",
    "load_datalist",
    "manifest_to_datalist",
    "read_manifest",
    "write_manifest",
]

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "key", "index", "modality", "anatomy", "split", "dataset", "case_id")
REQUIRED_COLUMNS: tuple[str, ...] = ("path", "modality", "anatomy", "split", "dataset", "case_id")
#: The values the ``split`` column may hold.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: What to do with an image entry ``(path, key, index)`` listed on more than one row.
DUPLICATE_POLICIES: tuple[str, ...] = ("error", "warn")

logger = logging.getLogger(__name__)

# How many offending rows an error message lists before "(+N more)".
_PREVIEW = 10
# DataFrame.attrs key recording the duplicates policy a frame was checked with by read_manifest.
_CHECKED = "duplicates_checked"

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


def _preview(items: Sequence[str], limit: int = _PREVIEW) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _rows(df: pd.DataFrame) -> np.ndarray:
    """Row numbers for messages: the ``row`` column of :func:`read_manifest`, else positions."""
    return df["row"].to_numpy() if "row" in df.columns else np.arange(len(df))


def _origin(df: pd.DataFrame) -> str:
    """``"manifest <file>"`` (the ``manifest`` column of :func:`read_manifest`), else ``"manifest frame"``."""
    if "manifest" in df.columns and len(df):
        names = sorted(set(df["manifest"].dropna().astype(str)))
        if names:
            return "manifest " + ", ".join(names)
    return "manifest frame"


def check_splits(df: pd.DataFrame) -> None:
    """Raise if a ``split`` value is not one of :data:`SPLITS` (such a row would otherwise never be read).

    Args:
        df: manifest frame with a ``split`` column (and, from :func:`read_manifest`, ``row`` / ``manifest``).

    Raises:
        ValueError: naming the manifest, the rows (a preview when many), the values found and the allowed values.
    """
    values = df["split"]
    bad = ~values.astype(str).isin(SPLITS) | values.isna()
    if not bad.any():
        return
    rows = _rows(df)[bad.to_numpy()]
    found = values[bad]
    listed = [f"row {r} {v!r}" for r, v in zip(rows, found.where(found.notna(), None))]
    raise ValueError(
        f"{_origin(df)}: {len(rows)} row(s) have a split value outside {SPLITS}: {_preview(listed)}. "
        f"Values found: {sorted({str(v) for v in found})}; write train, val or test in the 'split' column "
        "(a row with another value would never be read)."
    )


def check_duplicates(df: pd.DataFrame, duplicates: str = "error") -> int:
    """Find image entries ``(path, key, index)`` listed on more than one row.

    Args:
        df: manifest frame (``path``; ``key`` / ``index`` when present).
        duplicates: ``"error"`` raises; ``"warn"`` logs a warning and keeps every row (each copy is then a
            separate sample, i.e. the image is seen more often).

    Returns:
        The number of rows that repeat an earlier row's entry (0 when none).

    Raises:
        ValueError: repeated entries with ``duplicates="error"`` (naming the manifest, each entry and its rows), or
            an unknown policy.
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}.")
    columns = [c for c in ("path", "key", "index") if c in df.columns]
    identity = df[columns].astype(object).where(df[columns].notna(), "").astype(str)
    repeated = identity.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return 0
    rows = _rows(df)
    groups: dict[tuple[str, ...], list[int]] = {}
    for position in np.flatnonzero(repeated):
        groups.setdefault(tuple(identity.iloc[position]), []).append(int(rows[position]))
    entries = []
    for entry, where in groups.items():
        parts = dict(zip(columns, entry))
        what = parts["path"] + "".join(f" {c} {parts[c]}" for c in ("key", "index") if parts.get(c))
        entries.append(f"rows {', '.join(map(str, where))}: {what}")
    extra = int(repeated.sum()) - len(groups)
    text = (f"{_origin(df)}: {len(groups)} image entr{'y' if len(groups) == 1 else 'ies'} (path, key, index) "
            f"listed on more than one row: {_preview(entries)}")
    if duplicates == "error":
        raise ValueError(f"{text}. Remove the repeated rows, or read with duplicates='warn' to keep them (each copy "
                         "is then sampled as a separate image).")
    logger.warning("%s; kept all %d repeated row(s) (duplicates='warn'): each copy is a separate sample.", text,
                   extra + len(groups))
    return extra


def _npz_header_shape(path: str, key: str | None) -> tuple[int, ...] | None:
    """Shape of array ``key`` (or the only array) of an ``.npz``, from its ``.npy`` header; None if unknown."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.endswith(".npy")]
            name = f"{key}.npy" if key else (members[0] if len(members) == 1 else None)
            if name is None or name not in members:
                return None  # a missing / ambiguous key is reported by NpzReader with the arrays present
            with archive.open(name) as handle:
                version = np.lib.format.read_magic(handle)
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, _ = header(handle)
    except (OSError, ValueError, zipfile.BadZipFile):
        return None  # unreadable: the reader names the file and the error when the row is loaded
    return tuple(int(s) for s in shape)


def _check_npz_index(df: pd.DataFrame, manifest: Path) -> None:
    """An ``.npz`` row without ``index`` whose array is a stack of images -> ValueError naming row and file."""
    no_index = df["index"].isna() if "index" in df.columns else pd.Series(True, index=df.index)
    is_npz = df["path"].astype(str).str.lower().str.endswith(".npz")
    keys = df["key"] if "key" in df.columns else pd.Series(None, index=df.index)
    shapes: dict[tuple[str, str | None], tuple[int, ...] | None] = {}
    for position in np.flatnonzero((no_index & is_npz).to_numpy()):
        path = str(df["path"].iloc[position])
        key = keys.iloc[position]
        key = None if pd.isna(key) else str(key)
        if (path, key) not in shapes:
            shapes[(path, key)] = _npz_header_shape(path, key)
        shape = shapes[(path, key)]
        if shape is not None and len(shape) >= 3:
            raise ValueError(
                f"manifest {manifest} row {int(df['row'].iloc[position])}: {path}: array "
                f"{key or '(the only array)'!r} of shape {shape} holds {shape[0]} images and the row has no 'index': "
                "the index column is required for .npz rows (the image's position in the array, e.g. 0..N-1)."
            )


def read_manifest(
    path: str | Path,
    required: Sequence[str] = REQUIRED_COLUMNS,
    check_files: bool = True,
    *,
    duplicates: str = "error",
) -> pd.DataFrame:
    """Read a manifest CSV, validate it and resolve file paths.

    Args:
        path: manifest CSV file.
        required: columns that must be present.
        check_files: check that every ``path`` and non-empty ``mask_*`` file exists and is a file, and that
            ``.npz`` rows pointing at a stack of images have an ``index``.
        duplicates: an image entry ``(path, key, index)`` on more than one row: ``"error"`` (default) raises,
            ``"warn"`` logs a warning and keeps the rows (see :func:`check_duplicates`).

    Returns:
        DataFrame with absolute ``path`` (and ``mask_*``) values, ``index`` as nullable ``Int64``, all other
        columns as read (empty cells are NaN) plus ``row`` (0-based data row number) and ``manifest`` (absolute
        manifest path).

    Raises:
        FileNotFoundError: if the manifest or a listed file does not exist
            (``"manifest <m> row <r>: file not found: <path>"``).
        ValueError: if required columns are missing (the message names them and the manifest), a required cell
            other than ``modality``/``anatomy`` is empty, an ``index`` value is not a non-negative integer, a
            ``split`` value is not one of :data:`SPLITS` (naming the rows and the allowed values), an entry is
            duplicated (``duplicates="error"``), a listed path is a folder, or an ``.npz`` stack row has no
            ``index`` (naming the row and the file).
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}.")
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
    check_splits(df)
    check_duplicates(df, duplicates)
    if check_files:
        for column in _path_columns(df):
            for row, value in zip(df["row"], df[column]):
                if pd.isna(value):
                    continue
                if Path(value).is_dir():
                    raise ValueError(f"manifest {manifest} row {row}: column {column!r} names a directory, not a "
                                     f"file: {value} (each row lists one image file; build a manifest of a folder "
                                     "with scripts/build_manifest.py).")
                if not Path(value).exists():
                    raise FileNotFoundError(f"manifest {manifest} row {row}: file not found: {value}")
        _check_npz_index(df, manifest)
    df.attrs[_CHECKED] = duplicates
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


def _split_counts(values: Sequence[Any]) -> str:
    counts = pd.Series([str(v) for v in values], dtype=object).value_counts()
    return ", ".join(f"{s} {int(counts[s])}" for s in SPLITS if s in counts) or "none"


def manifest_to_datalist(
    df: pd.DataFrame,
    splits: str | Sequence[str] | None = None,
    *,
    duplicates: str | None = None,
) -> list[dict[str, Any]]:
    """Turn a manifest frame (from :func:`read_manifest` or a builder) into a MONAI datalist.

    The split values are checked (:func:`check_splits`) and, unless :func:`read_manifest` already checked the
    frame with the same policy, repeated entries too (:func:`check_duplicates`). The row counts (all rows per
    split, and the rows kept) are logged at INFO.

    Args:
        df: manifest frame.
        splits: keep only these splits (``"train"`` or ``["train", "val"]``); ``None`` keeps all rows.
        duplicates: ``"error"`` or ``"warn"`` for repeated ``(path, key, index)`` entries; ``None`` = the policy
            the frame was read with (``read_manifest(duplicates=...)``), else ``"error"``.

    Returns:
        One dict per row: ``image`` (absolute path), ``key`` (str or None), ``index`` (int or None), ``modality``,
        ``anatomy``, ``split``, ``dataset``, ``case_id``, ``row``, ``manifest``, ``source`` (``"manifest <m> row
        <r>: <path>"``, a string that survives collation, so an error raised on a batch can name its files) and
        every extra column (NaN -> None).

    Raises:
        ValueError: if a required column is missing, a split value is not one of :data:`SPLITS`, an entry is
            repeated (policy ``"error"``) or a requested split has no rows.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest frame is missing required column(s) {missing}.")
    check_splits(df)
    policy = duplicates if duplicates is not None else df.attrs.get(_CHECKED, "error")
    if df.attrs.get(_CHECKED) != policy:
        check_duplicates(df, policy)
    origin = _origin(df)
    total = f"{origin}: {len(df)} row(s) ({_split_counts(df['split'])})"
    if splits is not None:
        wanted = [splits] if isinstance(splits, str) else list(splits)
        present = set(df["split"].dropna().astype(str))
        absent = [s for s in wanted if s not in present]
        if absent:
            raise ValueError(f"{origin} has no rows for split(s) {absent} (split values are {', '.join(SPLITS)}); "
                             f"splits present: {sorted(present)}.")
        df = df[df["split"].astype(str).isin(wanted)]
        logger.info("%s; datalist of split(s) %s: %d row(s).", total, wanted, len(df))
    else:
        logger.info("%s; datalist of all splits: %d row(s).", total, len(df))
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
    duplicates: str | None = None,
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
        duplicates: repeated ``(path, key, index)`` entries: ``"error"`` or ``"warn"`` (keep them, with a
            warning); see :func:`check_duplicates`. ``None`` (default): ``"error"`` for a CSV, and for a frame the
            policy it was read with.

    Returns:
        The datalist (one dict per 2D image or slice).

    Raises:
        FileNotFoundError: the manifest or a listed file is missing (naming the row).
        ValueError: a bad manifest (see :func:`read_manifest`: split values, duplicates, folders, ``.npz`` rows
            without ``index``), a split without rows, an unknown ``slice_mode``, ``central_slices`` < 1 or an
            unreadable volume (naming the row).

    Example:
        >>> rows = load_datalist("pretrain.csv", "train", slice_mode="central", central_slices=3)  # doctest: +SKIP

        In bundle JSON::

            "datalist": "$modan_monai.data.load_datalist(@manifest, splits=@splits, slice_mode=@slice_mode,
                         central_slices=@central_slices)"
    """
    from .slicing import expand_volume_slices

    if isinstance(manifest, pd.DataFrame):
        rows = manifest_to_datalist(manifest, splits=splits, duplicates=duplicates)
    else:
        df = read_manifest(manifest, check_files=check_files, duplicates=duplicates or "error")
        rows = manifest_to_datalist(df, splits=splits)
    return expand_volume_slices(rows, mode=slice_mode, k=central_slices)
