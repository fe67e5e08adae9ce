"""Helpers shared by the manifest builders: frame assembly in the manifest column order, layout checks, errors.

Every builder checks the raw layout its module documents and refuses anything else, naming what it expected and
what it found: a missing documented folder -> ``FileNotFoundError``; an undocumented folder, a file of another type
or a layout without a single image -> ``ValueError``. Hidden entries (names starting with ``.``) are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from modan_monai.data.manifest import MANIFEST_COLUMNS

__all__ = [
    "IMAGE_SUFFIXES",
    "as_frame",
    "check_files",
    "check_folders",
    "check_option",
    "describe",
    "logger",
    "preview",
    "require_dir",
    "require_file",
]

logger = logging.getLogger("data_manifests")

#: 2D image suffixes the readers decode with PIL.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


def preview(items: Sequence[Any], limit: int = 10) -> str:
    """``"a, b, c (+N more)"`` for error messages that list offending files."""
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible sub-folders and files of ``folder``, sorted by name."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    return [p for p in entries if p.is_dir()], [p for p in entries if not p.is_dir()]


def describe(folder: str | Path) -> str:
    """What a folder holds, for error messages: ``"folders ['no', 'yes']; files: 3 .png, 1 .csv"``."""
    folder = Path(folder)
    if not folder.is_dir():
        return "nothing (not a folder)"
    dirs, files = _entries(folder)
    counts: dict[str, int] = {}
    for file in files:
        suffix = file.suffix.lower() or "(no suffix)"
        counts[suffix] = counts.get(suffix, 0) + 1
    found_files = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"
    return f"folders {[d.name for d in dirs]}; files: {found_files}"


def check_folders(
    folder: Path, expected: Sequence[str], what: str, required: Sequence[str] | None = None
) -> list[str]:
    """Check the sub-folders of ``folder`` against the documented ones.

    Args:
        folder: the folder to check.
        expected: every sub-folder name the layout documents.
        what: layout name for messages (``"BUSI root"``).
        required: names that must be present (default: all of ``expected``).

    Returns:
        The names of the expected sub-folders present.

    Raises:
        FileNotFoundError: a required folder is missing (naming the expected and the found entries).
        ValueError: a sub-folder the layout does not document (naming the expected and the found folders).
    """
    dirs, _ = _entries(folder)
    found = [d.name for d in dirs]
    missing = [n for n in (expected if required is None else required) if n not in found]
    if missing:
        raise FileNotFoundError(f"{what} {folder}: folder(s) {missing} not found; expected folders {list(expected)}; "
                                f"found {describe(folder)}.")
    unexpected = [n for n in found if n not in expected]
    if unexpected:
        raise ValueError(f"{what} {folder}: unexpected folder(s) {unexpected}; expected folders {list(expected)} "
                         f"only; found {describe(folder)}.")
    return [n for n in found if n in expected]


def check_files(folder: Path, suffixes: Sequence[str], what: str, expected: str) -> list[Path]:
    """The files of a leaf folder; sub-folders, files of another type and an empty folder are refused.

    Args:
        folder: the folder.
        suffixes: accepted file suffixes (lower case, with the dot).
        what: layout name for messages (``"BUSI class folder"``).
        expected: the documented content, for messages (``"benign (1).png ..."``).

    Returns:
        The files, sorted by name.

    Raises:
        ValueError: a sub-folder, a file with another suffix, or no file at all (naming expected and found).
    """
    dirs, files = _entries(folder)
    if dirs:
        raise ValueError(f"{what} {folder}: unexpected sub-folder(s) {preview([d.name for d in dirs])}; expected "
                         f"only files {expected}.")
    others = [f.name for f in files if f.suffix.lower() not in suffixes]
    if others:
        types = sorted({Path(o).suffix.lower() or "(no suffix)" for o in others})
        raise ValueError(f"{what} {folder}: unexpected file type(s) {types}: {preview(others)}; expected {expected} "
                         f"({', '.join(suffixes)}).")
    if not files:
        raise ValueError(f"{what} {folder}: no images; expected {expected}.")
    return files


def check_option(
    name: str, values: Sequence[str] | str, allowed: Sequence[str], what: str, allow_empty: bool = False
) -> tuple[str, ...]:
    """A builder option listing names: a single string becomes a 1-tuple; names outside ``allowed`` raise.

    Raises:
        ValueError: naming the unknown values and the allowed ones (or an empty option unless ``allow_empty``).
    """
    chosen = (values,) if isinstance(values, str) else tuple(values)
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise ValueError(f"{what}: unknown {name} {unknown}; the layout documents {list(allowed)}.")
    if not chosen and not allow_empty:
        raise ValueError(f"{what}: option {name} is empty; choose from {list(allowed)}.")
    return chosen


def require_dir(path: str | Path, what: str) -> Path:
    """Return ``path`` resolved, or raise ``FileNotFoundError`` naming ``what`` (e.g. "BUSI root")."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {folder}")
    return folder


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` resolved, or raise ``FileNotFoundError`` naming ``what``."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"{what}: file not found: {file}")
    return file


def as_frame(rows: Iterable[Mapping[str, Any]], what: str) -> pd.DataFrame:
    """Build a manifest frame: manifest columns first (missing ones empty), extra columns after, ``index`` Int64.

    Raises:
        ValueError: if there are no rows (an empty manifest is always a mistake in the raw layout or options).
    """
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError(f"{what}: no images found.")
    for column in MANIFEST_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame["index"] = pd.array(frame["index"], dtype="Int64")
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    return frame[list(MANIFEST_COLUMNS) + extra].reset_index(drop=True)
