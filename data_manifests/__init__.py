"""Manifest builders: turn public datasets in their original (raw) layout into manifest CSV frames.

Each module documents the raw layout it expects and exposes ``build(root, **options) -> pd.DataFrame`` in the
manifest schema of :mod:`modan_monai.data.manifest` with absolute paths. A builder checks that layout and refuses a
tree that does not match (missing or undocumented folders, other file types, no image), naming the expected and the
found entries (see :mod:`data_manifests._common`); linked folders are followed. Three builders take generic layouts:
:mod:`~data_manifests.image_folder` (``<root>/<image>``), :mod:`~data_manifests.class_folders`
(``<root>/<class>/<image>``) and :mod:`~data_manifests.image_masks` (an image
folder plus mask folders matched by file stem, or by name templates such as DRIVE's ``1st_manual/{case_id}_manual1``).
Write a frame with
:func:`modan_monai.data.write_manifest`, or use ``scripts/build_manifest.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from . import (
    busi,
    chestxray14,
    chexpert,
    class_folders,
    dicom_dir,
    ham10000,
    head_ct,
    image_folder,
    image_masks,
    jsrt,
    knee_kl,
    medmnist,
    mrnet,
    radimagenet,
    shared_pretrain,
)
from .combine import combine, summarize
from .shared_pretrain import subsample
from .splits import assign_splits, parse_fractions

__all__ = ["BUILDERS", "assign_splits", "build_manifest", "combine", "parse_fractions", "subsample", "summarize"]

#: builder name -> ``build(root, **options)``.
BUILDERS: dict[str, Callable[..., pd.DataFrame]] = {
    "dicom_dir": dicom_dir.build,
    "busi": busi.build,
    "medmnist": medmnist.build,
    "jsrt": jsrt.build,
    "head_ct": head_ct.build,
    "mrnet": mrnet.build,
    "radimagenet": radimagenet.build,
    "shared_pretrain": shared_pretrain.build,
    "class_folders": class_folders.build,
    "image_masks": image_masks.build,
    "image_folder": image_folder.build,
    "knee_kl": knee_kl.build,
    "ham10000": ham10000.build,
    "chestxray14": chestxray14.build,
    "chexpert": chexpert.build,
}


def build_manifest(kind: str, root: str | Path, **kwargs: Any) -> pd.DataFrame:
    """Build a manifest frame with the builder ``kind`` (``-`` and ``_`` are interchangeable).

    Args:
        kind: a key of :data:`BUILDERS`.
        root: raw dataset root passed to the builder.
        kwargs: builder options (see each module).

    Returns:
        The manifest frame.

    Raises:
        ValueError: for an unknown kind or an option the builder does not take.
    """
    name = kind.replace("-", "_")
    if name not in BUILDERS:
        raise ValueError(f"unknown manifest builder {kind!r}; known: {sorted(BUILDERS)}.")
    accepted = inspect.signature(BUILDERS[name]).parameters
    unexpected = [k for k in kwargs if k not in accepted]
    if unexpected:
        options = [p for p in accepted if p != "root"]
        raise ValueError(f"builder {name!r} does not take option(s) {unexpected}; options: {options}.")
    return BUILDERS[name](root, **kwargs)
