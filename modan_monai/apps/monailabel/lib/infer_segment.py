"""MONAI Label segmentation task over the ``segment`` bundle: one label map per image, in the image's geometry.

Per row (a 2D image, or one slice of a NIfTI volume): the bundle's ``preprocessing`` (load -> normalise ->
resize, with metadata) -> ``network_def`` with the served weights through the bundle's ``inferer`` -> the
bundle's ``label_map_postprocessing`` (sigmoid -> resize back with ``Invertd`` -> threshold -> label map:
background 0, structure channel ``c`` as ``c + 1``, overlaps by ``label_order``). A volume's slices are stacked
back into a volume with the file's affine; one requested slice comes back as a one-slice volume with that slice's
affine, so it overlays the volume in a viewer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monailabel.interfaces.tasks.infer_v2 import InferType

from modan_monai._excepthook import root_cause
from modan_monai.apps.monailabel.lib.bundle import ServedBundle, ServingError
from modan_monai.apps.monailabel.lib.infer_task import BundleRowsInferTask
from modan_monai.apps.monailabel.lib.request import VOLUME_SUFFIXES, request_rows, volume_affine

__all__ = ["SegmentationInfer", "segment_rows"]

logger = logging.getLogger(__name__)


def segment_rows(
    rows: Sequence[dict[str, Any]],
    whole_volume: bool,
    *,
    preprocessing: Callable,
    postprocessing: Callable,
    inferer: Callable,
    network: torch.nn.Module,
    device: torch.device,
) -> MetaTensor:
    """Label map of a request's rows (see the module docstring).

    Returns:
        ``(x, y)`` uint8 for a 2D image, ``(x, y, slices)`` for a volume or ``(x, y, 1)`` for one slice, each a
        ``MetaTensor`` whose ``affine`` is the input's (2D images: the reader's 2D affine).
    """
    maps, affine = [], None
    for row in rows:
        d = preprocessing(dict(row))
        with torch.no_grad():
            logits = inferer(d["image"].to(device)[None], network)[0].cpu()
        label_map = postprocessing({"image": d["image"], "pred": logits})["pred"]
        maps.append(torch.as_tensor(label_map)[0].to(torch.uint8))
        if affine is None and isinstance(label_map, MetaTensor):
            affine = label_map.affine
    if whole_volume:
        return MetaTensor(torch.stack(maps, dim=-1), affine=torch.as_tensor(volume_affine(rows[0]["image"])))
    if "index" in rows[0]:
        return MetaTensor(maps[0][..., None], affine=affine)
    return MetaTensor(maps[0], affine=affine)


class SegmentationInfer(BundleRowsInferTask):
    """The ``segment`` bundle as a MONAI Label ``segmentation`` task (request parameters: see the base class).

    Args:
        bundle: the served segment bundle.
        default_modality: modality used when a request names none.
    """

    def __init__(self, bundle: ServedBundle, default_modality: str = "") -> None:
        super().__init__(bundle, InferType.SEGMENTATION, bundle.get("label_names"), "label_map_postprocessing",
                         default_modality)

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        """Segment ``data["image"]`` into ``data["pred"]`` (see :func:`segment_rows`)."""
        rows, whole = request_rows(data, self.default_modality)
        torch_device = torch.device(device)
        network = self.bundle.network(torch_device)
        try:
            pred = segment_rows(
                rows,
                whole,
                preprocessing=self._preprocessing,
                postprocessing=self._postprocessing,
                inferer=self._inferer,
                network=network,
                device=torch_device,
            )
        except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
            # MONAI's Compose wraps a transform's error in "applying transform ...": report the cause
            raise ServingError(422, f"model 'segment': image {data['image']}: {root_cause(err)}") from err
        data["pred"] = pred
        data["result"] = {**dict(data.get("result") or {}), **self.bundle.weights_info()}  # into the result JSON
        logger.info(f"segment: {data['image']} -> label map {tuple(pred.shape)}, values {np.unique(pred.numpy()).tolist()}")
        return data

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        """MONAI Label's writer with a uint8 label map: NIfTI for NIfTI inputs (same suffix), else PNG (lossless).

        A request's ``result_extension`` is kept.
        """
        if extension is None and not data.get("result_extension"):
            image = str(data.get("image_path") or data.get("image"))
            extension = next((s for s in VOLUME_SUFFIXES if image.lower().endswith(s)), ".png")
        return super().writer(data, extension=extension, dtype=dtype or np.uint8)
