"""MONAI Label classification task over the ``classify`` bundle: every class's probability for one image.

The bundle's ``preprocessing`` -> ``network_def`` with the served weights through its ``inferer`` -> its
``postprocessing`` (softmax). Class names are the bundle's ``class_names`` (override them for a task, e.g.
``--conf classify_config '{"class_names": ["benign", "malignant"]}'``). A NIfTI volume is classified one slice
at a time: the request must name the ``slice``.
"""

from __future__ import annotations

from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferType

from modan_monai._excepthook import root_cause
from modan_monai.apps.monailabel.lib.bundle import ServedBundle, ServingError
from modan_monai.apps.monailabel.lib.infer_task import BundleRowsInferTask
from modan_monai.apps.monailabel.lib.request import request_rows

__all__ = ["ClassificationInfer"]


class ClassificationInfer(BundleRowsInferTask):
    """The ``classify`` bundle as a MONAI Label ``classification`` task.

    The result JSON holds ``probabilities`` (``{class name: p}``, summing to 1), ``label`` (the most probable
    class), ``score`` (its probability), MONAI Label's ``prediction`` list (``[{"idx", "label", "score"}]``) and
    the weights used (``model``: the model name, ``model_mtime_ns``).

    Args:
        bundle: the served classify bundle.
        default_modality: modality used when a request names none.

    Raises:
        ValueError: ``class_names`` does not have ``num_classes`` entries.
    """

    def __init__(self, bundle: ServedBundle, default_modality: str = "") -> None:
        names = [str(n) for n in bundle.get("class_names")]
        if len(names) != int(bundle.get("num_classes")):
            raise ValueError(f"model 'classify': class_names {names} does not have num_classes="
                             f"{bundle.get('num_classes')} entries")
        self.class_names = names
        super().__init__(bundle, InferType.CLASSIFICATION, {name: i for i, name in enumerate(names)},
                         "postprocessing", default_modality)

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        """Class probabilities of ``data["image"]`` into ``data["pred"]`` (``(num_classes,)``)."""
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
        best = max(range(len(probs)), key=probs.__getitem__)
        return None, {
            "probabilities": dict(zip(self.class_names, probs)),
            "label": self.class_names[best],
            "score": probs[best],
            "prediction": [{"idx": i, "label": n, "score": p} for i, (n, p) in enumerate(zip(self.class_names, probs))],
            **self.bundle.weights_info(),
        }
