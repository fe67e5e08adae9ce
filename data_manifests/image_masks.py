"""Manifest builder for a segmentation dataset: an image folder plus mask files matched to the images by file stem.

Expected raw layouts (folder names are options: ``images``, default ``images``; ``masks``, default ``masks``)::

    <root>/images/<stem>.<ext>
    <root>/masks/<structure>/<stem>.<ext>  or  <stem><mask_suffix>.<ext>   one folder per structure
    <root>/masks/<stem>.<ext>              or  <stem><mask_suffix>.<ext>   one structure (flat mask folder)
    <root>/images/<stem><mask_suffix>.<ext>   beside the images: pass masks=images (one structure)

e.g. ``kvasir_seg/images/cju0qkwl35piu0993l0dewei2.jpg`` with ``kvasir_seg/masks/cju0qkwl35piu0993l0dewei2.jpg``,
``scr/masks/heart/JPCLN001.png``, or ``busi_like/images/case1.png`` with ``busi_like/images/case1_mask.png``.
``mask_suffix`` defaults to ``_mask`` (``--opt mask_suffix=_segmentation`` for ISIC); it is matched exactly, the
file extension in any case (``.PNG``, ``.Gif``, ``.TIFF``). Images and masks are PNG / JPEG / TIFF / BMP / GIF
(:data:`data_manifests._common.IMAGE_SUFFIXES`); a mask may have another extension than its image
(``case1.jpg`` with ``case1_mask.gif``).

One row per image: ``mask_<structure>`` = mask path, the column the segmentation data reads
(:class:`modan_monai.data.segmentation.LoadStructureMasksd`, ``bundles/segment``; the same columns as
:mod:`data_manifests.jsrt`). The structures are the folder names under ``masks/`` (``structures=`` a subset of
them), or for a flat or beside layout the one name ``structures=<name>`` (default ``foreground``: column
``mask_foreground``). ``case_id`` = image stem, or the group of ``case_id_regex`` searched in the image file name;
``modality`` / ``anatomy`` from the required options of the same names (raw values, mapped by the vocabulary).

The layout is checked and nothing is left out in silence: the root holds the image and mask folders and no other
folder; they hold image files only (a mask folder either only structure folders or only mask files); an image
without a mask for a structure, a mask without an image, two masks of one image and structure, two images of one
stem, and a broken symbolic link are each a ``ValueError`` naming the files (a missing mask is allowed with
``allow_missing_masks=True``: the cell stays empty and a warning counts them). Files at the root (a README, a CSV)
are not read; hidden entries are ignored; linked folders are followed.

Mask names that are not the image stem (plus a suffix) are stated with ``mask_names``: one entry per structure,
``<mask folder>/<name template>``, the template holding ``{case_id}`` (the image's case id, see ``case_id_regex``)
and/or ``{stem}`` (the image stem); the mask file is the filled template plus any image extension (any case), or
exactly the extension the template ends with. The mask folders lie directly under the root, beside the image folder
(the root holds those folders only), e.g. DRIVE::

    DRIVE/training/images/21_training.tif
    DRIVE/training/1st_manual/21_manual1.gif        vessels
    DRIVE/training/mask/21_training_mask.gif        field of view

    python scripts/build_manifest.py image_masks DRIVE/training -o drive.csv --opt modality=OP \\
        --opt anatomy=retina --opt 'case_id_regex=^([0-9]+)_' \\
        --opt 'mask_names={"vessel": "1st_manual/{case_id}_manual1", "fov": "mask/{stem}_mask"}'

gives ``case_id`` ``21``, ``mask_vessel`` and ``mask_fov``. The same checks hold: every file of a mask folder must be
the mask of an image (else a ``ValueError`` naming it and the template), an image without its mask is an error
(unless ``allow_missing_masks``), and two images whose names give one mask name (e.g. ``{case_id}`` shared by two
images of a case) are an error naming both. ``mask_names`` replaces ``masks``, ``mask_suffix`` and ``structures``
(passing them too is an error).

Split: ``split`` (one value for every row, default ``train``) or ``split_fractions`` + ``seed``: a seeded random
split per ``case_id`` (:func:`data_manifests.assign_splits`; the same seed gives the same split).
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

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
    require_dir,
)
from .splits import apply_split_options

__all__ = ["DEFAULT_STRUCTURE", "MASK_COLUMN_PREFIX", "MASK_NAME_FIELDS", "build"]

#: structure name of a flat or beside mask layout when ``structures`` is not given.
DEFAULT_STRUCTURE = "foreground"
#: prefix of the manifest mask columns, as read by ``modan_monai.data.segmentation``.
MASK_COLUMN_PREFIX = "mask_"

#: placeholders of a ``mask_names`` template: the image's case id and the image file stem.
MASK_NAME_FIELDS: tuple[str, ...] = ("case_id", "stem")

_IMAGE_TEXT = "image files (" + ", ".join(IMAGE_SUFFIXES) + ", any case)"


def _stem_of_mask(mask: Path, mask_suffix: str) -> str:
    """The image stem a mask file belongs to: its stem without ``mask_suffix`` (when it ends with it)."""
    stem = mask.stem
    return stem[: -len(mask_suffix)] if mask_suffix and stem.endswith(mask_suffix) and stem != mask_suffix else stem


def _visible(folder: Path) -> list[Path]:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    refuse_broken_links([p for p in entries if not p.exists()], f"mask folder {folder}")
    return entries


def _match_masks(
    masks: Sequence[Path], images: Mapping[str, Path], mask_suffix: str, structure: str, where: Path
) -> dict[str, Path]:
    """``{image stem: mask}`` for one structure; a mask without an image or two masks of one image raise."""
    found: dict[str, Path] = {}
    orphans: list[str] = []
    for mask in masks:
        stem = _stem_of_mask(mask, mask_suffix)
        if stem not in images:
            orphans.append(mask.name)
            continue
        if stem in found:
            raise ValueError(f"structure {structure!r}: two masks for image {images[stem]}: {found[stem]} and {mask} "
                             "(keep one).")
        found[stem] = mask
    if orphans:
        raise ValueError(f"mask folder {where} (structure {structure!r}): {len(orphans)} mask(s) without an image in "
                         f"the image folder: {preview(orphans)}; a mask is named <image stem>.<ext> or "
                         f"<image stem>{mask_suffix}.<ext>.")
    return found


class _MaskName:
    """One ``mask_names`` entry: ``<folder>/<template>``, filled per image and compared with the mask files."""

    def __init__(self, structure: str, value: object, images: str, what: str) -> None:
        option = f"{what}: option mask_names, structure {structure!r}"
        if not isinstance(value, str) or value.count("/") != 1:
            raise ValueError(f"{option}: expected '<mask folder>/<name template>', e.g. "
                             f"'1st_manual/{{case_id}}_manual1', got {value!r}.")
        self.structure, self.value = structure, value
        self.folder, self.template = value.split("/")
        if not self.folder.strip() or self.folder in (".", "..") or "\\" in value:
            raise ValueError(f"{option}: {value!r} must name a folder directly under the root, then the name.")
        if self.folder == images:
            raise ValueError(f"{option}: {value!r} names the image folder; masks beside the images are read with "
                             "masks=<image folder> and mask_suffix instead.")
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(self.template)
                      if name is not None]
        except ValueError as err:
            raise ValueError(f"{option}: template {self.template!r} does not parse ({err}); write {{case_id}} or "
                             "{stem}, and {{ }} for a literal brace.") from err
        bad = [name or "{}" for name, spec, conv in fields if name not in MASK_NAME_FIELDS or spec or conv]
        if bad or not fields:
            problem = f"unknown placeholder(s) {bad}" if bad else "no placeholder"
            raise ValueError(f"{option}: template {self.template!r} has {problem}; use {{case_id}} and/or {{stem}} "
                             "(e.g. '{case_id}_manual1'), without format specs.")
        suffix = Path(self.template).suffix.lower()
        self.suffix = suffix if suffix in IMAGE_SUFFIXES else ""

    def name(self, stem: str, case_id: str) -> str:
        """The mask name expected for an image: the filled template (its image extension in lower case)."""
        filled = self.template.format(case_id=case_id, stem=stem)
        return filled[: len(filled) - len(self.suffix)] + self.suffix

    def key(self, mask: Path) -> str:
        """A mask file as compared with :meth:`name`: its stem (and lower-case extension if the template has one)."""
        return mask.stem + mask.suffix.lower() if self.suffix else mask.stem

    def expected(self, root: Path, stem: str, case_id: str) -> str:
        """The expected mask path, for messages."""
        return f"{root / self.folder / self.name(stem, case_id)}{'' if self.suffix else '.<ext>'}"


def _mask_names(mask_names: Mapping[str, str] | str, images: str, what: str) -> dict[str, _MaskName]:
    """The ``mask_names`` option (a mapping or its JSON text) as ``{structure: _MaskName}``.

    Raises:
        ValueError: naming the option for JSON that does not parse, an empty mapping, or an invalid entry.
    """
    if isinstance(mask_names, str):
        try:
            mask_names = json.loads(mask_names)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what}: option mask_names is not valid JSON ({err}): {mask_names!r}.") from err
    if not isinstance(mask_names, Mapping) or not mask_names:
        raise ValueError(f"{what}: option mask_names must be a non-empty mapping structure -> '<mask folder>/<name "
                         f"template>', e.g. {{\"vessel\": \"1st_manual/{{case_id}}_manual1\"}}; got {mask_names!r}.")
    blank = [s for s in mask_names if not str(s).strip() or str(s) != str(s).strip()]
    if blank:
        raise ValueError(f"{what}: option mask_names: structure name(s) {blank} must be non-empty, without surrounding "
                         "spaces (each names a mask_<structure> column).")
    return {str(s): _MaskName(str(s), v, images, what) for s, v in mask_names.items()}


def _match_named_masks(
    names: Mapping[str, _MaskName], root: Path, by_stem: Mapping[str, Path], case_ids: Mapping[str, str]
) -> dict[str, dict[str, Path]]:
    """``{structure: {image stem: mask}}`` from ``mask_names``.

    Raises:
        ValueError: a mask no image names, two masks of one image, or two images naming one mask (naming the files
            and the template); a sub-folder, non-image file or no file in a mask folder.
    """
    files = {folder: check_files(root / folder, IMAGE_SUFFIXES, "mask folder", "the masks named by option "
                                 f"mask_names ({', '.join(n.value for n in names.values() if n.folder == folder)}), "
                                 f"{_IMAGE_TEXT}") for folder in dict.fromkeys(n.folder for n in names.values())}
    claimed: dict[Path, tuple[str, Path]] = {}  # mask -> (structure, image)
    matched: dict[str, dict[str, Path]] = {}
    for structure, entry in names.items():
        index: dict[str, list[Path]] = {}
        for mask in files[entry.folder]:
            index.setdefault(entry.key(mask), []).append(mask)
        matched[structure] = {}
        for stem, image in by_stem.items():
            found = index.get(entry.name(stem, case_ids[stem]), [])
            if len(found) > 1:
                raise ValueError(f"structure {structure!r}: two masks for image {image}: {found[0]} and {found[1]} "
                                 "(keep one).")
            if not found:
                continue
            if found[0] in claimed:
                other_structure, other = claimed[found[0]]
                raise ValueError(f"option mask_names: images {other} and {image} both name the mask {found[0]} "
                                 f"(structures {other_structure!r} / {structure!r}: "
                                 f"{names[other_structure].value!r} / {entry.value!r}); each mask belongs to one "
                                 "image and structure: use {stem}, or a case_id_regex that tells the images apart.")
            claimed[found[0]] = (structure, image)
            matched[structure][stem] = found[0]
    for folder, masks in files.items():
        orphans = [m.name for m in masks if m not in claimed]
        if orphans:
            templates = [n.value for n in names.values() if n.folder == folder]
            stem, image = next(iter(sorted(by_stem.items(), key=lambda kv: str(kv[1]))))
            example = names[next(s for s, n in names.items() if n.folder == folder)].name(stem, case_ids[stem])
            raise ValueError(f"mask folder {root / folder}: {len(orphans)} mask(s) without an image in the image "
                             f"folder: {preview(orphans)}; option mask_names names them {templates} (e.g. "
                             f"{example!r} for {image.name}).")
    return matched


def _structure_names(structures: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if structures is None:
        return None
    return (structures,) if isinstance(structures, str) else tuple(str(s) for s in structures)


def _suffix_layout(
    images_dir: Path, masks_dir: Path, beside: bool, mask_files: list[Path], chosen: tuple[str, ...] | None,
    mask_suffix: str, what: str
) -> dict[str, tuple[list[Path], Path]]:
    """``{structure: (mask files, folder)}`` of a mask layout matched by stem (per structure, flat or beside).

    Raises:
        FileNotFoundError: a requested structure folder is missing.
        ValueError: a mask folder mixing folders and files, several structures for a flat or beside layout, a
            sub-folder or non-image file in a mask folder.
    """
    layout: dict[str, tuple[list[Path], Path]] = {}  # structure -> (mask files, folder)
    if beside:
        names = chosen or (DEFAULT_STRUCTURE,)
        if len(names) != 1:
            raise ValueError(f"{what}: masks beside the images hold one structure; option structures names "
                             f"{list(names)}.")
        layout[names[0]] = (mask_files, images_dir)
    else:
        entries = _visible(masks_dir)
        dirs = [p for p in entries if p.is_dir()]
        if dirs and len(dirs) != len(entries):
            raise ValueError(f"mask folder {masks_dir}: holds both structure folders and files; expected either "
                             f"<structure>/<mask> folders only or mask files only; found {describe(masks_dir)}.")
        if dirs:
            found = [d.name for d in dirs]
            absent = [n for n in (chosen or ()) if n not in found]
            if absent:
                raise FileNotFoundError(f"mask folder {masks_dir}: structure folder(s) {absent} (option structures) "
                                        f"not found; found {describe(masks_dir)}.")
            read = list(chosen or found)
            unread = [n for n in found if n not in read]
            if unread:
                logger.info("mask folder %s: structure folder(s) %s not read (structures=%s).", masks_dir, unread,
                            list(read))
            for name in read:
                layout[name] = (check_files(masks_dir / name, IMAGE_SUFFIXES, "mask folder",
                                            f"<image stem>.<ext> or <image stem>{mask_suffix}.<ext> "
                                            f"{_IMAGE_TEXT}"), masks_dir / name)
        else:
            names = chosen or (DEFAULT_STRUCTURE,)
            if len(names) != 1:
                raise ValueError(f"{what}: a flat mask folder {masks_dir} holds one structure; option structures "
                                 f"names {list(names)} (use one folder per structure: {masks_dir.name}/<structure>/).")
            layout[names[0]] = (check_files(masks_dir, IMAGE_SUFFIXES, "mask folder",
                                            f"<image stem>.<ext> or <image stem>{mask_suffix}.<ext> {_IMAGE_TEXT}"),
                                masks_dir)
    return layout


def build(
    root: str | Path,
    modality: str | None = None,
    anatomy: str | None = None,
    dataset: str | None = None,
    images: str = "images",
    masks: str | None = None,
    mask_suffix: str | None = None,
    structures: Sequence[str] | str | None = None,
    case_id_regex: str | None = None,
    mask_names: Mapping[str, str] | str | None = None,
    allow_missing_masks: bool = False,
    split: str | None = None,
    split_fractions: Mapping[str, float] | Sequence[str] | str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Build the manifest of an image folder with mask files, one ``mask_<structure>`` column per structure.

    Args:
        root: folder holding the image and mask folders.
        modality: raw modality of every image (required; e.g. ``ES``, ``DMS``, ``XR``).
        anatomy: raw anatomy of every image (required; e.g. ``gastrointestinal``, ``skin``, ``chest``).
        dataset: value of the ``dataset`` column (default: the name of ``root``).
        images: name of the image folder under ``root``.
        masks: name of the mask folder under ``root`` (default ``masks``); the same as ``images`` for masks beside
            the images.
        mask_suffix: end of a mask's stem after the image stem (default ``_mask``: ``case1_mask.png``); also
            optional in a mask folder, where ``case1.png`` is a mask of ``case1`` too. Must not be empty for masks
            beside the images.
        structures: per-structure layout: the structure folders to read (default all; the others are logged and
            not read); flat or beside layout: the one structure name (default :data:`DEFAULT_STRUCTURE`).
        case_id_regex: regular expression with one group, searched in each image file name, giving the case id
            (default: the image stem).
        mask_names: structure -> ``"<mask folder>/<name template>"`` with ``{case_id}`` / ``{stem}`` (a mapping or
            its JSON text), for masks whose names derive otherwise from the image names (e.g. DRIVE:
            ``{"vessel": "1st_manual/{case_id}_manual1", "fov": "mask/{stem}_mask"}``); replaces ``masks``,
            ``mask_suffix`` and ``structures``.
        allow_missing_masks: leave the mask cell of an image without that mask empty instead of raising.
        split: value of the ``split`` column for every row (default ``train``).
        split_fractions: seeded random split per case instead, e.g. ``"train=0.7,val=0.1,test=0.2"``.
        seed: seed of ``split_fractions``.

    Returns:
        Manifest frame with ``mask_<structure>`` columns, rows ordered by image path.

    Raises:
        FileNotFoundError: if ``root``, the image or mask folder, or a requested structure folder is missing
            (naming the expected and the found folders).
        ValueError: for a missing ``modality`` / ``anatomy``, an undocumented folder, a non-image file, no image,
            a mask folder mixing folders and files, an image without a mask (unless ``allow_missing_masks``), a mask
            without an image, two masks of one image, two images with one stem, two images naming one mask, a broken
            link, an invalid ``case_id_regex`` / ``mask_names`` / structure / split option, or ``mask_names`` with
            ``masks`` / ``mask_suffix`` / ``structures``.

    Example:
        >>> frame = build("kvasir_seg", modality="ES", anatomy="colon", structures="polyp")  # doctest: +SKIP
        >>> names = {"vessel": "1st_manual/{case_id}_manual1", "fov": "mask/{stem}_mask"}
        >>> frame = build("DRIVE/training", modality="OP", anatomy="retina", case_id_regex="^([0-9]+)_",
        ...               mask_names=names)  # doctest: +SKIP
    """
    folder = require_dir(root, "image-mask root")
    what = f"image-mask root {folder}"
    for name, value in (("modality", modality), ("anatomy", anatomy)):
        if value is None or not str(value).strip():
            raise ValueError(f"{what}: option {name} is required (one raw value for every image, e.g. "
                             f"--opt {name}={'ES' if name == 'modality' else 'colon'}).")
    if mask_names is not None:
        given = [n for n, v in (("masks", masks), ("mask_suffix", mask_suffix), ("structures", structures))
                 if v is not None]
        if given:
            raise ValueError(f"{what}: option mask_names names the mask folders, files and structures; do not pass "
                             f"{given} with it.")
    masks = "masks" if masks is None else masks
    mask_suffix = "_mask" if mask_suffix is None else mask_suffix
    for name, value in (("images", images), ("masks", masks)):
        if not str(value).strip() or Path(value).name != str(value) or str(value) in (".", ".."):
            raise ValueError(f"{what}: option {name} must name a folder directly under the root, got {value!r}.")
    named = None if mask_names is None else _mask_names(mask_names, images, what)
    beside = named is None and images == masks
    if beside and not mask_suffix:
        raise ValueError(f"{what}: masks beside the images (masks={masks!r} = images) need a non-empty option "
                         "mask_suffix (e.g. _mask) to tell masks from images.")
    regex = compile_case_id_regex(case_id_regex, what)
    chosen = _structure_names(structures)
    mask_folders = (masks,) if named is None else tuple(n.folder for n in named.values())
    check_folders(folder, tuple(dict.fromkeys((images, *mask_folders))), "image-mask root")
    images_dir, masks_dir = folder / images, folder / masks

    files = check_files(images_dir, IMAGE_SUFFIXES, "image folder", _IMAGE_TEXT)
    mask_files: list[Path] = []
    if beside:
        mask_files = [f for f in files if f.stem.endswith(mask_suffix) and f.stem != mask_suffix]
        mask_set = set(mask_files)
        files = [f for f in files if f not in mask_set]
        if not files:
            raise ValueError(f"image folder {images_dir}: only masks (*{mask_suffix}.*), no image.")
    by_stem: dict[str, Path] = {}
    for image in files:
        if image.stem in by_stem:
            raise ValueError(f"image folder {images_dir}: two images share the stem {image.stem!r}: "
                             f"{by_stem[image.stem].name} and {image.name} (masks are matched by stem).")
        by_stem[image.stem] = image
    case_ids = {stem: case_id_from_name(image, regex) for stem, image in by_stem.items()}

    if named is not None:
        matched = _match_named_masks(named, folder, by_stem, case_ids)
    else:
        layout = _suffix_layout(images_dir, masks_dir, beside, mask_files, chosen, mask_suffix, what)
        matched = {s: _match_masks(m, by_stem, mask_suffix, s, where) for s, (m, where) in layout.items()}
    missing: dict[str, list[str]] = {}
    rows = []
    for stem, image in sorted(by_stem.items(), key=lambda kv: str(kv[1])):
        row = {"path": str(image), "modality": str(modality), "anatomy": str(anatomy), "split": None,
               "dataset": dataset or folder.name, "case_id": case_ids[stem]}
        for structure, masks_of in matched.items():
            mask = masks_of.get(stem)
            if mask is None and named is not None:
                if not allow_missing_masks:
                    raise ValueError(f"image {image}: no {structure!r} mask; expected "
                                     f"{named[structure].expected(folder, stem, case_ids[stem])} (option mask_names: "
                                     f"{named[structure].value!r}; allow_missing_masks=true leaves the cell empty).")
                missing.setdefault(structure, []).append(image.name)
            elif mask is None:
                where = layout[structure][1]
                expected = where / f"{stem}{mask_suffix}.<ext>" if beside else where / f"{stem}.<ext>"
                if not allow_missing_masks:
                    raise ValueError(f"image {image}: no {structure!r} mask; expected {expected}"
                                     f"{'' if beside else f' or {stem}{mask_suffix}.<ext>'} "
                                     "(allow_missing_masks=true leaves the cell empty).")
                missing.setdefault(structure, []).append(image.name)
            row[MASK_COLUMN_PREFIX + structure] = None if mask is None else str(mask)
        rows.append(row)
    for structure, names in missing.items():
        logger.warning("%s: %d image(s) have no %r mask (cell left empty, allow_missing_masks=true): %s", what,
                       len(names), structure, preview(names))
    frame = as_frame(rows, what)
    return apply_split_options(frame, split, split_fractions, seed, what)
