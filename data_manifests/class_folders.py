"""Manifest builder for a classification dataset stored as one folder per class.

Expected raw layout::

    <root>/<class>/<image>          e.g. isic/melanoma/ISIC_0000002.JPG, isic/nevus/ISIC_0000000.jpg
    <root>/<class>/**/<image>       with ``recursive=True`` (e.g. <class>/<patient>/<image>)

Images are PNG / JPEG / TIFF / BMP / GIF (:data:`data_manifests._common.IMAGE_SUFFIXES`), the suffix in any case
(``.PNG``, ``.Jpg``). One row per image: ``label`` = class folder name, ``case_id`` = file stem or the group of
``case_id_regex`` searched in the file name (``case_id_regex='^(P\\d+)_'``: ``P0012_left.png`` -> ``P0012``),
``modality`` / ``anatomy`` from the options ``modality`` / ``anatomy`` (one value for every class) or per class from
``classes`` (``{"melanoma": {"modality": "DMS", "anatomy": "skin"}, ...}``, a mapping or its JSON text; a class entry
overrides the one-for-all values). Values are written raw; the vocabulary maps them when labels are built.

The layout is checked: every class folder holds image files only (sub-folders only with ``recursive=True``) and at
least one image; with ``classes`` the class folders are exactly its keys (a missing one is a ``FileNotFoundError``, an
unlisted one a ``ValueError``, both naming the expected and the found folders). A file with another suffix, a class
without a modality or an anatomy, a case id pattern that does not match a file name, and a broken symbolic link are
errors naming the file, class or option. Files at the root (a README, a label CSV) are not read; hidden entries
are ignored. Linked class folders are followed (see :func:`data_manifests._common.walk_files`).

Each real image file is listed once, under the class whose folder holds it. A link inside a class folder that leads
back into the tree (to the root, an ancestor of it, or into another class's folder: ``<class>/loop -> ..``) is
skipped with a warning naming the link, with or without ``recursive``; a second link to an image already listed in
the same class is skipped with a warning too. Two class folders that are (or hold) one real folder, and one image
outside the tree linked from two classes, are errors naming both paths: the class would be ambiguous.

Split: ``split`` (one value for every row, default ``train``) or ``split_fractions`` + ``seed``: a seeded random
split per ``case_id`` (:func:`data_manifests.assign_splits`; the same seed gives the same split).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from ._common import (
    IMAGE_SUFFIXES,
    as_frame,
    case_id_from_name,
    check_files,
    check_folders,
    compile_case_id_regex,
    describe,
    logger,
    preview,
    refuse_broken_links,
    refuse_other_types,
    require_dir,
    skip_links_out,
    walk_files,
)
from .splits import apply_split_options

__all__ = ["CLASS_METADATA_KEYS", "build"]

#: keys a per-class entry of the ``classes`` option may set.
CLASS_METADATA_KEYS: tuple[str, ...] = ("modality", "anatomy")


def _class_table(
    classes: Mapping[str, Any] | Sequence[str] | str | None, what: str
) -> dict[str, dict[str, str]] | None:
    """The ``classes`` option as ``{class: {"modality": ..., "anatomy": ...}}`` (entries may be empty), or ``None``.

    Raises:
        ValueError: naming the option for JSON that does not parse, an entry that is not a mapping, or a key outside
            :data:`CLASS_METADATA_KEYS`.
    """
    if classes is None:
        return None
    if isinstance(classes, str):
        text = classes.strip()
        if text.startswith(("{", "[")):
            try:
                classes = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{what}: option classes is not valid JSON ({err}): {text!r}.") from err
        else:
            classes = [text]
    if not isinstance(classes, Mapping):
        names = [str(c) for c in classes]
        return {name: {} for name in names}
    table: dict[str, dict[str, str]] = {}
    for name, entry in classes.items():
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise ValueError(f"{what}: option classes, class {name!r}: expected a mapping with keys "
                             f"{list(CLASS_METADATA_KEYS)}, got {entry!r}.")
        unknown = [k for k in entry if k not in CLASS_METADATA_KEYS]
        if unknown:
            raise ValueError(f"{what}: option classes, class {name!r}: unknown key(s) {unknown}; allowed "
                             f"{list(CLASS_METADATA_KEYS)}.")
        table[str(name)] = {str(k): str(v) for k, v in entry.items() if v is not None and str(v).strip()}
    return table


def _images(class_dir: Path, recursive: bool, fence: Sequence[str]) -> list[Path]:
    """The images of one class folder (any suffix case); other files, no image and broken links are refused.

    Links that lead into ``fence`` (the root and the other class folders, real paths) are skipped with a warning.
    """
    expected = "image files (" + ", ".join(IMAGE_SUFFIXES) + ", any case)"
    if not recursive:
        files = check_files(class_dir, IMAGE_SUFFIXES, "class folder", expected + " (sub-folders: recursive=true)")
        return skip_links_out(files, class_dir, fence, f"class folder {class_dir}")
    files = walk_files(class_dir, "class folder", fence=fence)
    names = [f.relative_to(class_dir).as_posix() for f in files]
    refuse_other_types(class_dir, files, names, IMAGE_SUFFIXES, "class folder", expected)
    return files


def _real_class_folders(folder: Path, names: Sequence[str], what: str) -> dict[str, str]:
    """``{class: real path of its folder}``; two class folders that are, or hold, one real folder raise."""
    reals = {name: os.path.realpath(folder / name) for name in names}
    for name, other in combinations(sorted(reals), 2):
        real, other_real = reals[name], reals[other]
        if os.path.commonpath([real, other_real]) in (real, other_real):
            raise ValueError(f"{what}: class folders {folder / name} and {folder / other} are, or hold, one real "
                             f"folder ({real} and {other_real}); each image must belong to one class: remove the "
                             "link.")
    return reals


def build(
    root: str | Path,
    dataset: str | None = None,
    modality: str | None = None,
    anatomy: str | None = None,
    classes: Mapping[str, Any] | Sequence[str] | str | None = None,
    case_id_regex: str | None = None,
    recursive: bool = False,
    split: str | None = None,
    split_fractions: Mapping[str, float] | Sequence[str] | str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Build the manifest of a class-per-folder dataset.

    Args:
        root: folder holding one sub-folder per class.
        dataset: value of the ``dataset`` column (default: the name of ``root``).
        modality: raw modality of every image (e.g. ``DMS``, ``OP``, ``ES``), unless ``classes`` sets it per class.
        anatomy: raw anatomy of every image (e.g. ``skin``, ``retina``), unless ``classes`` sets it per class.
        classes: the class folders: names (a list, or ``"a,b"`` from the command line) or a mapping
            ``class -> {"modality": ..., "anatomy": ...}`` (or its JSON text); default: every folder at the root.
        case_id_regex: regular expression with one group, searched in each file name, giving the case id (default:
            the file stem).
        recursive: read images at any depth below each class folder (default: directly inside it only).
        split: value of the ``split`` column for every row (default ``train``).
        split_fractions: seeded random split per case instead, e.g. ``{"train": 0.8, "test": 0.2}`` or
            ``"train=0.8,test=0.2"``.
        seed: seed of ``split_fractions``.

    Returns:
        Manifest frame with a ``label`` column, rows ordered by class folder then path.

    Raises:
        FileNotFoundError: if ``root`` or a class of ``classes`` is missing (naming the expected and found folders).
        ValueError: for a folder not in ``classes``, a class folder with a sub-folder (without ``recursive``), a
            non-image file or no image, a class without modality or anatomy, an invalid or non-matching
            ``case_id_regex``, a broken link, invalid split options, a root without class folders, two class folders
            that are (or hold) one real folder, or one image linked from two classes.

    Example:
        >>> frame = build("isic", modality="DMS", anatomy="skin", split_fractions="train=0.8,test=0.2")  # doctest:+SKIP
        >>> frame = build("fundus", classes={"dr": {"modality": "OP", "anatomy": "retina"}})  # doctest: +SKIP
    """
    folder = require_dir(root, "class-folder root")
    what = f"class-folder root {folder}"
    table = _class_table(classes, what)
    regex = compile_case_id_regex(case_id_regex, what)
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    refuse_broken_links([p for p in entries if not p.exists()], what)
    loose = [p.name for p in entries if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise ValueError(f"{what}: {len(loose)} image(s) outside any class folder: {preview(loose)}; expected "
                         "<class>/<image> (the class is the folder name).")
    if table is not None:
        if not table:
            raise ValueError(f"{what}: option classes is empty; found {describe(folder)}.")
        names = check_folders(folder, tuple(table), "class-folder root")
    else:
        names = [p.name for p in entries if p.is_dir()]
        if not names:
            raise ValueError(f"{what}: no class folders; expected <class>/<image>; found {describe(folder)}.")
    others = [p.name for p in entries if not p.is_dir()]
    if others:
        logger.info("%s: %d file(s) at the root are not read: %s", what, len(others), preview(others))
    reals = _real_class_folders(folder, names, what)
    listed: dict[str, tuple[str, Path]] = {}  # real image path -> (class, path as listed)
    rows = []
    for name in sorted(names):
        entry = (table or {}).get(name, {})
        values = {"modality": entry.get("modality", modality), "anatomy": entry.get("anatomy", anatomy)}
        missing = [key for key, value in values.items() if value is None or not str(value).strip()]
        if missing:
            raise ValueError(f"{what}: class {name!r} has no {' and no '.join(missing)}; pass the option(s) "
                             f"{missing} (one value for every class) or set them for this class in option classes, "
                             f"e.g. classes='{{\"{name}\": {{\"modality\": \"DMS\", \"anatomy\": \"skin\"}}}}'.")
        fence = [real for other, real in reals.items() if other != name] + [str(folder)]  # most specific first
        images = _images(folder / name, recursive, fence)
        kept: set[Path] = set()
        for image in sorted(images, key=lambda p: (p.is_symlink(), str(p))):  # a file itself before links to it
            real = os.path.realpath(image)
            if real in listed:
                first_class, first = listed[real]
                if first_class != name:
                    raise ValueError(f"{what}: {first} (class {first_class!r}) and {image} (class {name!r}) are one "
                                     f"image ({real}); each image must belong to one class: remove one link.")
                logger.warning("%s: %s is a link to %s, already listed as %s; it is listed once.", what, image,
                               real, first)
                continue
            listed[real] = (name, image)
            kept.add(image)
        for image in (i for i in images if i in kept):
            rows.append({"path": str(image), "modality": str(values["modality"]), "anatomy": str(values["anatomy"]),
                         "split": None, "dataset": dataset or folder.name,
                         "case_id": case_id_from_name(image, regex), "label": name})
    frame = as_frame(rows, what)
    return apply_split_options(frame, split, split_fractions, seed, what)
