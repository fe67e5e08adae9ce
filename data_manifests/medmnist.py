"""Manifest builder for a MedMNIST v2 ``.npz`` file (Yang et al. 2023), e.g. ``pneumoniamnist.npz``.

Expected raw layout: one file as distributed by MedMNIST (``<flavour>.npz`` or ``<flavour>_<size>.npz``) holding
``train_images``, ``val_images``, ``test_images`` (N, H, W) or (N, H, W, 3) uint8 and ``train_labels``,
``val_labels``, ``test_labels`` (N, L) integers. One row per image: ``path`` = the npz file, ``key`` =
``<split>_images``, ``index`` = i, ``split`` = train/val/test, ``case_id`` = ``"<split>-<i>"``; labels: a single
label column becomes ``label``, multi-label tasks (ChestMNIST) become ``label_0 .. label_{L-1}``.

``modality`` / ``anatomy`` default per known flavour (:data:`MEDMNIST_FLAVOURS`); any other flavour needs both
options.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import as_frame, require_file

__all__ = ["MEDMNIST_FLAVOURS", "MEDMNIST_SPLITS", "build"]

#: Known radiology flavours of MedMNIST -> (modality, anatomy) raw values.
MEDMNIST_FLAVOURS: dict[str, tuple[str, str]] = {
    "pneumoniamnist": ("XR", "chest"),
    "chestmnist": ("XR", "chest"),
    "breastmnist": ("US", "breast"),
    "organamnist": ("CT", "abdomen"),
    "organcmnist": ("CT", "abdomen"),
    "organsmnist": ("CT", "abdomen"),
}
MEDMNIST_SPLITS: tuple[str, ...] = ("train", "val", "test")


def _npz_shape(npz: Path, key: str) -> tuple[int, ...]:
    """Shape of one array of an npz file, read from its .npy header (np.load would decompress the whole array)."""
    with zipfile.ZipFile(npz) as archive:
        member = f"{key}.npy"
        if member not in archive.namelist():
            raise ValueError(f"MedMNIST file {npz} has no array {key!r}; arrays: "
                             f"{sorted(n[:-4] for n in archive.namelist())}.")
        with archive.open(member) as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = reader(handle)
    return tuple(shape)


def _flavour(npz: Path) -> str:
    return re.sub(r"_\d+$", "", npz.stem.lower())


def build(
    root: str | Path,
    dataset: str | None = None,
    modality: str | None = None,
    anatomy: str | None = None,
    splits: Sequence[str] = MEDMNIST_SPLITS,
) -> pd.DataFrame:
    """Build the manifest of a MedMNIST npz file.

    Args:
        root: the ``.npz`` file, or a folder holding exactly one ``.npz`` file.
        dataset: value of the ``dataset`` column; default the flavour name (``pneumoniamnist``).
        modality: raw modality; default from :data:`MEDMNIST_FLAVOURS`.
        anatomy: raw anatomy; default from :data:`MEDMNIST_FLAVOURS`.
        splits: splits to list.

    Returns:
        Manifest frame with ``key``/``index`` and label column(s).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for an unknown flavour without ``modality``/``anatomy``, a missing array, or labels whose length
            differs from the images.
    """
    path = Path(root).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.npz"))
        if len(found) != 1:
            raise ValueError(f"MedMNIST folder {path.resolve()} must hold exactly one .npz file, found {len(found)}: "
                             f"{[f.name for f in found]}.")
        path = found[0]
    npz = require_file(path, "MedMNIST npz")
    flavour = _flavour(npz)
    default = MEDMNIST_FLAVOURS.get(flavour)
    if default is None and (modality is None or anatomy is None):
        raise ValueError(
            f"MedMNIST file {npz}: unknown flavour {flavour!r}; pass modality= and anatomy= "
            f"(known flavours: {sorted(MEDMNIST_FLAVOURS)})."
        )
    modality = modality if modality is not None else default[0]
    anatomy = anatomy if anatomy is not None else default[1]
    frames = []
    with np.load(npz) as arrays:
        for split in splits:
            key = f"{split}_images"
            shape = _npz_shape(npz, key)
            labels = np.asarray(arrays[f"{split}_labels"]) if f"{split}_labels" in arrays.files else None
            if labels is not None:
                labels = labels.reshape(len(labels), -1)
                if len(labels) != shape[0]:
                    raise ValueError(f"MedMNIST file {npz}: {split}_labels has {len(labels)} rows but {key} has "
                                     f"{shape[0]} images.")
            part = {
                "path": str(npz),
                "key": key,
                "index": np.arange(shape[0]),
                "modality": modality,
                "anatomy": anatomy,
                "split": split,
                "dataset": dataset or flavour,
                "case_id": [f"{split}-{i}" for i in range(shape[0])],
            }
            if labels is not None:
                if labels.shape[1] == 1:
                    part["label"] = labels[:, 0].astype(np.int64)
                else:
                    for j in range(labels.shape[1]):
                        part[f"label_{j}"] = labels[:, j].astype(np.int64)
            frames.append(pd.DataFrame(part))
    return as_frame(pd.concat(frames, ignore_index=True).to_dict(orient="records"), f"MedMNIST file {npz}")
