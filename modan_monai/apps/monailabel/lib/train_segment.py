"""MONAI Label training task for the ``segment`` bundle: fine-tune the served model on the submitted labels.

A round: the datastore's images with a final label map -> a manifest the segment bundle reads (one binary mask
file per structure, split from the label map, whose values must be the declared labels; a seeded per-image
train/val split) -> ``python -m monai.bundle run`` of the bundle's ``configs/train.json`` starting from the
served weights (``start_from``: encoder and decoder, whatever encoder init they came from) -> the best-validation
weights replace the served file atomically, so the next inference uses them. Each round keeps its manifest,
masks, log and checkpoints under ``<work_dir>/<round>/`` (the round itself:
:class:`~modan_monai.apps.monailabel.lib.train_base.BundleTrain`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monailabel.interfaces.datastore import Datastore

from modan_monai.apps.monailabel.lib.bundle import ServedBundle, ServingError
from modan_monai.apps.monailabel.lib.train_base import (
    TRAIN_DEFAULTS,
    TRAIN_LIMITS,
    BundleTrain,
    display_path,
    train_params,
)
from modan_monai.data import write_manifest
from modan_monai.data.readers import read_image_row
from modan_monai.transforms.label_map import label_map_to_structures

__all__ = ["TRAIN_DEFAULTS", "TRAIN_LIMITS", "SegmentationTrain", "train_params", "write_training_manifest"]

logger = logging.getLogger(__name__)


def _write_mask(mask: np.ndarray, like: str, path_stem: Path) -> str:
    """Write one binary structure mask in the image's file type: NIfTI (with the image's affine) or PNG 0/255."""
    import nibabel as nib
    from PIL import Image

    if like.lower().endswith((".nii", ".nii.gz")):
        path = path_stem.with_name(path_stem.name + ".nii.gz")
        image = nib.load(like)
        data = mask.reshape(image.shape) if mask.size == int(np.prod(image.shape)) else mask
        nib.save(nib.Nifti1Image(data.astype(np.uint8), image.affine), str(path))
    else:
        path = path_stem.with_name(path_stem.name + ".png")
        # the readers' (x, y) order -> PIL's (rows, columns)
        Image.fromarray((mask.T * 255).astype(np.uint8), mode="L").save(path)
    return str(path)


def write_training_manifest(
    pairs: Sequence[Mapping[str, str]],
    structures: Sequence[str],
    out_dir: str | Path,
    *,
    modality: str = "",
    val_fraction: float = 0.25,
    seed: int = 0,
    display_root: str | None = None,
) -> Path:
    """Turn ``{"image", "label"}`` pairs (label maps) into a segment-bundle manifest with ``mask_<structure>``.

    Args:
        pairs: MONAI Label's ``datastore.datalist()``; a NIfTI volume becomes one row per slice (``index``).
        structures: the served model's structure channels (label value ``c + 1`` is ``structures[c]``).
        out_dir: where the masks and ``manifest.csv`` go.
        modality: the manifest's modality column.
        val_fraction: share of the images in the ``val`` split (at least one; at least one stays in ``train``).
        seed: seed of the split.
        display_root: errors name files relative to this folder (the datastore) when they lie inside it.

    Returns:
        The manifest path.

    Raises:
        ServingError: (422) fewer than two labelled images; a label map whose size differs from its image's or
            whose values are not the declared labels (naming the label file and the values).
    """
    if len(pairs) < 2:
        raise ServingError(422, f"model 'segment': training needs at least 2 images with a final label, the "
                                f"datastore has {len(pairs)}")
    out = Path(out_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, pair in enumerate(sorted(pairs, key=lambda p: p["image"])):
        image, label = str(pair["image"]), str(pair["label"])
        image_name, label_name = display_path(image, display_root), display_path(label, display_root)
        try:
            image_arr, _ = read_image_row({"image": image})
            label_arr, _ = read_image_row({"image": label})
        except (ValueError, FileNotFoundError, OSError) as err:
            message = str(err).replace(image, image_name).replace(label, label_name)
            raise ServingError(422, f"model 'segment': training pair {image_name} / {label_name}: {message}") from err
        if tuple(label_arr.shape) != tuple(image_arr.shape):
            raise ServingError(422, f"model 'segment': label {label_name} has size {tuple(label_arr.shape)}, its "
                                    f"image {image_name} {tuple(image_arr.shape)}")
        try:
            masks = label_map_to_structures(label_arr, len(structures), source=f"label {label_name}")
        except ValueError as err:
            raise ServingError(422, f"model 'segment': {err} (labels: {dict(enumerate(structures, 1))})") from err
        row: dict[str, Any] = {"path": image, "modality": modality, "anatomy": "", "dataset": "monailabel",
                               "case_id": f"case{i:05d}"}
        for c, name in enumerate(structures):
            row[f"mask_{name}"] = _write_mask(masks[c], image, out / "masks" / f"case{i:05d}_{name}")
        # a volume is one row per slice (index), as the bundle trains on 2D slices
        slices = image_arr.shape[2] if image_arr.ndim == 3 else None
        rows.append([row] if slices is None else [{**row, "index": k} for k in range(slices)])
    n_val = min(len(rows) - 1, max(1, round(val_fraction * len(rows))))
    order = np.random.default_rng(seed).permutation(len(rows))
    for rank, i in enumerate(order):  # split per image: the slices of a volume stay together
        for row in rows[i]:
            row["split"] = "val" if rank < n_val else "train"
    frame = pd.DataFrame([row for image_rows in rows for row in image_rows])
    if "index" in frame:
        frame["index"] = frame["index"].astype("Int64")
    return write_manifest(frame, out / "manifest.csv")


class SegmentationTrain(BundleTrain):
    """Fine-tune the served segment model on the datastore's final labels (see the module docstring).

    Args:
        bundle: the served segment bundle (its inference config gives the structures, image size, arch, stem).
        work_dir: folder of the training rounds.
        default_modality: the manifest's modality when the request names none.
    """

    def __init__(self, bundle: ServedBundle, work_dir: str | Path, default_modality: str = "") -> None:
        super().__init__(bundle, work_dir, default_modality,
                         f"Fine-tune {bundle.name!r} on the submitted label maps (segment bundle train.json)")

    def round_inputs(
        self, request: Mapping[str, Any], datastore: Datastore, params: Mapping[str, Any], round_dir: Path
    ) -> tuple[Path, dict[str, Any]]:
        """The manifest of the datastore's final label maps (:func:`write_training_manifest`) and the served
        model's structures, image size, CT window, arch and stem."""
        structures = list(self.bundle.get("structure_names"))
        manifest = write_training_manifest(
            datastore.datalist(), structures, round_dir,
            modality=str(request.get("modality") or self.default_modality or ""),
            val_fraction=params["val_fraction"], seed=params["seed"],
            display_root=getattr(datastore, "root", None),
        )
        return manifest, {
            "structures": structures,
            "image_size": self.bundle.get("image_size"),
            "ct_window": list(self.bundle.get("ct_window")),
            "arch": self.bundle.get("arch"),
            "stem": self.bundle.get("stem"),
        }

    def round_metrics(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """``val_mean_dice`` and ``best_epoch`` of the checkpoint's ``best_model`` (``None`` without one)."""
        best = checkpoint.get("best_model") or {}
        return {"val_mean_dice": float(best["best_metric"]) if best else None,
                "best_epoch": int(best["best_metric_epoch"]) if best else None}
