"""MONAI Label training task for the ``segment`` bundle: fine-tune the served model on the submitted labels.

A round: the datastore's images with a final label map -> a manifest the segment bundle reads (one binary mask
file per structure, split from the label map, whose values must be the declared labels; a seeded per-image
train/val split) -> ``python -m monai.bundle run`` of the bundle's ``configs/train.json`` starting from the
served weights (``start_from``: encoder and decoder, whatever encoder init they came from) -> the best-validation
weights replace the served file atomically, so the next inference uses them. Each round keeps its manifest,
masks, log and checkpoints under ``<work_dir>/<round>/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from modan_monai.apps.monailabel.lib.bundle import ServedBundle, ServingError
from modan_monai.data import write_manifest
from modan_monai.data.readers import read_image_row
from modan_monai.evaluation.segmentation_grid import bundle_cli_value
from modan_monai.transforms.label_map import label_map_to_structures

__all__ = ["TRAIN_DEFAULTS", "TRAIN_LIMITS", "SegmentationTrain", "train_params", "write_training_manifest"]

logger = logging.getLogger(__name__)

#: request parameters of a round and their defaults (shown in /info/ under the trainer's config)
TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 2, "batch_size": 4, "learning_rate": 1e-4, "val_fraction": 0.25, "seed": 0}
#: the accepted range of each parameter: ``(low, high, low inclusive, high inclusive)``
TRAIN_LIMITS: dict[str, tuple[float, float, bool, bool]] = {
    "epochs": (1, 100_000, True, True),
    "batch_size": (1, 65_536, True, True),
    "learning_rate": (0.0, 10.0, False, True),
    "val_fraction": (0.0, 1.0, False, False),
    "seed": (0, 2**32 - 1, True, True),
}


def _train_value(key: str, value: Any, default: Any) -> Any:
    kind = type(default).__name__
    bad = ServingError(422, f"model 'segment': training parameter {key}={value!r} is not a{'n' if kind == 'int' else ''} "
                            f"{kind}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if not math.isfinite(number):
        raise ServingError(422, f"model 'segment': training parameter {key}={value!r} is not a finite number")
    if isinstance(default, int):
        if isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                raise bad from None
        if number != int(number):
            raise bad
        number = int(number)
    low, high, low_in, high_in = TRAIN_LIMITS[key]
    if (number < low or (number == low and not low_in)) or (number > high or (number == high and not high_in)):
        interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise ServingError(422, f"model 'segment': training parameter {key}={value!r} is out of range {interval}")
    return number


def train_params(request: Mapping[str, Any]) -> dict[str, Any]:
    """The round's parameters from a training request, each checked (type, finite, range).

    Raises:
        ServingError: (422) a parameter is not a number of its type, not finite, or out of :data:`TRAIN_LIMITS`
            (naming it and the value).
    """
    return {key: _train_value(key, request.get(key, default), default) for key, default in TRAIN_DEFAULTS.items()}


def _shown(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` (the datastore) when it lies inside it."""
    if root and os.path.realpath(path).startswith(os.path.realpath(root) + os.sep):
        return os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    return path


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
        image_name, label_name = _shown(image, display_root), _shown(label, display_root)
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


