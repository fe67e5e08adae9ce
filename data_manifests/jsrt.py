"""Manifest builder for JSRT chest radiographs with the SCR segmentation masks (van Ginneken et al. 2006).

Expected raw layout (the 1024 x 1024 PNG conversion used by the shared copy)::

    jsrt_scr/images_1024/JPCLN001.png ... JPCNN093.png
    jsrt_scr/masks_1024/{heart,left_lung,right_lung,left_clavicle,right_clavicle}/JPCLN001.png ...

Masks have the same file names as the images. One row per image: ``modality`` ``XR``, ``anatomy`` ``chest``,
``mask_<structure>`` = mask path, ``nodule`` = 1 for ``JPCLN*`` (lung nodule) and 0 for ``JPCNN*``,
``case_id`` = file stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ._common import IMAGE_SUFFIXES, as_frame, preview, require_dir

__all__ = ["JSRT_STRUCTURES", "build"]

JSRT_STRUCTURES: tuple[str, ...] = ("heart", "left_lung", "right_lung", "left_clavicle", "right_clavicle")
_NODULE_PREFIX = {"JPCLN": 1, "JPCNN": 0}


def build(
    root: str | Path,
    dataset: str = "jsrt",
    split: str = "train",
    structures: Sequence[str] = JSRT_STRUCTURES,
    allow_missing_masks: bool = False,
) -> pd.DataFrame:
    """Build the JSRT/SCR manifest.

    Args:
        root: folder holding ``images_1024`` and ``masks_1024``.
        dataset: value of the ``dataset`` column.
        split: value of the ``split`` column.
        structures: mask folders to attach as ``mask_<structure>`` columns (empty tuple: none).
        allow_missing_masks: leave a missing mask cell empty instead of raising.

    Returns:
        Manifest frame with ``nodule`` and ``mask_*`` columns.

    Raises:
        FileNotFoundError: if a folder is missing, or a mask file is missing and ``allow_missing_masks`` is False.
        ValueError: if an image name has neither the ``JPCLN`` nor the ``JPCNN`` prefix.
    """
    folder = require_dir(root, "JSRT root")
    images_dir = require_dir(folder / "images_1024", "JSRT images")
    mask_dirs = {s: require_dir(folder / "masks_1024" / s, f"JSRT {s} masks") for s in structures}
    images = sorted(p for p in images_dir.iterdir() if p.is_file())
    others = [p.name for p in images if p.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        raise ValueError(f"JSRT images folder {images_dir}: unexpected non-image file(s): {preview(others)}.")
    rows = []
    for image in images:
        nodule = _NODULE_PREFIX.get(image.name[:5].upper())
        if nodule is None:
            raise ValueError(f"JSRT image {image}: name must start with JPCLN (nodule) or JPCNN (no nodule).")
        row = {
            "path": str(image),
            "modality": "XR",
            "anatomy": "chest",
            "split": split,
            "dataset": dataset,
            "case_id": image.stem,
            "nodule": nodule,
        }
        for structure, mask_dir in mask_dirs.items():
            mask = mask_dir / image.name
            if not mask.is_file():
                if not allow_missing_masks:
                    raise FileNotFoundError(f"JSRT image {image}: {structure} mask not found: {mask} "
                                            "(pass allow_missing_masks=True to leave it empty).")
                mask = None
            row[f"mask_{structure}"] = None if mask is None else str(mask)
        rows.append(row)
    return as_frame(rows, f"JSRT root {folder}")
