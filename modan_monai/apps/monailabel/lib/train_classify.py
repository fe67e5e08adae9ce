"""MONAI Label training task for the ``classify`` bundle: fine-tune the served model on the classes annotators stored.

Where a class is stored: MONAI Label has no label file for a whole-image class, so the class of an image is a key
of the image's info in the datastore, :data:`CLASS_KEY` (``"class"``), set with MONAI Label's own datastore
endpoint: ``PUT /datastore/image/info?image=<id>`` with the form field ``info={"class": "<class name>"}`` (the
local datastore keeps it in its ``datastore_v2.json``, a DICOMweb datastore in its local cache, keyed by the
series). The value is one of the served model's ``class_names``; an image without the key is not labelled for
classification (it stays a candidate for the ``epistemic`` next-sample strategy of the ``classify`` model).

A round (:class:`~modan_monai.apps.monailabel.lib.train_base.BundleTrain`): the images with a class -> a manifest
the classify bundle reads (``label``: 0 / 1 for a binary model, the class name for a multi-class one; a seeded
split per class: of each class's images, ``val_fraction`` (at least one, never all) validate) -> the bundle's
``configs/train.json`` with the served model's ``task``, ``class_names``, ``image_size`` and CT window, the
encoder built like the served file (``init``) and its weights, head included, loaded (``start_from``) -> the
best-validation-AUC weights replace the served file atomically. Multi-label models are trained with the bundle
itself (``bundles/classify/docs``): a round refuses them.
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
from modan_monai.apps.monailabel.lib.safety import shown
from modan_monai.apps.monailabel.lib.train_base import BundleTrain
from modan_monai.data import write_manifest

__all__ = ["CLASS_KEY", "ClassificationTrain", "image_classes", "unclassified_images", "write_class_manifest"]

logger = logging.getLogger(__name__)

#: the image-info key holding an image's class
CLASS_KEY = "class"
#: the label types a round trains (a multi-label model has no single class per image)
TRAINED_LABEL_TYPES = ("binary", "multiclass")


def image_classes(datastore: Datastore, class_names: Sequence[str], model: str = "classify") -> dict[str, str]:
    """``{image id: class name}`` of the datastore's images whose info holds :data:`CLASS_KEY`.

    Raises:
        ServingError: (422) an image's class is not one of ``class_names`` (naming the image, the value and the
            classes).
    """
    classes: dict[str, str] = {}
    for image_id in sorted(datastore.list_images()):
        info = datastore.get_image_info(image_id) or {}
        if CLASS_KEY not in info:
            continue
        value = info[CLASS_KEY]
        if not isinstance(value, str) or value not in class_names:
            raise ServingError(422, f"model {model!r}: image {image_id!r} has {CLASS_KEY}={shown(value)} in its info, "
                                    f"not one of the model's classes {list(class_names)} (set it with PUT "
                                    f"/datastore/image/info?image={image_id})")
        classes[image_id] = value
    return classes


def unclassified_images(datastore: Datastore) -> list[str]:
    """The datastore's images whose info holds no :data:`CLASS_KEY` (not labelled for classification)."""
    return sorted(i for i in datastore.list_images() if CLASS_KEY not in (datastore.get_image_info(i) or {}))