class SegmentationTrain(TrainTask):
    """Fine-tune the served segment model on the datastore's final labels (see the module docstring).

    Args:
        bundle: the served segment bundle (its inference config gives the structures, image size, arch, stem).
        work_dir: folder of the training rounds.
        default_modality: the manifest's modality when the request names none.
    """

    def __init__(self, bundle: ServedBundle, work_dir: str | Path, default_modality: str = "") -> None:
        super().__init__(f"Fine-tune {bundle.name!r} on the submitted label maps (segment bundle train.json)")
        self.bundle = bundle
        self.work_dir = Path(work_dir)
        self.default_modality = default_modality
        self._last: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        """The round's parameters and their defaults."""
        return dict(TRAIN_DEFAULTS)

    def stats(self) -> dict[str, Any]:
        """The last round's result."""
        return dict(self._last)

    def _command(self, args: Mapping[str, Any]) -> list[str]:
        configs = self.bundle.bundle_dir / "configs"
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs / "train.json"),
               "--logging_file", str(configs / "logging.conf")]
        for key, value in args.items():
            cmd += [f"--{key}", bundle_cli_value(value)]
        return cmd

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Run one round; returns the model name, its validation Dice, the batch size used and the round's folder.

        The parameters are checked first (:func:`train_params`); a ``batch_size`` larger than the training split's
        rows is clamped to that number (logged), so the documented minimum of 2 labelled images trains.
        """
        start = time.time()
        params = train_params(request)
        served = self.bundle.model_path
        if not served.is_file():
            logger.warning(f"segment training: the served weights {served} do not exist")
            raise ServingError(404, f"model 'segment' has no weights file to fine-tune: its {served.name} does not "
                                    "exist (start the server with --conf segment_model <path to model.pt>)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        round_dir = Path(tempfile.mkdtemp(prefix=time.strftime("round_%Y%m%d_%H%M%S_"), dir=self.work_dir))
        structures = list(self.bundle.get("structure_names"))
        manifest = write_training_manifest(
            datastore.datalist(), structures, round_dir,
            modality=str(request.get("modality") or self.default_modality or ""),
            val_fraction=params["val_fraction"], seed=params["seed"],
            display_root=getattr(datastore, "root", None),
        )
        train_rows = int((pd.read_csv(manifest)["split"] == "train").sum())
        if params["batch_size"] > train_rows:
            logger.info(f"segment training: batch_size {params['batch_size']} clamped to {train_rows}, the number "
                        f"of training rows the split gives")
            params["batch_size"] = train_rows
        args = {
            "bundle_root": str(self.bundle.bundle_dir),
            "output_dir": str(round_dir / "models"),
            "manifest": str(manifest),
            "structures": structures,
            "image_size": self.bundle.get("image_size"),
            "ct_window": list(self.bundle.get("ct_window")),
            "arch": self.bundle.get("arch"),
            "stem": self.bundle.get("stem"),
            "start_from": str(served),
            "epochs": params["epochs"],
            "batch_size": params["batch_size"],
            "learning_rate": params["learning_rate"],
            "seed": params["seed"],
        }
        cmd = self._command(args)
        log_path = round_dir / "train.log"
        logger.info(f"segment training round: {' '.join(cmd)}")
        with open(log_path, "w") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(round_dir)).returncode
        shown = f"round {round_dir.name}/train.log"
        if code != 0:
            tail = log_path.read_text().strip().splitlines()[-3:]
            raise ServingError(500, f"model 'segment': training round failed (exit {code}); see {shown}: "
                                    + " | ".join(tail))
        best = round_dir / "models" / "model.pt"
        if not best.is_file():
            raise ServingError(500, f"model 'segment': training round wrote no models/model.pt; see {shown}")
        checkpoints = sorted((round_dir / "models").glob("checkpoint_epoch=*.pt"), key=os.path.getmtime)
        state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)["best_model"] if checkpoints else {}
        tmp = served.with_name(served.name + ".incoming")
        shutil.copyfile(best, tmp)
        os.replace(tmp, served)
        self._last = {
            "model": self.bundle.name,
            "val_mean_dice": float(state["best_metric"]) if state else None,
            "best_epoch": int(state["best_metric_epoch"]) if state else None,
            "train_images": int(pd.read_csv(manifest).query("split == 'train'")["path"].nunique()),
            "val_images": int(pd.read_csv(manifest).query("split == 'val'")["path"].nunique()),
            "batch_size": params["batch_size"],
            "round": round_dir.name,
            "seconds": round(time.time() - start, 1),
        }
        logger.info(f"segment training round done: {json.dumps(self._last)}")
        return dict(self._last)
