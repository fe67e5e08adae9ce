"""Manifest builder for a flat folder of images without labels (e.g. BCCD blood-smear photographs).

Expected raw layout::

    <root>/<image>          e.g. bccd_blood/BloodImage_00000.jpg ...

Images are PNG / JPEG / TIFF / BMP / GIF (:data:`data_manifests._common.IMAGE_SUFFIXES`), the suffix in any case.
One row per image: ``modality`` / ``anatomy`` from the required options of the same names (written raw; the
vocabulary maps them when labels are built), ``case_id`` = file stem or the group of ``case_id_regex`` searched in
the file name. Other files at the root (a licence, a README) are not read; hidden entries are ignored. A sub-folder,
a broken symbolic link, a root without a single image, a missing modality or anatomy and a case id pattern that does
not match a file name are errors naming the folder, file or option.

Split: ``split`` (one value for every row, default ``train``) or ``split_fractions`` + ``seed`` (a seeded random
split per ``case_id``, :func:`data_manifests.assign_splits`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ._common import (
    IMAGE_SUFFIXES,
    as_frame,
    case_id_from_name,
    compile_case_id_regex,
    describe,
    logger,
    preview,
    refuse_broken_links,
    require_dir,
)
from .splits import apply_split_options

__all__ = ["build", "list_images"]


def list_images(folder: Path, what: str) -> tuple[list[Path], list[Path]]:
    """The images and the other files directly inside ``folder`` (hidden entries ignored), sorted by name.

    Args:
        folder: the flat image folder.
        what: layout name and folder for messages (``"BCCD root /data/bccd"``).

    Returns:
        ``(images, other files)``.

    Raises:
        ValueError: for a sub-folder, a broken symbolic link, or no image (naming the expected and the found entries).
    """
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    refuse_broken_links([p for p in entries if not p.exists()], what)
    folders = [p.name for p in entries if p.is_dir()]
    expected = "image files (" + ", ".join(IMAGE_SUFFIXES) + ", any case) directly inside it"
    if folders:
        raise ValueError(f"{what}: unexpected sub-folder(s) {preview(folders)}; expected {expected}.")
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise ValueError(f"{what}: no images; expected {expected}; found {describe(folder)}.")
    return images, [p for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]


def build(
    root: str | Path,
    dataset: str | None = None,
    modality: str | None = None,
    anatomy: str | None = None,
    case_id_regex: str | None = None,
    split: str | None = None,
    split_fractions: Mapping[str, float] | Sequence[str] | str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Build the manifest of a flat image folder.

    Args:
        root: the folder holding the images.
        dataset: value of the ``dataset`` column (default: the name of ``root``).
        modality: raw modality of every image (required; e.g. ``SM`` for blood smears).
        anatomy: raw anatomy of every image (required; e.g. ``blood``).
        case_id_regex: regular expression with one group, searched in each file name, giving the case id (default:
            the file stem).
        split: value of the ``split`` column for every row (default ``train``).
        split_fractions: seeded random split per case instead, e.g. ``"train=0.8,test=0.2"``.
        seed: seed of ``split_fractions``.

    Returns:
        Manifest frame, rows ordered by file name.

    Raises:
        FileNotFoundError: if ``root`` is missing.
        ValueError: for a missing ``modality`` / ``anatomy``, a sub-folder, a broken link, no image, an invalid or
            non-matching ``case_id_regex``, or invalid split options.

    Example:
        >>> frame = build("bccd_blood", modality="SM", anatomy="blood")  # doctest: +SKIP
    """
    folder = require_dir(root, "image folder")
    what = f"image folder {folder}"
    missing = [name for name, value in (("modality", modality), ("anatomy", anatomy))
               if value is None or not str(value).strip()]
    if missing:
        raise ValueError(f"{what}: option(s) {missing} required (one value for every image), e.g. --opt modality=SM "
                         "--opt anatomy=blood.")
    regex = compile_case_id_regex(case_id_regex, what)
    images, others = list_images(folder, what)
    if others:
        logger.info("%s: %d non-image file(s) are not read: %s", what, len(others), preview([p.name for p in others]))
    rows = [{"path": str(image), "modality": str(modality), "anatomy": str(anatomy), "split": None,
             "dataset": dataset or folder.name, "case_id": case_id_from_name(image, regex)} for image in images]
    return apply_split_options(as_frame(rows, what), split, split_fractions, seed, what)
