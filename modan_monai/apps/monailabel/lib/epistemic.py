"""Epistemic active learning, as MONAI Label's radiology app offers it: a scoring task and a next-sample strategy.

:class:`EpistemicScoring` (the app's ``/scoring/epistemic``) runs the served model ``N`` times on each image the
model has no label for and stores the spread of its outputs in the image's info, as MONAI Label's
``EpistemicScoring`` does (``monailabel.tasks.scoring.epistemic_v2``): ``epistemic_<model>`` (the score),
``epistemic_<model>_ts`` (the served weights' ``mtime_ns``: an image already scored with these weights is skipped,
so scoring again after a training round rescores everything) and ``epistemic_<model>_method``. The ``N`` passes:

- **Monte-Carlo dropout** when the served network has a dropout layer with ``p > 0`` (a copy of it, dropout
  layers in training mode, everything else, BatchNorm included, in eval mode);
- otherwise **test-time augmentation** (this project's bundles train without dropout: ``dropout`` 0 in the
  classify bundle, none in the segment network): pass 0 is the image as served; pass ``k`` flips it
  (left-right, up-down or both, in turn) and scales / shifts its normalised intensities by up to 5 % (seeded by
  ``k``: the same image and weights give the same score); a segmentation is flipped back before comparing.

The score is MONAI Label's ``variance_volume`` reduction: the variance over the passes of each output probability
(the segment model's sigmoid channels per pixel, the classify model's class probabilities), summed over the
channels, averaged over the pixels (and over the slices of a volume). :class:`EpistemicStrategy` (the app's
``epistemic`` next-sample strategy) answers the unlabelled image with the highest score.

Request parameters (each checked, 422 naming it): ``model`` (a served model; scoring without it scores each
model, the strategy without it ranks by the app's first model's scores),
``simulation_size`` (``N``, MONAI Label's name, 2-64, default 5), ``max_samples`` (images scored per call, 0 = all,
default 0). Nothing here writes outside the datastore's image info.

What is MONAI Label's and what is not: the tasks are its ``ScoringMethod`` / ``Strategy``, run by its
``/scoring`` and ``/activelearning`` endpoints (in the server, or as its background task with the scores read back
from the datastore file), and the score keys, the skip rule and the reduction follow its ``EpistemicScoring``.
Its classes themselves do not fit these bundles: ``EpistemicScoring`` runs an infer task end to end (writer
included) and compares its post-processed output, and both it and the ``Epistemic`` strategy take "unlabelled"
as "no final label map", while a classify model's labels are classes in the image info; its ``Epistemic``
strategy also rotates among the top images by when they were last served, where this one answers the highest.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from modan_monai._excepthook import root_cause
from modan_monai.apps.monailabel.lib.bundle import ServedBundle, ServingError
from modan_monai.apps.monailabel.lib.request import request_rows
from modan_monai.apps.monailabel.lib.safety import number, plain_name, shown

__all__ = [
    "EpistemicModel",
    "EpistemicScoring",
    "EpistemicStrategy",
    "SCORING_LIMITS",
    "has_dropout",
    "pass_outputs",
    "score_keys",
    "scoring_params",
    "variance_score",
]

logger = logging.getLogger(__name__)

#: request parameters of a scoring call: ``(default, low, high)``, integers
SCORING_LIMITS: dict[str, tuple[int, int, int]] = {"simulation_size": (5, 2, 64), "max_samples": (0, 0, 100_000)}
#: the largest intensity change of a test-time-augmentation pass (relative scale and shift of the normalised image)
TTA_INTENSITY = 0.05


@dataclass
class EpistemicModel:
    """What scoring needs of a served model.

    Args:
        bundle: the served bundle (``preprocessing``, ``inferer`` and the network with the served weights).
        probabilities: the model's logits of one row (``(C, ...)``) -> its output probabilities.
        unlabelled: the datastore's images this model has no label for.
        spatial_output: the output has the image's spatial axes (segmentation: flipped back after a flipped pass).
        default_modality: modality when the request names none.
    """

    bundle: ServedBundle
    probabilities: Callable[[torch.Tensor], torch.Tensor]
    unlabelled: Callable[[Datastore], Sequence[str]]
    spatial_output: bool
    default_modality: str = ""


def score_keys(model: str) -> dict[str, str]:
    """The image-info keys of ``model``'s score: ``{"score", "ts", "method"}`` -> key."""
    return {"score": f"epistemic_{model}", "ts": f"epistemic_{model}_ts", "method": f"epistemic_{model}_method"}


def has_dropout(network: torch.nn.Module) -> bool:
    """Whether ``network`` has a dropout layer with ``p > 0`` (then the passes are Monte-Carlo dropout)."""
    return any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in network.modules())


def _int_param(request: Mapping[str, Any], key: str) -> int:
    default, low, high = SCORING_LIMITS[key]
    value = request.get(key, default)
    given = number(value)
    if given is None or not math.isfinite(given) or given != int(given) or not low <= given <= high:
        raise ServingError(422, f"parameter {key}: {shown(value)} is not an integer in [{low}, {high}]")
    return int(given)


