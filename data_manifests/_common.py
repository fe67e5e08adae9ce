"""Helpers shared by the manifest builders: frame assembly in the manifest column order, file listing, errors."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from modan_monai.data.manifest import MANIFEST_COLUMNS

__all__ = ["IMAGE_SUFFIXES", "as_frame", "require_dir", "require_file", "logger", "preview"]

logger = logging.getLogger("data_manifests")

#: 2D image suffixes the readers decode with PIL.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def preview(items: Sequence[Any], limit: int = 10) -> str:
    """``"a, b, c (+N more)"`` for error messages that list offending files."""
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


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
