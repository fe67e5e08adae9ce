"""Manifest CSV files: one row per image or volume, with its metadata and optional task labels.

Columns (see ``bundles/pretrain/docs/data.md``, "Manifests"): ``path`` (required, relative paths resolve against
the manifest's directory), ``key``
(array name inside an ``.npz``), ``index`` (integer index into the array / slice of a volume; empty = whole image),
``modality``, ``anatomy`` (required; may be empty only for DICOM files, whose tags then supply them), ``split``
(train/val/test), ``dataset``, ``case_id`` (grouping that must never straddle folds), and any number of extra columns:
task labels (``label``, ``nodule``...), mask paths (``mask_<name>``) or further metadata groups (``plane``, ``view``).

Checks at read time (no row is ever dropped in silence): a ``split`` value outside :data:`SPLITS` and an image entry
``(path, key, index)`` listed twice raise a ``ValueError`` naming the manifest and the rows (duplicates become a
warning with ``duplicates="warn"``); a row whose path is a folder, and an ``.npz`` row without ``index`` whose array
is a stack of images, raise naming the row and the file. The row counts of every datalist (rows per split, slices
expanded from volumes) are logged at INFO by the ``modan_monai.data`` loggers.

Reading works column by column, not row by row (a million-row manifest takes seconds): relative paths are joined to
the real folder of their parent, found once per distinct folder; the file check lists each folder once
(``os.scandir``) instead of one ``stat`` per row, and ``read_manifest(check_files=False)`` skips it. Symlinked files
and paths that pathlib would rewrite (``//``, ``/./``...) take the per-row route, so every path string is the one
``Path.resolve`` gives.
"""

from __future__ import annotations

import logging
import operator
import os
import stat
import zipfile
from collections.abc import Sequence
from itertools import repeat
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
    if not values.notna().any():
        return pd.Series(pd.NA, index=values.index, dtype="Int64")
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
        names = sorted(df["manifest"].dropna().astype(str).unique())
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


def _identity_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The text that identifies an image entry: ``str(value)`` per cell, ``""`` for an empty one."""
    return frame.astype(object).where(frame.notna(), "").astype(str)


def _identity_codes(column: pd.Series) -> np.ndarray:
    """Integer codes of one column, equal exactly where :func:`_identity_text` of the cells is equal."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return pd.factorize(column)[0]  # distinct integers have distinct text; empty cells get their own code
    cells = column.to_numpy(dtype=object)
    empty = column.isna().to_numpy(dtype=bool)
    if set(map(type, cells[~empty])) <= {str}:
        filled = cells.copy()
        filled[empty] = ""
        return pd.factorize(filled)[0]
    return pd.factorize(_identity_text(column.to_frame()).iloc[:, 0].to_numpy(dtype=object))[0]


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
    codes = {c: _identity_codes(df[c]) for c in columns[:1]}
    if columns and (len(df) == 0 or codes[columns[0]].max() + 1 == len(df)):
        return 0  # every path differs: no entry can repeat
    codes = pd.DataFrame({c: codes[c] if c in codes else _identity_codes(df[c]) for c in columns}, index=df.index)
    repeated = codes.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return 0
    positions = np.flatnonzero(repeated)
    rows = _rows(df)[positions]
    identity = _identity_text(df[columns].iloc[positions])
    groups: dict[tuple[str, ...], list[int]] = {}
    for row, entry in zip(rows, identity.itertuples(index=False, name=None)):
        groups.setdefault(entry, []).append(int(row))
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
    """An ``.npz`` row without ``index`` whose array is a stack of images -> ValueError naming row and file.

    Each distinct ``(path, key)`` header is read once, in row order, up to the first stack.
    """
    no_index = df["index"].isna().to_numpy(dtype=bool) if "index" in df.columns else np.ones(len(df), dtype=bool)
    positions = np.flatnonzero(no_index)
    paths = df["path"].iloc[positions].astype(str).to_numpy(dtype=object)
    # A path whose lower case ends in ".npz" ends in "z" or "Z": only those are lowered.
    ends_z = np.array([path.endswith(("z", "Z")) for path in paths], dtype=bool)
    positions, paths = positions[ends_z], paths[ends_z]
    is_npz = np.array([path.lower().endswith(".npz") for path in paths], dtype=bool)
    positions, paths = positions[is_npz], paths[is_npz]
    if not len(positions):
        return
    keys = (df["key"].iloc[positions] if "key" in df.columns else pd.Series(None, index=df.index[positions]))
    keys = keys.astype(object).where(keys.notna(), None).to_numpy(dtype=object)
    pairs = pd.DataFrame({"path": paths, "key": keys}).drop_duplicates()
    for first, path, key in zip(pairs.index, pairs["path"], pairs["key"]):
        key = None if key is None else str(key)
        shape = _npz_header_shape(path, key)
        if shape is not None and len(shape) >= 3:
            position = positions[first]
            raise ValueError(
                f"manifest {manifest} row {int(df['row'].iloc[position])}: {path}: array "
                f"{key or '(the only array)'!r} of shape {shape} holds {shape[0]} images and the row has no 'index': "
                "the index column is required for .npz rows (the image's position in the array, e.g. 0..N-1)."
            )