def scoring_params(request: Mapping[str, Any], models: Sequence[str]) -> tuple[list[str], int, int]:
    """``(models, simulation_size, max_samples)`` of a scoring request, each checked; no ``model``: all of them.

    Raises:
        ServingError: (422) ``model`` is not a plain name or not a served model, a count is not an integer in
            its :data:`SCORING_LIMITS` range (naming the parameter).
    """
    model = request.get("model")
    if model is not None and model != "":
        model = plain_name(model, "model", 422)
        if model not in models:
            raise ServingError(422, f"parameter model: {model!r} is not a model of this app; scoring takes "
                                    f"{list(models)}")
    return ([model] if model else list(models)), _int_param(request, "simulation_size"), _int_param(request,
                                                                                                   "max_samples")


def _augment(image: torch.Tensor, k: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pass ``k``'s input (``k`` 0: as is) and the spatial axes it flipped; ``image`` is ``(1, C, *spatial)``."""
    if k == 0:
        return image, ()
    spatial = tuple(range(2, image.ndim))
    flips = [spatial[-1:], spatial[-2:-1], spatial[-2:]][(k - 1) % 3]
    generator = torch.Generator().manual_seed(k)
    scale, shift = (torch.rand(2, generator=generator) * 2 - 1) * TTA_INTENSITY
    return torch.flip(image, flips) * (1 + float(scale)) + float(shift), flips


def pass_outputs(
    image: torch.Tensor,
    network: torch.nn.Module,
    inferer: Callable,
    probabilities: Callable[[torch.Tensor], torch.Tensor],
    passes: int,
    *,
    spatial_output: bool,
    dropout: bool,
) -> torch.Tensor:
    """The model's output probabilities of ``passes`` passes over one preprocessed row.

    Args:
        image: the preprocessed row, ``(C, *spatial)``.
        network: the served network (eval mode; not changed: Monte-Carlo dropout runs a copy).
        inferer: the bundle's inferer (``inferer(batch, network)``).
        probabilities: logits ``(C, ...)`` -> probabilities.
        passes: the number of passes.
        spatial_output: flip a flipped pass's output back (segmentation).
        dropout: Monte-Carlo dropout (else test-time augmentation; see the module docstring).

    Returns:
        ``(passes, C, ...)``.
    """
    if dropout:
        network = copy.deepcopy(network).eval()
        for module in network.modules():
            if isinstance(module, torch.nn.modules.dropout._DropoutNd):
                module.train()
    device = next(network.parameters()).device
    batch = torch.as_tensor(image).float()[None].to(device)
    outputs = []
    with torch.no_grad():
        for k in range(passes):
            x, flips = (batch, ()) if dropout else _augment(batch, k)
            logits = inferer(x, network)
            if flips and spatial_output:
                logits = torch.flip(logits, flips)
            outputs.append(torch.as_tensor(probabilities(logits[0].cpu())).float())
    return torch.stack(outputs)


def variance_score(outputs: torch.Tensor) -> float:
    """MONAI Label's ``variance_volume`` reduction of ``(passes, C, ...)`` probabilities: the variance over the
    passes, summed over the channels, averaged over the remaining (spatial) axes."""
    variance = torch.var(outputs.double(), dim=0, unbiased=False).sum(dim=0)
    return float(variance.mean())


class EpistemicScoring(ScoringMethod):
    """Score the images each served model has no label for (see the module docstring).

    Args:
        models: the scorable models by name (the first is the default of the ``model`` parameter).

    Example:
        >>> scoring = EpistemicScoring({"segment": segment_model})  # doctest: +SKIP
        >>> scoring({"model": "segment", "simulation_size": 4}, datastore)  # doctest: +SKIP
        {'segment': {'method': 'tta', 'simulation_size': 4, 'total': 3, 'skipped': 0, 'executed': 3, ...}}
    """

    def __init__(self, models: Mapping[str, EpistemicModel]) -> None:
        super().__init__("Epistemic uncertainty of the unlabelled images: the variance of N passes (Monte-Carlo "
                         "dropout, else test-time augmentation) of a served model")
        self.models = dict(models)
        self._transforms: dict[str, tuple[Callable, Callable]] = {}

    def info(self) -> dict[str, Any]:
        """MONAI Label's info with the request parameters and their defaults."""
        return {**super().info(), "models": list(self.models),
                "config": {key: default for key, (default, _, _) in SCORING_LIMITS.items()}}

    def score_image(
        self, model: str, image_id: str, datastore: Datastore, network: torch.nn.Module, passes: int
    ) -> float:
        """The score of one image (the mean over a volume's slices) with the served ``network``.

        Raises:
            ServingError: (422) the image cannot be read or run (naming the model and the image).
        """
        spec = self.models[model]
        if model not in self._transforms:
            self._transforms[model] = (spec.bundle.get("preprocessing"), spec.bundle.get("inferer"))
        preprocessing, inferer = self._transforms[model]
        dropout = has_dropout(network)
        scores = []
        try:
            rows, _ = request_rows({"image": datastore.get_image_uri(image_id)}, spec.default_modality)
            for row in rows:
                image = preprocessing(dict(row))["image"]
                outputs = pass_outputs(image, network, inferer, spec.probabilities, passes,
                                       spatial_output=spec.spatial_output, dropout=dropout)
                scores.append(variance_score(outputs))
        except ServingError as err:
            raise ServingError(err.status, f"model {model!r}: image {image_id!r}: {err.message}") from err
        except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
            raise ServingError(422, f"model {model!r}: image {image_id!r}: {root_cause(err)}") from err
        return sum(scores) / len(scores)

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Score the unlabelled images of the requested model (default: of each model) not yet scored with the
        served weights.

        Returns:
            ``{model: {"method", "simulation_size", "total", "skipped", "executed", "failed", "latency"}}``:
            ``failed`` maps each image that could not be scored to the reason (also logged).

        Raises:
            ServingError: a bad parameter (422, naming it); a model has no weights file (404).
        """
        models, passes, max_samples = scoring_params(request, list(self.models))
        return {model: self.score_model(model, datastore, passes, max_samples) for model in models}

    def score_model(self, model: str, datastore: Datastore, passes: int, max_samples: int) -> dict[str, Any]:
        """Score ``model``'s unlabelled images (see :meth:`__call__`); returns its summary."""
        spec = self.models[model]
        network = spec.bundle.network(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        method = "dropout" if has_dropout(network) else "tta"
        stamp = spec.bundle.model_path.stat().st_mtime_ns
        keys = score_keys(model)
        start = time.time()
        images = sorted(spec.unlabelled(datastore))
        pending = [i for i in images if (datastore.get_image_info(i) or {}).get(keys["ts"]) != stamp]
        pending = pending[:max_samples] if max_samples else pending
        failed: dict[str, str] = {}
        for image_id in pending:
            try:
                score = self.score_image(model, image_id, datastore, network, passes)
            except ServingError as err:
                logger.warning(f"epistemic scoring: {err.message}")
                failed[image_id] = err.message
                continue
            datastore.update_image_info(image_id, {keys["score"]: score, keys["ts"]: stamp, keys["method"]: method})
            logger.info(f"epistemic scoring: {model} {image_id} -> {score:.6g} ({method}, {passes} passes)")
        summary = {"method": method, "simulation_size": passes, "total": len(images),
                   "skipped": len(images) - len(pending), "executed": len(pending) - len(failed), "failed": failed,
                   "latency": round(time.time() - start, 3)}
        logger.info(f"epistemic scoring {model}: {summary}")
        return summary


class EpistemicStrategy(Strategy):
    """Next sample: the image the model has no label for with the highest epistemic score.

    Request parameter ``model`` (default the first of ``models``) picks whose scores rank (each model's
    ``unlabelled`` images: for ``segment`` those without a final label map, for ``classify`` those without a
    class). Ties go to the first image id. Images not scored yet rank after every scored one; when none of the
    candidates is scored the answer is a 409 asking for ``POST /scoring/epistemic`` first.

    Args:
        models: the scorable models by name.
    """

    def __init__(self, models: Mapping[str, EpistemicModel]) -> None:
        super().__init__("The unlabelled image with the highest epistemic score (POST /scoring/epistemic first)")
        self.models = dict(models)

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        """``{"id", "epistemic_<model>", "model"}`` of the chosen image, or ``None`` when every image is labelled.

        Raises:
            ServingError: (422) ``model`` is not a served model (naming the parameter); (409) no candidate has a
                score yet.
        """
        model = plain_name(request.get("model") or next(iter(self.models)), "model", 422)
        if model not in self.models:
            raise ServingError(422, f"parameter model: {model!r} is not a model of this app; the epistemic strategy "
                                    f"takes {list(self.models)}")
        key = score_keys(model)["score"]
        images = sorted(self.models[model].unlabelled(datastore))
        if not images:
            return None
        scores = {i: (datastore.get_image_info(i) or {}).get(key) for i in images}
        scored = {i: float(s) for i, s in scores.items() if isinstance(s, (int, float)) and not isinstance(s, bool)}
        if not scored:
            raise ServingError(409, f"no epistemic score of model {model!r} for any of the {len(images)} unlabelled "
                                    f"image(s): run POST /scoring/epistemic with {{\"model\": \"{model}\"}} first")
        best = max(sorted(scored), key=lambda i: scored[i])  # max keeps the first id among equal scores
        logger.info(f"epistemic strategy: {model} -> {best} ({key}={scored[best]:.6g}; {len(scored)} of "
                    f"{len(images)} unlabelled images scored)")
        return {"id": best, key: scored[best], "model": model}
