"""The modan_monai MONAI Label app: the ``segment`` and ``classify`` bundles, served from local folders.

MONAI Label loads this file from the app folder (``python -m modan_monai.apps.monailabel start_server`` passes
it as ``--app``). Models come from this repository's bundles (or the folders given with ``--conf``), never from
the model zoo, and no SAM2 task is added. ``--conf`` keys (all optional):

- ``models``: ``segment,classify`` (default), or one of them;
- ``segment_bundle`` / ``classify_bundle``: bundle folder (default ``bundles/segment`` / ``bundles/classify``);
- ``segment_model`` / ``classify_model``: the weights served (default ``<bundle>/models/model.pt``);
- ``segment_config`` / ``classify_config``: inference-config overrides, inline JSON or a JSON file
  (e.g. ``{"structures": ["heart", "lungs", "clavicles"], "image_size": 128}``: the ids the model was trained
  with);
- ``modality``: modality of the images when a request names none (e.g. ``CT``);
- ``work_dir``: folder of the training rounds (default ``<studies>/.modan_monai``).

Errors a request can cause (an unreadable image, a model without weights, an unknown model, a label map with
undeclared values) are answered with an HTTP error whose ``detail`` names the image / model / values; the server
keeps serving.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modan_monai.apps.monailabel import compat

compat.apply()  # before monailabel's imports reach pydicom-seg and torchvision

from fastapi import HTTPException  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.exception import MONAILabelException  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from monailabel.interfaces.tasks.strategy import Strategy  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

import modan_monai  # noqa: E402
from modan_monai.apps.monailabel.lib.bundle import (  # noqa: E402
    ServedBundle,
    ServingError,
    parse_overrides,
    repository_bundle,
)
from modan_monai.apps.monailabel.lib.infer_classify import ClassificationInfer  # noqa: E402
from modan_monai.apps.monailabel.lib.infer_segment import SegmentationInfer  # noqa: E402
from modan_monai.apps.monailabel.lib.train_segment import SegmentationTrain  # noqa: E402

logger = logging.getLogger(__name__)

MODELS = ("segment", "classify")


def _served(name: str, conf: dict[str, str]) -> ServedBundle:
    return ServedBundle(
        name,
        conf.get(f"{name}_bundle") or repository_bundle(name),
        model_path=conf.get(f"{name}_model") or None,
        overrides=parse_overrides(conf.get(f"{name}_config"), f"{name}_config"),
    )


def _http_error(err: Exception, what: str) -> HTTPException:
    if isinstance(err, ServingError):
        return HTTPException(status_code=err.status, detail=err.message)
    if isinstance(err, MONAILabelException):
        return HTTPException(status_code=404, detail=f"{what}: {err.msg}")
    return HTTPException(status_code=500, detail=f"{what}: {type(err).__name__}: {err}")


class ModanMonaiApp(MONAILabelApp):
    """MONAI Label app serving this project's segmentation and classification bundles (see the module docstring).

    Raises:
        ValueError: ``--conf models`` names a model other than ``segment`` / ``classify``, or a config override
            is not valid (naming the ``--conf`` key).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        names = [m.strip() for m in (conf.get("models") or ",".join(MODELS)).split(",") if m.strip()]
        unknown = [m for m in names if m not in MODELS]
        if unknown:
            raise ValueError(f"--conf models: unknown model(s) {unknown}; this app serves {list(MODELS)}")
        self.served = {name: _served(name, conf) for name in names}
        self.default_modality = conf.get("modality", "")
        self.work_dir = Path(conf.get("work_dir") or Path(studies) / ".modan_monai")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="modan_monai",
            description="modan_monai segment / classify bundles on encoders pretrained with ModAn-MulSupCon, "
            "MLVICX or Adam-v2",
            version=modan_monai.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        """``segment`` (segmentation) and ``classify`` (classification), as configured."""
        infers: dict[str, InferTask] = {}
        if "segment" in self.served:
            infers["segment"] = SegmentationInfer(self.served["segment"], self.default_modality)
        if "classify" in self.served:
            infers["classify"] = ClassificationInfer(self.served["classify"], self.default_modality)
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        """``segment``: fine-tuning on the datastore's final labels."""
        if "segment" not in self.served:
            return {}
        return {"segment": SegmentationTrain(self.served["segment"], self.work_dir / "train_segment",
                                             self.default_modality)}

    def init_strategies(self) -> dict[str, Strategy]:
        """Next-sample strategies: ``random`` (MONAI Label's, newer images first) and ``first``."""
        return {"random": Random(), "first": First()}

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's infer; refused requests become HTTP errors naming the image / model."""
        try:
            return super().infer(request, datastore)
        except Exception as err:  # noqa: BLE001 - every failure is answered, the server keeps serving
            logger.warning(f"infer {request.get('model')!r} on {request.get('image')!r} failed: {err}")
            raise _http_error(err, f"model {request.get('model')!r}") from err

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        """MONAI Label's train; refused rounds become HTTP errors (with ``run_sync=true``) naming the cause."""
        try:
            return super().train(request)
        except Exception as err:  # noqa: BLE001
            logger.warning(f"train {request.get('model')!r} failed: {err}")
            raise _http_error(err, f"model {request.get('model')!r}") from err