# --- file paths: resolution and existence checks, batched per folder -------------------------------------------------

# What the batched probe learns about one listed file.
_MISSING, _FILE, _DIR, _PER_ROW = 0, 1, 2, 3
# A folder holding at least this many rows of a column is listed once (os.scandir); the rows of smaller folders get
# one os.lstat each (listing a folder of many other files for a handful of rows would cost more).
_SCAN_MIN_ROWS = 16
# The batched route relies on POSIX path syntax; elsewhere every row takes the per-row route.
_BATCHED_PATHS = os.sep == "/" and os.altsep is None


def _resolve_one(value: str, base: Path) -> str:
    """The resolved form of one manifest path: absolute paths as written (normalised), others against ``base``."""
    path = Path(str(value))
    return str(path) if path.is_absolute() else str((base / str(value)).resolve())


def _directory_error(manifest: Path, row: int, column: str, value: str) -> ValueError:
    return ValueError(f"manifest {manifest} row {row}: column {column!r} names a directory, not a file: {value} "
                      "(each row lists one image file; build a manifest of a folder with scripts/build_manifest.py).")


def _missing_error(manifest: Path, row: int, value: str) -> FileNotFoundError:
    return FileNotFoundError(f"manifest {manifest} row {row}: file not found: {value}")


def _check_one(manifest: Path, row: int, column: str, value: str) -> None:
    """Raise if ``value`` (a resolved path of ``row``) is a folder or does not exist (one ``stat`` each)."""
    if Path(value).is_dir():
        raise _directory_error(manifest, row, column, value)
    if not Path(value).exists():
        raise _missing_error(manifest, row, value)