def write_class_manifest(
    items: Mapping[str, tuple[str, str]],
    class_names: Sequence[str],
    out_dir: str | Path,
    *,
    task: str = "binary",
    modality: str = "",
    val_fraction: float = 0.25,
    seed: int = 0,
    model: str = "classify",
) -> Path:
    """A classify-bundle manifest of ``{image id: (image file, class name)}``, split per class.

    Args:
        items: each labelled image's file (the datastore's ``get_image_uri``) and class.
        class_names: the served model's classes, in output order.
        out_dir: where ``manifest.csv`` goes.
        task: ``binary`` (``label`` 0 / 1: the index in ``class_names``) or ``multiclass`` (``label``: the name).
        modality: the manifest's modality column.
        val_fraction: share of each class's images in the ``val`` split (at least one; at least one trains).
        seed: seed of the split.
        model: the app model errors name.

    Returns:
        The manifest path.

    Raises:
        ServingError: (422) a class with fewer than 2 images (one validates, one trains), naming each such class,
            its count and the image-info key.
    """
    counts = {name: sum(1 for _, c in items.values() if c == name) for name in class_names}
    short = {name: n for name, n in counts.items() if n < 2}
    if short:
        raise ServingError(422, f"model {model!r}: training needs at least 2 images of each class (one validates, "
                                f"one trains) with the class in their info ({CLASS_KEY!r}); the datastore has "
                                + ", ".join(f"{n} of {name!r}" for name, n in short.items())
                                + f" (images per class: {counts})")
    rng = np.random.default_rng(seed)
    rows = []
    for name in class_names:
        ids = sorted(i for i, (_, c) in items.items() if c == name)
        n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
        val = {ids[k] for k in rng.permutation(len(ids))[:n_val]}
        for image_id in ids:
            rows.append({"path": items[image_id][0], "modality": modality, "anatomy": "", "dataset": "monailabel",
                         "case_id": image_id, "split": "val" if image_id in val else "train",
                         "label": class_names.index(name) if task == "binary" else name})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_manifest(pd.DataFrame(rows), out / "manifest.csv")


class ClassificationTrain(BundleTrain):
    """Fine-tune the served classify model on the classes stored in the datastore (see the module docstring).

    Args:
        bundle: the served classify bundle (its inference config gives the classes, label type, image size).
        work_dir: folder of the training rounds.
        default_modality: the manifest's modality when the request names none.
    """

    def __init__(self, bundle: ServedBundle, work_dir: str | Path, default_modality: str = "") -> None:
        super().__init__(bundle, work_dir, default_modality,
                         f"Fine-tune {bundle.name!r} on the classes stored in the images' info "
                         f"({CLASS_KEY!r}; classify bundle train.json)")

    def round_inputs(
        self, request: Mapping[str, Any], datastore: Datastore, params: Mapping[str, Any], round_dir: Path
    ) -> tuple[Path, dict[str, Any]]:
        """The manifest of the images with a class (:func:`write_class_manifest`) and the served model's label
        type, classes, image size, CT window and encoder.

        Raises:
            ServingError: (422) a multi-label model; an unknown class (naming the image); a class with fewer than
                2 images.
        """
        name = self.bundle.name
        task = str(self.bundle.get("task"))
        if task not in TRAINED_LABEL_TYPES:
            raise ServingError(422, f"model {name!r} is {task}: a training round takes one class per image "
                                    f"({list(TRAINED_LABEL_TYPES)} models); train a multi-label model with the "
                                    "classify bundle (bundles/classify/docs)")
        class_names = [str(c) for c in self.bundle.get("class_names")]
        classes = image_classes(datastore, class_names, name)
        items = {image_id: (datastore.get_image_uri(image_id), c) for image_id, c in classes.items()}
        manifest = write_class_manifest(
            items, class_names, round_dir, task=task,
            modality=str(request.get("modality") or self.default_modality or ""),
            val_fraction=params["val_fraction"], seed=params["seed"], model=name,
        )
        return manifest, {
            "task": task,
            "class_names": class_names,
            "image_size": self.bundle.get("image_size"),
            "ct_window": list(self.bundle.get("ct_window")),
            "init": str(self.bundle.model_path),  # the encoder's arch and stem as served; start_from loads it all
            "save_models": True,
        }

    def round_metrics(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """``val_auc`` and ``best_epoch`` of the checkpoint's ``best_weights`` (``None`` without one)."""
        best = checkpoint.get("best_weights") or {}
        metric, epoch = best.get("best_metric"), best.get("best_epoch")
        return {"val_auc": float(metric) if metric is not None else None,
                "best_epoch": int(epoch) if epoch is not None else None}
