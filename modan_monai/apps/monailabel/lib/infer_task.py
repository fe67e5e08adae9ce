"""The MONAI Label inference task shape both served bundles share.

MONAI Label's ``BasicInferTask`` runs pre-transforms -> network -> post-transforms on one image. The bundles
work per datalist row (a 2D image or one volume slice), so the tasks run the bundle's own ``preprocessing``,
``inferer`` and post-processing inside :meth:`run_inferer` and give MONAI Label empty pre/post lists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from modan_monai.apps.monailabel.lib.bundle import ServedBundle

__all__ = ["BundleRowsInferTask"]


class BundleRowsInferTask(BasicInferTask):
    """A served bundle as a MONAI Label task (subclasses implement ``run_inferer`` and, if needed, ``writer``).

    Request parameters (besides MONAI Label's): ``slice`` (an index into a NIfTI volume), ``modality`` (e.g.
    ``CT`` for Hounsfield windowing; default ``--conf modality``).

    Args:
        bundle: the served bundle.
        type: MONAI Label task type.
        labels: ``{label name: value}`` reported in ``/info/``.
        postprocessing_id: the inference-config id of the post-processing the task runs.
        default_modality: modality used when a request names none.
        config: further request parameters and their defaults (listed in ``/info/``).
    """

    def __init__(
        self,
        bundle: ServedBundle,
        type: InferType,
        labels: Mapping[str, int],
        postprocessing_id: str,
        default_modality: str = "",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bundle = bundle
        self.default_modality = default_modality
        super().__init__(
            path=str(bundle.model_path),
            network=None,
            type=type,
            labels=dict(labels),
            dimension=2,
            description=bundle.description(),
            config={"slice": -1, "modality": default_modality, **dict(config or {})},
        )
        # built once: the transforms are stateless between requests
        self._preprocessing = bundle.get("preprocessing")
        self._postprocessing = bundle.get(postprocessing_id)
        self._inferer = bundle.get("inferer")

    def is_valid(self) -> bool:
        """Always listed: a missing weights file is reported per request, naming the model and the path."""
        return True

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        """None: :meth:`run_inferer` runs the bundle's preprocessing per row."""
        return []

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        """None: :meth:`run_inferer` runs the bundle's post-processing per row."""
        return []
