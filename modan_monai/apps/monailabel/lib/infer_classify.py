"""MONAI Label classification task over the ``classify`` bundle: every class's (or label's) probability for one image.

The bundle's ``preprocessing`` -> ``network_def`` with the served weights through its ``inferer`` -> its
``postprocessing``, whose activation follows the ``task`` the served model was trained with (the ``label_type`` of
its settings, see :mod:`modan_monai.networks.model_settings`; listed per label type under ``label_types`` in the
bundle's ``metadata.json``): a softmax over the classes for ``binary`` and ``multiclass`` models (a model saved
without a ``label_type`` too, as before), one sigmoid per label for ``multilabel`` models. Class names are the
served model's ``class_names`` (a model without settings: the bundle's; override them for a task, e.g.
``--conf classify_config '{"class_names": ["benign", "malignant"]}'``). A NIfTI volume is classified one slice
at a time: the request must name the ``slice``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferType

from modan_monai._excepthook import root_cause
from modan_monai.apps.monailabel.lib.bundle import ServedBundle, ServingError
from modan_monai.apps.monailabel.lib.infer_task import BundleRowsInferTask
from modan_monai.apps.monailabel.lib.request import request_rows
from modan_monai.apps.monailabel.lib.safety import number, shown
from modan_monai.evaluation.training import TASKS

__all__ = ["ClassificationInfer", "DEFAULT_THRESHOLD", "threshold_param"]

#: a multi-label model's labels at or above this probability are reported present (request parameter ``threshold``)
DEFAULT_THRESHOLD = 0.5


def threshold_param(value: Any, label_type: str, model: str = "classify") -> float:
    """The request parameter ``threshold`` of a multi-label model, checked.

    Args:
        value: the request's value: a number (or a numeric string) in ``[0, 1]``.
        label_type: the served model's label type; only ``multilabel`` models take a threshold.
        model: the model name errors give.

    Returns:
        the threshold as a float.

    Raises:
        ServingError: (422, naming the parameter and the value) ``value`` is not a finite number in ``[0, 1]``, or
            the model is not multi-label (its answer's ``label`` is the most probable class: there is no threshold).
    """
    if label_type != "multilabel":
        raise ServingError(422, f"model {model!r}: parameter threshold={shown(value)} applies to multi-label models; "
                                f"this one is {label_type} (its label is the most probable class)")
    given = number(value)
    if given is None or not math.isfinite(given) or not 0.0 <= given <= 1.0:
        raise ServingError(422, f"model {model!r}: parameter threshold={shown(value)} is not a number in [0, 1]")
    return given


class ClassificationInfer(BundleRowsInferTask):
    """The ``classify`` bundle as a MONAI Label ``classification`` task.

    The result JSON holds ``label_type`` (the served model's: ``binary``, ``multiclass`` or ``multilabel``),
    ``probabilities`` (``{class name: p}``), MONAI Label's ``prediction`` list (``[{"idx", "label", "score"}]``,
    every class) and the weights used (``model``: the model name, ``model_mtime_ns``). Binary and multi-class
    models: the probabilities sum to 1, ``label`` is the most probable class and ``score`` its probability.
    Multi-label models: one probability per label, each in ``[0, 1]`` (not normalised), ``threshold`` (the request
    parameter, default :data:`DEFAULT_THRESHOLD`) and ``labels``, the labels at or above it (possibly none), in
    ``class_names`` order; there is no single ``label``. ``/info/`` lists the class names under ``labels``, the
    ``label_type`` and the bundle metadata's description of that label type under ``output``.

    Args:
        bundle: the served classify bundle.
        default_modality: modality used when a request names none.

    Raises:
        ValueError: ``class_names`` does not have ``num_classes`` entries, or the bundle's ``task`` is not one of
            :data:`~modan_monai.evaluation.training.TASKS`.
    """

    def __init__(self, bundle: ServedBundle, default_modality: str = "") -> None:
        names = [str(n) for n in bundle.get("class_names")]
        if len(names) != int(bundle.get("num_classes")):
            raise ValueError(f"model 'classify': class_names {names} does not have num_classes="
                             f"{bundle.get('num_classes')} entries")
        label_type = str(bundle.get("task"))
        if label_type not in TASKS:
            raise ValueError(f"model 'classify': config id 'task' is {label_type!r}; served label types are "
                             f"{list(TASKS)}")
        self.class_names = names
        self.label_type = label_type
        config = {"threshold": DEFAULT_THRESHOLD} if label_type == "multilabel" else {}
        super().__init__(bundle, InferType.CLASSIFICATION, {name: i for i, name in enumerate(names)},
                         "postprocessing", default_modality, config)

    def info(self) -> dict[str, Any]:
        """MONAI Label's task info with ``label_type`` and ``output`` (the metadata's ``label_types`` entry)."""
        info = {**super().info(), "label_type": self.label_type}
        output = (self.bundle.metadata.get("label_types") or {}).get(self.label_type)
        if output is not None:
            info["output"] = output
        return info

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        """Class probabilities of ``data["image"]`` into ``data["pred"]`` (``(num_classes,)``); a multi-label
        request's ``threshold`` is checked first, into ``data["threshold"]``."""
        if "threshold" in data:
            data["threshold"] = threshold_param(data["threshold"], self.label_type)
        rows, whole = request_rows(data, self.default_modality)
        if whole:
            raise ServingError(422, f"model 'classify': image {data['image']} is a volume of {len(rows)} slices; "
                                    "classification takes a 2D image: pass the slice parameter")
        torch_device = torch.device(device)
        network = self.bundle.network(torch_device)
        try:
            d = self._preprocessing(dict(rows[0]))
            with torch.no_grad():
                logits = self._inferer(torch.as_tensor(d["image"]).to(torch_device)[None], network)[0].cpu()
        except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
            # MONAI's Compose wraps a transform's error in "applying transform ...": report the cause
            raise ServingError(422, f"model 'classify': image {data['image']}: {root_cause(err)}") from err
        data["pred"] = torch.as_tensor(self._postprocessing({"pred": logits})["pred"]).float()
        return data

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        """No file: the result JSON (see the class docstring)."""
        probs = [float(p) for p in data["pred"]]
        result: dict[str, Any] = {"label_type": self.label_type, "probabilities": dict(zip(self.class_names, probs))}
        if self.label_type == "multilabel":
            threshold = float(data.get("threshold", DEFAULT_THRESHOLD))
            result["threshold"] = threshold
            result["labels"] = [n for n, p in zip(self.class_names, probs) if p >= threshold]
        else:
            best = max(range(len(probs)), key=probs.__getitem__)
            result["label"] = self.class_names[best]
            result["score"] = probs[best]
        result["prediction"] = [{"idx": i, "label": n, "score": p}
                                for i, (n, p) in enumerate(zip(self.class_names, probs))]
        return None, {**result, **self.bundle.weights_info()}