def _lstat_kind(path: str) -> int:
    """:data:`_MISSING`, :data:`_FILE` or :data:`_DIR` from one ``os.lstat``; a symlink or an error -> per row."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return _MISSING
    except (OSError, ValueError):
        return _PER_ROW
    if stat.S_ISLNK(mode):
        return _PER_ROW
    return _DIR if stat.S_ISDIR(mode) else _FILE


_IS_REGULAR = operator.methodcaller("is_file", follow_symlinks=False)


def _entry_kind(entry: os.DirEntry) -> int:
    """Kind of a listed entry that is not a regular file: a folder, a symlink (per row) or another file type."""
    try:
        if entry.is_symlink():
            return _PER_ROW
        return _DIR if entry.is_dir(follow_symlinks=False) else _FILE
    except OSError:
        return _PER_ROW


def _scan_folder(folder: str) -> tuple[set[str], dict[str, int]] | int:
    """The entries of ``folder`` from one ``os.scandir``, or the kind that every file in it gets.

    Returns:
        The names of all entries and the kinds of those that are not regular files (folders, symlinks...), or
        :data:`_MISSING` for a missing folder and :data:`_PER_ROW` for one that cannot be listed.
    """
    try:
        if not os.access(folder, os.R_OK | os.X_OK):
            return _PER_ROW
        with os.scandir(folder) as iterator:
            entries = list(iterator)
        # Regular files are told apart without a system call where the folder records entry types (most do).
        regular = np.fromiter(map(_IS_REGULAR, entries), dtype=bool, count=len(entries))
    except (FileNotFoundError, NotADirectoryError):
        return _MISSING  # nothing below a missing folder exists (nor is a symlink)
    except (OSError, ValueError):
        return _PER_ROW
    others = {entries[i].name: _entry_kind(entries[i]) for i in np.flatnonzero(~regular)}
    return {entry.name for entry in entries}, others


def _real_folder(relative: str, base: str, memo: dict[str, str]) -> str:
    """``os.path.realpath(os.path.join(base, relative))`` of a relative folder, one ``os.lstat`` per new folder.

    Args:
        relative: folder relative to ``base`` (non-empty).
        base: a real folder (no symlinks in it).
        memo: real folders already found (relative folder -> real folder), updated in place.

    Returns:
        The real folder. A folder whose last part is a plain name and no symlink is that name in its real parent,
        just as ``realpath`` builds it; one whose last part is ``..``, ``.`` or a symlink is left to ``realpath``.
    """
    chain = []
    folder = relative
    while folder and folder not in memo:
        chain.append(folder)
        folder = folder.rpartition("/")[0]
    parent = memo[folder] if folder else base
    for folder in reversed(chain):
        name = folder.rpartition("/")[2]
        real = None
        if name not in ("", ".", ".."):
            candidate = os.path.join(parent, name)
            try:
                is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
            except (OSError, ValueError):
                is_link = False  # as realpath: a part it cannot stat is taken as it is
            real = None if is_link else candidate
        if real is None:
            real = os.path.realpath(os.path.join(base, folder))
        memo[folder] = parent = real
    return memo[relative]


def _probe(prefixes: list[str], codes: np.ndarray, paths: np.ndarray, names: np.ndarray,
           scans: dict[str, tuple[set[str], dict[str, int]] | int]) -> np.ndarray:
    """Kind of each file: one listing per folder holding many of them, one ``os.lstat`` per file otherwise.

    Args:
        prefixes: the folders, each ending in ``/`` (two may be equal).
        codes: folder of each file (index into ``prefixes``).
        paths: each file, ``prefixes[codes[i]] + names[i]``.
        names: the name of each file in its folder.
        scans: listings already made (for another path column), updated in place.

    Returns:
        ``int8`` array of :data:`_MISSING`, :data:`_FILE`, :data:`_DIR` or :data:`_PER_ROW` (symlinks, errors).
    """
    kinds = np.empty(len(codes), dtype=np.int8)
    in_listed = (np.bincount(codes, minlength=len(prefixes)) >= _SCAN_MIN_ROWS)[codes]
    for position in np.flatnonzero(~in_listed):
        kinds[position] = _lstat_kind(paths[position])
    positions = np.flatnonzero(in_listed)
    if not len(positions):
        return kinds
    order = positions[np.argsort(codes[positions], kind="stable")]  # the files grouped by folder
    grouped = codes[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(order)]):
        prefix = prefixes[grouped[start]]
        if prefix not in scans:
            scans[prefix] = _scan_folder(prefix)
        listing = scans[prefix]
        rows = order[start:end]
        if isinstance(listing, int):
            kinds[rows] = listing
            continue
        listed, others = listing
        wanted = names[rows]
        if not others and listed.issuperset(wanted):
            kinds[rows] = _FILE  # the common case: every file is there and the folder holds only regular files
        else:
            kinds[rows] = [others.get(name, _FILE) if name in listed else _MISSING for name in wanted]
    return kinds


def _resolve_paths(
    values: pd.Series,
    base: Path,
    probe_absolute: bool,
    scans: dict[str, tuple[set[str], dict[str, int]] | int],
    memo: dict[str, str],
) -> tuple[pd.Series, np.ndarray]:
    """Resolve one path column, batched, to the strings of :func:`_resolve_one`.

    Relative paths are joined to the real folder of their parent (:func:`_real_folder`, once per distinct folder).
    A row whose file is a symlink, or whose text pathlib would rewrite (``//``, ``/./``, a last part ``..``, ``.``
    or empty...), goes through :func:`_resolve_one`. The kind of each file (for the file checks) comes from
    :func:`_probe`.

    Args:
        values: the column as read (text, NaN for empty cells).
        base: the manifest's folder (already resolved).
        probe_absolute: also probe absolute paths (they need it only for the file checks).
        scans: folder listings shared between the path columns of one manifest.
        memo: real folders of relative folders, shared between the path columns of one manifest.

    Returns:
        The resolved column (``object``, None for empty cells) and the kind of each row (:data:`_FILE` for empty
        cells and unprobed rows, :data:`_PER_ROW` for rows to check one by one).
    """
    resolved = np.full(len(values), None, dtype=object)
    kinds = np.full(len(values), _FILE, dtype=np.int8)
    present = np.flatnonzero(values.notna().to_numpy())
    text = values.iloc[present].astype(str).to_numpy(dtype=object)
    per_row = np.ones(len(text), dtype=bool)
    if _BATCHED_PATHS and len(text):
        parts = [value.rpartition("/") for value in text]
        heads = np.array([part[0] for part in parts], dtype=object)
        names = np.array([part[2] for part in parts], dtype=object)
        absolute = np.array([value.startswith("/") for value in text], dtype=bool)
        irregular = np.array(pd.Series(names, dtype=object).isin(("", ".", "..")), dtype=bool)
        if any("\x00" in value for value in text):
            irregular |= np.array(["\x00" in value for value in text], dtype=bool)
        if absolute.any():
            irregular[absolute] |= np.array([("//" in v or "/./" in v) for v in text[absolute]], dtype=bool)
        per_row = irregular.copy()
        relative_rows = np.flatnonzero(~irregular & ~absolute)
        if len(relative_rows):
            codes, folders = pd.factorize(heads[relative_rows])
            real = [_real_folder(folder, str(base), memo) if folder else str(base) for folder in folders]
            prefixes = [folder if folder.endswith("/") else folder + "/" for folder in real]
            joined = np.asarray(prefixes, dtype=object)[codes] + names[relative_rows]
            found = _probe(prefixes, codes, joined, names[relative_rows], scans)
            resolved[present[relative_rows]] = joined
            kinds[present[relative_rows]] = found
            per_row[relative_rows[found == _PER_ROW]] = True
        absolute_rows = np.flatnonzero(~irregular & absolute)
        resolved[present[absolute_rows]] = text[absolute_rows]  # pathlib leaves these as written
        if probe_absolute and len(absolute_rows):
            codes, folders = pd.factorize(heads[absolute_rows])
            prefixes = [folder + "/" if folder else "/" for folder in folders]
            kinds[present[absolute_rows]] = _probe(prefixes, codes, text[absolute_rows], names[absolute_rows], scans)
    for position in np.flatnonzero(per_row):
        resolved[present[position]] = _resolve_one(text[position], base)
        kinds[present[position]] = _PER_ROW
    return pd.Series(resolved, index=values.index, dtype=object), kinds


def _check_files(df: pd.DataFrame, column: str, kinds: np.ndarray, manifest: Path) -> None:
    """Raise for the first row (in row order) of ``column`` that names a folder or a missing file.

    Args:
        df: the frame being read (resolved ``column``, ``row``).
        column: ``path`` or a ``mask_*`` column.
        kinds: the kind of each row from :func:`_resolve_paths`; :data:`_PER_ROW` rows are checked one by one.
        manifest: the manifest file, for the message.

    Raises:
        ValueError: a row names a folder.
        FileNotFoundError: a row names a file that does not exist.
    """
    values = df[column].to_numpy(dtype=object)
    rows = df["row"].to_numpy()
    for position in np.flatnonzero(kinds != _FILE):
        if kinds[position] == _DIR:
            raise _directory_error(manifest, rows[position], column, values[position])
        if kinds[position] == _MISSING:
            raise _missing_error(manifest, rows[position], values[position])
        _check_one(manifest, rows[position], column, values[position])


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
            ``.npz`` rows pointing at a stack of images have an ``index``. Batched: a folder holding at least 16
            of a column's files is listed once (``os.scandir``), a file in a smaller folder gets one ``os.lstat``,
            a symlinked file is checked on its own. ``False`` skips the check (files not on this machine, or a
            faster read); paths resolve to the same strings either way (relative folders still get their
            ``realpath`` and listing, to find symlinked files).
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
    try:
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise ValueError(f"manifest {manifest} is empty: a CSV with a header row (path, modality, ...) is expected.") \
            from None
    except UnicodeDecodeError as err:
        raise ValueError(
            f"manifest {manifest} is not UTF-8 text ({err.reason}: byte {err.object[err.start:err.start + 1]!r}): "
            "save it as a UTF-8 CSV."
        ) from None
    except (pd.errors.ParserError, IsADirectoryError, PermissionError) as err:
        raise ValueError(f"manifest {manifest} cannot be read as a CSV: {err}") from err
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
    kinds: dict[str, np.ndarray] = {}
    scans: dict[str, tuple[set[str], dict[str, int]] | int] = {}
    memo: dict[str, str] = {}
    for column in _path_columns(df):
        df[column], kinds[column] = _resolve_paths(df[column], manifest.parent, check_files, scans, memo)
    df["row"] = np.arange(len(df), dtype=np.int64)
    df["manifest"] = str(manifest)
    check_splits(df)
    check_duplicates(df, duplicates)
    if check_files:
        for column in _path_columns(df):
            _check_files(df, column, kinds[column], manifest)
        _check_npz_index(df, manifest)
    df.attrs[_CHECKED] = duplicates
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest CSV with file paths relative to the CSV's directory.

    Paths keep the symbolic links they were given through (computed lexically, not resolved): a manifest built
    through a linked data folder names the link, so it keeps working when moved together with it (see
    :func:`_stored_path`; a path the manifest's real folder cannot reach relatively is written absolute).

    Args:
        df: manifest frame (e.g. from a ``data_manifests`` builder or :func:`read_manifest`).
        path: output CSV file; parent folders are created.

    Returns:
        The absolute path of the written file (made absolute lexically: a link on the way is kept).

    Raises:
        ValueError: if a required column is missing (the message names it).
    """
    out = Path(os.path.abspath(path))
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"cannot write manifest {out}: missing required column(s) {missing}.")
    frame = df.drop(columns=[c for c in _INTERNAL_COLUMNS if c in df.columns]).copy()
    out.parent.mkdir(parents=True, exist_ok=True)
    base, real_base = str(out.parent), os.path.realpath(out.parent)
    folders: dict[str, str] = {}  # folder as written in the frame -> the folder the manifest stores
    for column in _path_columns(frame):
        frame[column] = [
            value if pd.isna(value) or value is None else _stored_path(str(value), base, real_base, folders)
            for value in frame[column]
        ]
    ordered = [c for c in MANIFEST_COLUMNS if c in frame.columns]
    ordered += [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    frame[ordered].to_csv(out, index=False)
    return out


def _stored_path(value: str, base: str, real_base: str, folders: dict[str, str]) -> str:
    """The path a manifest in ``base`` stores for the file ``value``: the path as given, not resolved.

    Symbolic links on the way are kept (a manifest built through a linked folder names the link, so it still works
    when moved together with the link), and the path is relative to ``base`` when the reader, which joins it to the
    manifest's real folder (``real_base``), reaches the same folder; else it is absolute. Paths are made absolute and
    relative lexically (``os.path.abspath`` / ``relpath``); a folder whose lexical form leads elsewhere than its real
    one (``link/..``) is stored by its real path, relative to ``real_base``. One answer per folder (``folders``).
    """
    folder, name = os.path.split(value)
    if folder not in folders:
        given, real = os.path.abspath(folder), os.path.realpath(folder)
        if os.path.realpath(given) != real:  # ".." after a link: only the resolved form names the folder
            folders[folder] = _relative(Path(real), Path(real_base))
        else:
            relative = _relative(Path(given), Path(base))
            same = not os.path.isabs(relative) and os.path.realpath(os.path.join(real_base, relative)) == real
            folders[folder] = relative if same else given
    return Path(folders[folder], name).as_posix()


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


# Cell types whose values `_column_cells` takes as they are (missing ones become None).
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None), type(pd.NA), type(pd.NaT)})
# Column types whose `to_numpy(dtype=object)` holds the values `to_dict("records")` gives: numpy numbers, booleans and
# objects, text and the nullable numbers (categoricals, dates and the like go cell by cell).
_NULLABLE_DTYPES = (pd.StringDtype, pd.BooleanDtype, pd.Int8Dtype, pd.Int16Dtype, pd.Int32Dtype, pd.Int64Dtype,
                    pd.UInt8Dtype, pd.UInt16Dtype, pd.UInt32Dtype, pd.UInt64Dtype, pd.Float32Dtype, pd.Float64Dtype)


