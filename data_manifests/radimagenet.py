"""Manifest builder for RadImageNet (Mei et al. 2022).

Expected raw layout (the ``radiology_ai`` folder of the release)::

    radiology_ai/<modality>/<anatomy>/<class>/<image>.png
    e.g. radiology_ai/CT/lung/normal/lung-normal000032.png, radiology_ai/MR/knee/..., radiology_ai/US/...

Modality folders are ``CT``, ``MR``, ``US``; anatomy folders are short names (``abd``, ``lung``, ``brain``, ``knee``,
``spine``, ``shoulder``, ``hip``, ``af`` (ankle/foot), ``thyroid``...). Both are written raw: the vocabulary maps them
(``abd`` -> abdomen, ``lung`` -> chest, ``af`` -> ankle); an anatomy folder the vocabulary does not know raises a
ValueError listing the known values when labels are built. One row per image: ``label`` = class folder,
``case_id`` = file stem (the release has no patient ids). Any file at another depth or with a non-image suffix is an
error listing it; so are a top-level folder other than the modality folders (:data:`RADIMAGENET_MODALITIES`) and a
tree without a single image (both naming the expected and the found folders). Linked folders are followed (a tree
of symbolic links to the release reads like a copy; see :func:`data_manifests._common.walk_files`); hidden entries
(``.DS_Store``) are not read.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import IMAGE_SUFFIXES, as_frame, check_folders, describe, preview, require_dir, walk_files

__all__ = ["RADIMAGENET_MODALITIES", "build"]

#: The modality folders of the release.
RADIMAGENET_MODALITIES: tuple[str, ...] = ("CT", "MR", "US")


def build(root: str | Path, dataset: str = "radimagenet", split: str = "train") -> pd.DataFrame:
    """Build the RadImageNet manifest.

    Args:
        root: the ``radiology_ai`` folder.
        dataset: value of the ``dataset`` column.
        split: value of the ``split`` column.

    Returns:
        Manifest frame with a ``label`` column.

    Raises:
        FileNotFoundError: if ``root`` is not a folder.
        ValueError: for a top-level folder other than CT/MR/US, files outside ``<modality>/<anatomy>/<class>/`` or
            with a non-image suffix, or no image at all.
    """
    folder = require_dir(root, "RadImageNet root")
    check_folders(folder, RADIMAGENET_MODALITIES, "RadImageNet root", required=())
    rows, misplaced = [], []
    for file in walk_files(folder, "RadImageNet root"):
        parts = file.relative_to(folder).parts
        if len(parts) != 4 or file.suffix.lower() not in IMAGE_SUFFIXES:
            misplaced.append(file.relative_to(folder).as_posix())
            continue
        modality, anatomy, label, _ = parts
        rows.append(
            {
                "path": str(file),
                "modality": modality,
                "anatomy": anatomy,
                "split": split,
                "dataset": dataset,
                "case_id": file.stem,
                "label": label,
            }
        )
    if misplaced:
        raise ValueError(
            f"RadImageNet root {folder}: {len(misplaced)} file(s) are not images at <modality>/<anatomy>/<class>/: "
            f"{preview(misplaced)}."
        )
    if not rows:
        raise ValueError(f"RadImageNet root {folder}: no images; expected <modality>/<anatomy>/<class>/<image>.png "
                         f"with modality folders {list(RADIMAGENET_MODALITIES)}; found {describe(folder)}.")
    return as_frame(rows, f"RadImageNet root {folder}")
