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
- ``work_dir``: folder of the training rounds (default ``<studies>/.modan_monai``; with a DICOMweb ``--studies``
  ``<app folder>/work``, which also holds the DICOMweb cache ``dicomweb/``);
- ``dicomweb_filter``: with a DICOMweb ``--studies``, the QIDO series filter (JSON, e.g. ``{"Modality": "CT"}``;
  default: every image series);
- ``cors_origins``: origins (``http://host:port``, comma-separated) whose web pages may call the server (read by
  :mod:`~modan_monai.apps.monailabel.server`; default none);
- ``hosts``: DNS names (comma-separated) clients call the server by, besides ``localhost`` and IP addresses
  (read by :mod:`~modan_monai.apps.monailabel.server`; default none);
- ``auto_scoring``: ``true`` lets MONAI Label re-run ``/scoring/epistemic`` in the background after the start,
  each next sample and each training round (default ``false``: scoring runs when asked for).

Tasks: inference (``/infer/segment``, ``/infer/classify``, ``/batch/infer/<model>``), training
(``/train/segment`` on final label maps, ``/train/classify`` on the ``class`` key of the images' info), next
sample (strategies ``random``, ``first``, ``epistemic``) and scoring (``/scoring/epistemic``).

Errors a request can cause (an unreadable image, a model without weights, an unknown model, a label map with
undeclared values) are answered with an HTTP error whose ``detail`` names the image / model / values; the server
keeps serving. The app reads, writes and deletes only inside the studies folder
(:class:`~modan_monai.apps.monailabel.lib.datastore.ConfinedDatastore`): ``/infer`` takes a datastore image id or
the request's own upload, nothing else; answers name files relative to the datastore and models by name.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import torch

from modan_monai.apps.monailabel import compat

compat.apply()  # before monailabel's imports reach pydicom-seg and torchvision

from fastapi import HTTPException  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag  # noqa: E402
from monailabel.interfaces.exception import MONAILabelException  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from monailabel.interfaces.tasks.scoring import ScoringMethod  # noqa: E402
from monailabel.interfaces.tasks.strategy import Strategy  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random as MonaiLabelRandom  # noqa: E402

import modan_monai  # noqa: E402
from modan_monai.apps.monailabel.lib.bundle import (  # noqa: E402
    ServedBundle,
    ServingError,
    parse_overrides,
    repository_bundle,
)
from modan_monai.apps.monailabel.lib.datastore import ConfinedDatastore  # noqa: E402
from modan_monai.apps.monailabel.lib.dicomweb import (  # noqa: E402
    PacsDatastore,
    check_dicomweb,
    dicomweb_session,
    install_seg_writer,
)
from modan_monai.apps.monailabel.lib.epistemic import EpistemicModel, EpistemicScoring, EpistemicStrategy  # noqa: E402
from modan_monai.apps.monailabel.lib.infer_classify import ClassificationInfer  # noqa: E402
from modan_monai.apps.monailabel.lib import uploads  # noqa: E402
from modan_monai.apps.monailabel.lib.safety import check_infer_options, json_object, plain_name  # noqa: E402
from modan_monai.apps.monailabel.lib.infer_segment import SegmentationInfer  # noqa: E402
from modan_monai.apps.monailabel.lib.train_classify import ClassificationTrain, unclassified_images  # noqa: E402
from modan_monai.apps.monailabel.lib.train_segment import SegmentationTrain  # noqa: E402

logger = logging.getLogger(__name__)

MODELS = ("segment", "classify")
#: what batch inference's ``images`` may be besides a list of image ids
BATCH_IMAGES = ("all", "labeled", "unlabeled")


class Random(MonaiLabelRandom):
    """MONAI Label's random next sample (an image served longest ago more likely) that also answers when every
    unlabelled image was served within the current second (MONAI Label's weights are then all 0 and
    ``random.choices`` raises): any of them, uniformly."""

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        try:
            return super().__call__(request, datastore)
        except ValueError:  # "Total of weights must be greater than zero"
            images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
            return {"id": random.choice(images), "weight": 0}


def _batch_options(request: dict[str, Any]) -> dict[str, Any]:
    """The batch-infer request with its GPU options checked, and ``multi_gpu`` off where there is no GPU (MONAI
    Label's batch infer divides by the number of GPUs).

    Raises:
        ServingError: (422) ``gpus`` is not ``all`` or comma-separated GPU indices, or ``max_batch_size`` /
            ``max_workers`` is not a non-negative integer (naming it).
    """
    gpus = request.get("gpus")
    if gpus not in (None, "", "all") and not (isinstance(gpus, str) and re.fullmatch(r"\d{1,3}(,\d{1,3})*", gpus)):
        raise ServingError(422, f"parameter gpus: {gpus!r} is neither 'all' nor comma-separated GPU indices")
    for key in ("max_batch_size", "max_workers"):
        value = request.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ServingError(422, f"parameter {key}: {value!r} is not a non-negative integer")
    return request if torch.cuda.device_count() else {**request, "multi_gpu": False}


def _served(name: str, conf: dict[str, str]) -> ServedBundle:
    return ServedBundle(
        name,
        conf.get(f"{name}_bundle") or repository_bundle(name),
        model_path=conf.get(f"{name}_model") or None,
        overrides=parse_overrides(conf.get(f"{name}_config"), f"{name}_config"),
    )


def _http_error(err: Exception, what: str, names: dict[str, str] | None = None) -> HTTPException:
    """An HTTP error for ``err``; ``names`` maps server paths in its message to what the client asked for."""
    if isinstance(err, HTTPException):
        return err
    if isinstance(err, ServingError):
        message = err.message
        for path, name in sorted((names or {}).items(), key=lambda item: -len(item[0])):
            message = message.replace(path, name)
        return HTTPException(status_code=err.status, detail=message)
    if isinstance(err, MONAILabelException):
        return HTTPException(status_code=404, detail=f"{what}: {err.msg}")
    # an unexpected failure: its text may hold server paths; the server log has it in full
    return HTTPException(status_code=500, detail=f"{what}: internal error ({type(err).__name__}); see the server log")


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
        remote = studies.startswith(("http://", "https://"))
        self.work_dir = Path(conf.get("work_dir") or (Path(app_dir) / "work" if remote
                                                      else Path(studies) / ".modan_monai"))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="modan_monai",
            description="modan_monai segment / classify bundles on encoders pretrained with ModAn-MulSupCon, "
            "MLVICX or Adam-v2",
            version=modan_monai.__version__,
        )

    def init_datastore(self) -> Datastore:
        """The studies folder as a :class:`ConfinedDatastore`, or a DICOMweb ``--studies`` URL as a
        :class:`~modan_monai.apps.monailabel.lib.dicomweb.PacsDatastore` (cache in ``<work_dir>/dicomweb``;
        credentials from ``MONAI_LABEL_DICOMWEB_USERNAME`` / ``..._PASSWORD``).

        Raises:
            DICOMwebError: the DICOMweb server does not answer or refuses the credentials (naming the URL).
            ServingError: ``--conf dicomweb_filter`` is not a JSON object (naming it).
        """
        if self.studies.startswith(("http://", "https://")):
            url = self.studies.rstrip("/")
            session = dicomweb_session()
            check_dicomweb(url, session)
            search = json_object(self.conf.get("dicomweb_filter") or "{}", "--conf dicomweb_filter")
            install_seg_writer()  # output=dicom_seg without dcmqi
            return PacsDatastore(url, self.work_dir / "dicomweb", session, search)
        return ConfinedDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def _download_dcmqi_tools(self) -> None:
        """Nothing: MONAI Label downloads dcmqi from GitHub here; this app writes DICOM SEG with pydicom-seg
        (:func:`~modan_monai.apps.monailabel.lib.dicomweb.write_seg`) and never downloads at run time."""
        return None

    def _load_sessions(self, load: bool = False) -> None:
        """No sessions: they keep uploads in a folder outside the datastore (``/session`` answers 406)."""
        return None

    def _model(self, request: dict[str, Any], tasks: dict[str, Any], what: str) -> str:
        model = plain_name(request.get("model"), "model")
        if model not in tasks:
            raise ServingError(404, f"parameter model: no {what} model {model!r}; this app has {sorted(tasks)}")
        return model

    def init_infers(self) -> dict[str, InferTask]:
        """``segment`` (segmentation) and ``classify`` (classification), as configured."""
        infers: dict[str, InferTask] = {}
        if "segment" in self.served:
            infers["segment"] = SegmentationInfer(self.served["segment"], self.default_modality)
        if "classify" in self.served:
            infers["classify"] = ClassificationInfer(self.served["classify"], self.default_modality)
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        """``segment``: fine-tuning on the datastore's final labels; ``classify``: on the classes stored in the
        images' info (:mod:`~modan_monai.apps.monailabel.lib.train_classify`)."""
        trainers: dict[str, TrainTask] = {}
        if "segment" in self.served:
            trainers["segment"] = SegmentationTrain(self.served["segment"], self.work_dir / "train_segment",
                                                    self.default_modality)
        if "classify" in self.served:
            trainers["classify"] = ClassificationTrain(self.served["classify"], self.work_dir / "train_classify",
                                                       self.default_modality)
        return trainers

    def _epistemic_models(self) -> dict[str, EpistemicModel]:
        """What epistemic scoring needs of each served model (its first is the default model)."""
        models: dict[str, EpistemicModel] = {}
        if "segment" in self.served:
            # the segment bundle's channels are sigmoid outputs (its label_map_postprocessing thresholds them)
            models["segment"] = EpistemicModel(self.served["segment"], torch.sigmoid,
                                               lambda store: store.get_unlabeled_images(), True,
                                               self.default_modality)
        if "classify" in self.served:
            post = self.served["classify"].get("postprocessing")  # softmax or sigmoid, as the model was trained
            models["classify"] = EpistemicModel(self.served["classify"], lambda logits: post({"pred": logits})["pred"],
                                                unclassified_images, False, self.default_modality)
        return models

    def init_strategies(self) -> dict[str, Strategy]:
        """Next-sample strategies: ``random`` (MONAI Label's, newer images first), ``first`` and ``epistemic`` (the
        unlabelled image with the highest score of ``/scoring/epistemic``)."""
        return {"random": Random(), "first": First(), "epistemic": EpistemicStrategy(self._epistemic_models())}

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        """``epistemic``: each unlabelled image's variance over N passes of a served model, into its info
        (:mod:`~modan_monai.apps.monailabel.lib.epistemic`)."""
        return {"epistemic": EpistemicScoring(self._epistemic_models())}

    def async_scoring(self, method: str | None, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """MONAI Label's background scoring. MONAI Label also starts it with no method (every method) after the
        start, each next sample and each training round; this app does that only with ``--conf auto_scoring
        true`` (a scoring pass runs every unlabelled image N times: on a CPU server, ask for it with
        ``POST /scoring/epistemic``)."""
        if method is None and str(self.conf.get("auto_scoring", "false")).lower() not in ("true", "1", "yes"):
            return {}
        return super().async_scoring(method, params)

    def scoring(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's scoring; refused requests become HTTP errors (with ``run_sync=true``) naming the
        parameter."""
        try:
            method = plain_name(request.get("method"), "method", 422)
            if method not in self._scoring_methods:
                raise ServingError(404, f"parameter method: no scoring method {method!r}; this app has "
                                        f"{sorted(self._scoring_methods)}")
            return super().scoring(request, datastore)
        except Exception as err:  # noqa: BLE001
            logger.warning(f"scoring {request.get('method')!r} failed: {err}")
            raise _http_error(err, f"scoring {request.get('method')!r}") from err

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's infer on a datastore image id or the request's own upload, nothing else.

        A missing id, an id that is not a plain name and one whose file leads out of the datastore get the same
        404 naming the id; refused requests become HTTP errors naming the image (relative to the datastore) or
        the upload, and the model.
        """
        names: dict[str, str] = {}
        try:
            model = self._model(request, self._infers, "inference")
            check_infer_options(request, torch.cuda.device_count())
            store = datastore if datastore is not None else self.datastore()
            image = request.get("image")
            request = dict(request)
            if uploads.is_request_upload(image):
                names[image] = "upload" + "".join(Path(image).suffixes)
                request["save_label"] = False
            else:
                path = store.image_file(image, "image")
                names[path] = str(image)
                request["image"] = path  # an existing file: MONAI Label uses it as is
            result = super().infer(request, store)
            tag = request.get("label_tag") or DefaultLabelTag.ORIGINAL.value
            if request.get("save_label") and result.get("file") and os.path.isfile(result["file"]):
                plain_name(tag, "label_tag")
                result["label"] = store.save_label(str(image), result["file"], tag,
                                                   {"model": model, "params": result.get("params")})
                result["tag"] = tag
                if isinstance(store, PacsDatastore) and isinstance(result.get("params"), dict):
                    # the SEG series the label became in the image's study ("" when the label map was empty)
                    info = store.get_label_info(str(image), tag)
                    result["params"]["dicom_seg"] = {k: info.get(k, "") for k in ("StudyInstanceUID",
                                                                                  "SeriesInstanceUID")}
            elif request.get("save_label") and isinstance(self._infers[model], ClassificationInfer):
                # no label file: the prediction goes into the image's info (batch inference saves labels)
                plain_name(tag, "label_tag")
                params = result.get("params") or {}
                kept = ("label_type", "label", "score", "labels", "threshold", "probabilities", "model_mtime_ns")
                prediction = {"tag": tag, **{k: params[k] for k in kept if k in params}}
                store.update_image_info(str(image), {f"{model}_prediction": prediction})
                result["tag"] = tag
            return result
        except Exception as err:  # noqa: BLE001 - every failure is answered, the server keeps serving
            logger.warning(f"infer {request.get('model')!r} on {request.get('image')!r} failed: {err}")
            raise _http_error(err, f"model {request.get('model')!r}", names) from err

    def infer_wsi(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """No whole-slide inference: the served bundles take 2D images and volume slices (``/infer`` serves them)."""
        raise HTTPException(status_code=404, detail="parameter model: this app serves no whole-slide model; use "
                                                    "/infer/<model>")

    def batch_infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's batch infer over datastore ids (each through :meth:`infer`); listed ids must exist, the
        inference and GPU options are checked first (422 naming them), and a server without GPUs runs on the CPU.
        Segment label maps are saved under ``label_tag``; a classify prediction goes into the image's info
        (``classify_prediction``)."""
        try:
            self._model(request, self._infers, "inference")
            images = request.get("images", "all")
            if isinstance(images, list):
                store = datastore if datastore is not None else self.datastore()
                for image in images:
                    store.image_file(image, "images")
            elif images not in BATCH_IMAGES:
                raise ServingError(422, f"parameter images: {images!r} is neither a list of image ids nor one of "
                                        f"{list(BATCH_IMAGES)}")
            check_infer_options(request, torch.cuda.device_count())  # each image's request is built from it
            request = _batch_options(request)
        except ServingError as err:
            raise _http_error(err, "batch infer") from err
        return super().batch_infer(request, datastore)

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """MONAI Label's next sample, its ``path`` relative to the datastore."""
        plain_name(request.get("strategy") or "random", "strategy")
        result = super().next_sample(request)
        if result.get("path"):
            result["path"] = self.datastore().relative(result["path"])
        return result

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        """MONAI Label's train; refused rounds become HTTP errors (with ``run_sync=true``) naming the cause."""
        try:
            self._model(request, self._trainers, "training")
            return super().train(request)
        except Exception as err:  # noqa: BLE001
            logger.warning(f"train {request.get('model')!r} failed: {err}")
            raise _http_error(err, f"model {request.get('model')!r}") from err