def _column_cells(column: pd.Series) -> list[Any]:
    """The cells of one column as :func:`_cell` makes them of ``DataFrame.to_dict("records")``, in one pass.

    Columns of plain Python values (text, numbers, booleans: numpy, text and nullable numeric columns convert to
    these) are converted at once, missing cells becoming None; any other column goes through ``to_dict`` and
    :func:`_cell` cell by cell.
    """
    dtype = column.dtype
    cells = column.to_numpy(dtype=object)
    if (isinstance(dtype, _NULLABLE_DTYPES) or (isinstance(dtype, np.dtype) and dtype.kind in "biuf")
            or (dtype == object and set(map(type, cells)) <= _PLAIN_TYPES)):
        cells = cells.copy()
        cells[column.isna().to_numpy(dtype=bool)] = None
        return cells.tolist()
    return [_cell(record["cell"]) for record in column.to_frame("cell").to_dict(orient="records")]


def _typed(cells: list[Any], types: frozenset[type], convert: Any) -> list[Any]:
    """``cells`` when each is of one of ``types``, else ``[convert(cell) for cell in cells]``."""
    return cells if set(map(type, cells)) <= types else [convert(cell) for cell in cells]


def _split_counts(values: pd.Series) -> str:
    counts: dict[str, int] = {}
    for value, count in values.value_counts(dropna=False).items():
        counts[str(value)] = counts.get(str(value), 0) + int(count)
    return ", ".join(f"{s} {counts[s]}" for s in SPLITS if s in counts) or "none"


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
    return _records(df)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The datalist items of a manifest frame, built column by column (see :func:`manifest_to_datalist`)."""
    cells: dict[str, list[Any]] = {}
    for position, name in enumerate(df.columns):
        cells[str(name)] = _column_cells(df.iloc[:, position])
    n = len(df)
    none = frozenset({type(None)})
    cells["image"] = _typed(cells.pop("path"), frozenset({str}), str)
    cells["key"] = _typed(cells.get("key", [None] * n), frozenset({str}) | none,
                          lambda v: None if v is None else str(v))
    cells["index"] = _typed(cells.get("index", [None] * n), frozenset({int}) | none,
                            lambda v: None if v is None else int(v))
    rows = cells.get("row", [None] * n)
    cells["row"] = rows if set(map(type, rows)) <= {int} else [
        int(v) if v is not None else position for position, v in enumerate(rows)
    ]
    cells["manifest"] = _typed(cells.get("manifest", [None] * n), frozenset({str}) | none,
                               lambda v: None if v is None else str(v))
    for column in ("split", "dataset", "case_id"):
        cells[column] = _typed(cells[column], frozenset({str}), str)
    cells["source"] = [f"manifest {m} row {r}: {i}" for m, r, i in zip(cells["manifest"], cells["row"], cells["image"])]
    return list(map(dict, map(zip, repeat(list(cells)), zip(*cells.values()))))


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
        check_files: check that every listed file exists (when ``manifest`` is a path), one folder listing at a
            time (see :func:`read_manifest`).
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
