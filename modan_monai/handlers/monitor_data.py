"""The rows the k-NN / linear-probe monitor judges: any manifest, labelled by a column or by modality x anatomy.

By default the monitor reads the pretraining manifest itself and labels each image with its combined modality x
anatomy class (self-contained, no labels needed). A user who cares about a downstream quantity points it at a
labelled manifest instead (e.g. a downstream task's images, kept out of pretraining) and names the label column;
the monitor then reports how well the encoder separates those labels while it trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from modan_monai.data import load_datalist

__all__ = ["monitor_datalist"]

_MAX_SHOWN = 8


def _empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, float) and value != value)


def monitor_datalist(
    manifest: str | Path | pd.DataFrame,
    label_column: str | None = None,
    slice_mode: str = "all",
    central_slices: int = 1,
    manifest_id: str = "monitor_manifest",
    label_id: str = "monitor_label",
) -> list[dict[str, Any]]:
    """The monitor's datalist (every split) of ``manifest``, with its label column checked.

    Args:
        manifest: manifest CSV path (or a frame from ``read_manifest``).
        label_column: the column holding each image's class (any values: text or numbers); ``None``: the class is
            computed later from the modality and anatomy (``CombinedClassd``), nothing is checked here.
        slice_mode: ``"all"`` or ``"central"`` (see :func:`modan_monai.data.load_datalist`).
        central_slices: central slices per volume for ``"central"``.
        manifest_id: config id of the manifest, named in errors.
        label_id: config id of the label column, named in errors.

    Returns:
        The rows (``split``, ``image``, ... and the label column).

    Raises:
        ValueError: naming the manifest, the column and the config ids, when the manifest has no rows, the label
            column is missing, or some of its cells are empty (naming the rows); see
            :func:`~modan_monai.data.load_datalist` for the manifest's own checks.
    """
    rows = load_datalist(manifest, slice_mode=slice_mode, central_slices=central_slices)
    if label_column is None:
        return rows
    where = f"monitor manifest {manifest}" if not isinstance(manifest, pd.DataFrame) else "monitor manifest frame"
    if not rows:
        raise ValueError(f"{where} (config id '{manifest_id}') has no rows to read label column {label_column!r} from")
    if not any(label_column in row for row in rows):
        columns = sorted({str(k) for row in rows for k in row if k not in ("image", "source", "row", "manifest")})
        raise ValueError(
            f"{where} (config id '{manifest_id}') has no label column {label_column!r} (config id '{label_id}'); "
            f"its columns: {columns}. Set '{label_id}' to one of them, or to null for the modality x anatomy class."
        )
    empty = [row.get("row", i) for i, row in enumerate(rows) if _empty(row.get(label_column))]
    if empty:
        more = f" (+{len(empty) - _MAX_SHOWN} more)" if len(empty) > _MAX_SHOWN else ""
        raise ValueError(
            f"{where} (config id '{manifest_id}'): label column {label_column!r} (config id '{label_id}') is empty in "
            f"row(s) {empty[:_MAX_SHOWN]}{more}; give every row a class, or leave those rows out of the manifest."
        )
    return rows

