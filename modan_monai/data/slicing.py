"""Expand datalist rows that point at 3D volumes into 2D slice rows."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import optional_import

from .readers import _optional_int, _suffix, is_dicom_file, row_context

nib, _HAS_NIB = optional_import("nibabel")
pydicom, _HAS_PYDICOM = optional_import("pydicom")

__all__ = ["SLICE_MODES", "expand_volume_slices", "volume_num_slices"]

SLICE_MODES: tuple[str, ...] = ("all", "central", "random")

logger = logging.getLogger(__name__)


def volume_num_slices(path: str | Path) -> int | None:
    """Number of 2D slices of a volume file, read from its header only.

    MRNet ``.npy`` -> first axis (memory-mapped); NIfTI -> last spatial axis of a 3D image
    (nibabel header); DICOM -> ``NumberOfFrames`` of a multi-frame file. Other files and 2D
    images -> ``None``.

    Args:
        path: image file.

    Returns:
        the number of slices, or ``None`` if the file is not a volume.

    Raises:
        ValueError: an ``.npy`` that is not 3D, or a NIfTI with more than 3 non-singleton axes.
    """
    path = str(path)
    suffix = _suffix(path)
    if suffix == ".npy":
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        if len(shape) != 3:
            raise ValueError(f"{path}: .npy is read as an MRNet-style volume (slices, H, W), got shape {shape}")
        return int(shape[0])
    if suffix in (".nii", ".nii.gz"):
        shape = tuple(int(s) for s in nib.load(path).header.get_data_shape())
        while len(shape) > 2 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) > 3:
            raise ValueError(f"{path}: NIfTI image of shape {shape}; only 2D images and 3D volumes are supported")
        return shape[2] if len(shape) == 3 else None
    if suffix in (".dcm", ".dicom") or (suffix == "" and is_dicom_file(path)):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return frames if frames > 1 else None
    return None


def expand_volume_slices(
    datalist: Sequence[Mapping[str, Any]],
    mode: str = "all",
    k: int = 1,
    image_key: str = "image",
) -> list[dict]:
    """Turn rows that point at a whole 3D volume (``index`` empty) into 2D slice rows.

    Volumes are MRNet ``.npy`` arrays ``(slices, H, W)``, 3D NIfTI (sliced along the last axis)
    and multi-frame DICOM. Rows with an ``index`` and rows of 2D files are copied unchanged.

    Args:
        datalist: rows as produced by ``manifest_to_datalist``.
        mode: ``"all"`` -> one row per slice; ``"central"`` -> the ``k`` central slices
            (all slices when ``k`` >= the number of slices); ``"random"`` -> one row with
            ``index=None`` and ``num_slices=n`` for :class:`modan_monai.transforms.RandSliced`.
        k: number of central slices for ``mode="central"``.
        image_key: key holding the file path.

    Returns:
        a new list of dictionaries; every expanded row also carries ``num_slices``. When some rows are volumes,
        the counts (volume rows, slice rows, rows per split) are logged at INFO.

    Raises:
        ValueError: unknown ``mode``, ``k`` < 1, or an unreadable volume (names the manifest row).

    Example:
        >>> rows = expand_volume_slices([{"image": "knee.npy", "index": None}], mode="central", k=3)  # doctest: +SKIP
        >>> [r["index"] for r in rows]  # doctest: +SKIP
        [14, 15, 16]
    """
    if mode not in SLICE_MODES:
        raise ValueError(f"mode must be one of {SLICE_MODES}, got {mode!r}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out: list[dict] = []
    volumes = slices = 0
    for row in datalist:
        ctx = row_context(row)
        index = _optional_int(row.get("index"), f"{ctx}'index'")
        path = row.get(image_key, row.get("path"))
        if index is not None or path is None:
            out.append(dict(row))
            continue
        if not Path(str(path)).is_file():
            raise FileNotFoundError(f"{ctx}file not found: {path}")
        try:
            n = volume_num_slices(path)
        except Exception as e:
            raise ValueError(f"{ctx}{path}: cannot read volume shape: {e}") from e
        if n is None:
            out.append(dict(row))
            continue
        volumes += 1
        if mode == "random":
            out.append({**row, "index": None, "num_slices": n})
            slices += 1
            continue
        if mode == "all":
            indices = range(n)
        else:
            kk = min(int(k), n)
            start = (n - kk) // 2
            indices = range(start, start + kk)
        out.extend({**row, "index": i, "num_slices": n} for i in indices)
        slices += len(indices)
    if volumes:
        manifests = sorted({str(r["manifest"]) for r in datalist if r.get("manifest")})
        origin = f"manifest {', '.join(manifests)}" if manifests else "datalist"
        splits: dict[str, int] = {}
        for r in out:
            splits[str(r.get("split"))] = splits.get(str(r.get("split")), 0) + 1
        per_split = ", ".join(f"{s} {c}" for s, c in splits.items())
        what = "row(s), slice drawn at load time" if mode == "random" else "slice row(s)"
        logger.info("%s: %d volume row(s) expanded into %d %s (slice mode %r); datalist of %d row(s) (%s).",
                    origin, volumes, slices, what, mode, len(out), per_split)
    return out
