"""Manifest builder for JSRT chest radiographs with the SCR segmentation masks (van Ginneken et al. 2006).

Expected raw layout (the 1024 x 1024 PNG conversion used by the shared copy)::

    jsrt_scr/images_1024/JPCLN001.png ... JPCNN093.png
    jsrt_scr/masks_1024/{heart,left_lung,right_lung,left_clavicle,right_clavicle}/JPCLN001.png ...

Masks have the same file names as the images. One row per image: ``modality`` ``XR``, ``anatomy`` ``chest``,
``mask_<structure>`` = mask path, ``nodule`` = 1 for ``JPCLN*`` (lung nodule) and 0 for ``JPCNN*``,
``case_id`` = file stem. The layout is checked: the root holds ``images_1024/`` and (when masks are requested)
``masks_1024/`` and nothing else, ``masks_1024/`` holds structure folders of :data:`JSRT_STRUCTURES` only, and
``images_1024/`` holds image files only, at least one; anything else is refused naming the expected and the found
entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ._common import IMAGE_SUFFIXES, as_frame, check_files, check_folders, check_option, require_dir

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
        FileNotFoundError: if a folder is missing (naming the expected and found folders), or a mask file is missing
            and ``allow_missing_masks`` is False.
        ValueError: for an unknown structure, an undocumented folder, a sub-folder / non-image file / no image in
            ``images_1024/``, or an image name with neither the ``JPCLN`` nor the ``JPCNN`` prefix.
    """
    folder = require_dir(root, "JSRT root")
    structures = check_option("structures", structures, JSRT_STRUCTURES, f"JSRT root {folder}", allow_empty=True)
    check_folders(folder, ("images_1024", "masks_1024"), "JSRT root",
                  required=("images_1024", "masks_1024") if structures else ("images_1024",))
    if (folder / "masks_1024").is_dir():
        check_folders(folder / "masks_1024", JSRT_STRUCTURES, "JSRT masks", required=structures)
    images_dir = folder / "images_1024"
    mask_dirs = {s: folder / "masks_1024" / s for s in structures}
    images = check_files(images_dir, IMAGE_SUFFIXES, "JSRT images", "JPCLNnnn.png / JPCNNnnn.png")
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
