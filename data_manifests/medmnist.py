"""Manifest builder for a MedMNIST v2 ``.npz`` file (Yang et al. 2023), e.g. ``pneumoniamnist.npz``.

Expected raw layout: one file as distributed by MedMNIST (``<flavour>.npz`` or ``<flavour>_<size>.npz``) holding
``train_images``, ``val_images``, ``test_images`` (N, H, W) or (N, H, W, 3) uint8 and ``train_labels``,
``val_labels``, ``test_labels`` (N, L) integers. One row per image: ``path`` = the npz file, ``key`` =
``<split>_images``, ``index`` = i, ``split`` = train/val/test, ``case_id`` = ``"<split>-<i>"``; labels: a single
label column becomes ``label`` (or the name given by ``label_column``, e.g. ``dr_grade`` for RetinaMNIST),
multi-label tasks (ChestMNIST) become ``label_0 .. label_{L-1}``. RGB flavours (RetinaMNIST, DermaMNIST, BloodMNIST)
store (N, H, W, 3) images.

``modality`` / ``anatomy`` default per known flavour (:data:`MEDMNIST_FLAVOURS`); any other flavour needs both
options. The layout is checked: the file must be a ``.npz`` holding ``<split>_images`` (N, H, W) / (N, H, W, 3) and
``<split>_labels`` (N, L) for every requested split, with at least one image; anything else is refused naming the
expected and the found arrays.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from modan_monai.data.manifest import MANIFEST_COLUMNS

from ._common import as_frame, check_option, describe

__all__ = ["MEDMNIST_FLAVOURS", "MEDMNIST_SPLITS", "build"]

#: Known flavours of MedMNIST -> (modality, anatomy) raw values: the radiology ones, then fundus photographs
#: (RetinaMNIST), dermoscopy (DermaMNIST) and blood-cell microscopy (BloodMNIST).
MEDMNIST_FLAVOURS: dict[str, tuple[str, str]] = {
    "pneumoniamnist": ("XR", "chest"),
    "chestmnist": ("XR", "chest"),
    "breastmnist": ("US", "breast"),
    "organamnist": ("CT", "abdomen"),
    "organcmnist": ("CT", "abdomen"),
    "organsmnist": ("CT", "abdomen"),
    "retinamnist": ("OP", "eye"),
    "dermamnist": ("DMS", "skin"),
    "bloodmnist": ("SM", "blood"),
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
    label_column: str = "label",
) -> pd.DataFrame:
    """Build the manifest of a MedMNIST npz file.

    Args:
        root: the ``.npz`` file, or a folder holding exactly one ``.npz`` file.
        dataset: value of the ``dataset`` column; default the flavour name (``pneumoniamnist``).
        modality: raw modality; default from :data:`MEDMNIST_FLAVOURS`.
        anatomy: raw anatomy; default from :data:`MEDMNIST_FLAVOURS`.
        splits: splits to list.
        label_column: name of the column of a single-label task (``dr_grade`` for RetinaMNIST, so that it is not
            mixed with another dataset's ``label`` in a combined manifest); multi-label columns stay ``label_<j>``.

    Returns:
        Manifest frame with ``key``/``index`` and label column(s).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for a file that is not an ``.npz``, an unknown split, an unknown flavour without
            ``modality``/``anatomy``, an empty ``label_column`` or one that names a manifest column, a missing
            images/labels array (naming the expected and the found arrays),
            images that are not (N, H, W) / (N, H, W, 3), labels whose length differs from the images, or no image.
    """
    path = Path(root).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.npz"))
        if len(found) != 1:
            raise ValueError(f"MedMNIST folder {path.resolve()} must hold exactly one .npz file, found {len(found)}: "
                             f"{[f.name for f in found]} ({describe(path)}).")
        path = found[0]
    npz = path.resolve()
    if not npz.is_file():
        raise FileNotFoundError(f"MedMNIST npz: file not found: {npz}")
    if npz.suffix.lower() != ".npz":
        raise ValueError(f"MedMNIST file {npz}: expected a MedMNIST .npz file (e.g. pneumoniamnist.npz), found a "
                         f"{npz.suffix or '(no suffix)'} file.")
    splits = check_option("splits", splits, MEDMNIST_SPLITS, f"MedMNIST file {npz}")
    if not str(label_column).strip() or str(label_column) in MANIFEST_COLUMNS:
        raise ValueError(f"MedMNIST file {npz}: option label_column must be a new column name, got "
                         f"{label_column!r} (manifest columns: {list(MANIFEST_COLUMNS)}).")
    try:
        with zipfile.ZipFile(npz) as archive:
            arrays_found = sorted(n[:-4] for n in archive.namelist() if n.endswith(".npy"))
    except zipfile.BadZipFile as err:
        raise ValueError(f"MedMNIST file {npz}: not a readable .npz archive: {err}.") from err
    expected = [f"{s}_{kind}" for s in splits for kind in ("images", "labels")]
    missing = [name for name in expected if name not in arrays_found]
    if missing:
        raise ValueError(f"MedMNIST file {npz}: array(s) {missing} not found; expected {expected}; found "
                         f"{arrays_found}.")
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
            if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] == 3)):
                raise ValueError(f"MedMNIST file {npz}: {key} has shape {shape}; expected images (N, H, W) or "
                                 "(N, H, W, 3).")
            labels = np.asarray(arrays[f"{split}_labels"])
            labels = labels.reshape(labels.shape[0] if labels.ndim else 1, int(np.prod(labels.shape[1:])))
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
            if labels.shape[1] == 1:
                part[str(label_column)] = labels[:, 0].astype(np.int64)
            else:
                for j in range(labels.shape[1]):
                    part[f"label_{j}"] = labels[:, j].astype(np.int64)
            frames.append(pd.DataFrame(part))
    return as_frame(pd.concat(frames, ignore_index=True).to_dict(orient="records"),
                    f"MedMNIST file {npz} (arrays {expected} hold 0 images)")
