"""Modality-aware intensity normalisation to ``[0, 1]``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.utils.type_conversion import convert_data_type, convert_to_dst_type

__all__ = ["NormalizeByModality", "NormalizeByModalityd"]


def _meta_of(img: Any) -> dict:
    return dict(img.meta) if isinstance(img, MetaTensor) else {}


class NormalizeByModality(Transform):
    """Scale an image to ``[0, 1]`` according to where its values come from.

    Rules, in order:

    1. Hounsfield units (``meta["intensity_unit"] == "HU"``, or ``modality`` in ``ct_modalities``
       for a DICOM/NIfTI source) -> clip to ``ct_window`` and scale linearly.
    2. 8-bit sources (``meta["source_dtype"] == "uint8"``, e.g. PNG/JPEG, MedMNIST, MRNet) -> ``/255``.
    3. Anything else -> percentile min-max (``percentiles`` of the image mapped to 0 and 1, clipped).

    A constant image is never NaN; it keeps the value its rule gives: under rule 3 (zero percentile range) it
    becomes all zeros, under rules 1 and 2 it is scaled like any other pixel (a constant 8-bit 128 gives
    128/255 = 0.502, a constant 0 HU gives 0.5 with the default window). ``modality`` is compared
    case-insensitively with ``ct_modalities``; canonicalising synonyms is the job of
    :class:`NormalizeByModalityd`.

    Args:
        ct_window: ``(min, max)`` in HU.
        ct_modalities: canonical modality names that hold HU.
        percentiles: lower and upper percentile (0-100) for rule 3.

    Example:
        >>> import numpy as np
        >>> norm = NormalizeByModality()
        >>> norm(np.array([[-2000.0, 0.0, 1000.0]]), "CT", {"intensity_unit": "HU"}).tolist()
        [[0.0, 0.5, 1.0]]
    """

    backend = [*ScaleIntensityRange.backend]

    def __init__(
        self,
        ct_window: tuple[float, float] = (-1000.0, 1000.0),
        ct_modalities: Sequence[str] = ("CT",),
        percentiles: tuple[float, float] = (0.5, 99.5),
    ) -> None:
        lo, hi = (float(v) for v in ct_window)
        if not hi > lo:
            raise ValueError(f"ct_window must be (min, max) with max > min, got {ct_window}")
        plo, phi = (float(v) for v in percentiles)
        if not 0.0 <= plo < phi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {percentiles}")
        self.ct_window = (lo, hi)
        self.ct_modalities = tuple(str(m).upper() for m in ct_modalities)
        self.percentiles = (plo, phi)
        self._ct = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)

    def rule(self, modality: str | None, meta: Mapping[str, Any] | None) -> str:
        """Name the rule that applies: ``"ct_window"``, ``"uint8"`` or ``"percentile"``.

        Args:
            modality: canonical modality (or ``None``).
            meta: image metadata (reader output).

        Returns:
            the rule name.
        """
        meta = meta or {}
        if str(meta.get("intensity_unit", "")).upper() == "HU":
            return "ct_window"
        is_ct = modality is not None and str(modality).upper() in self.ct_modalities
        if is_ct and str(meta.get("source_format", "")) in ("dicom", "nifti"):
            return "ct_window"
        if str(meta.get("source_dtype", "")) == "uint8":
            return "uint8"
        return "percentile"

    def __call__(
        self, img: NdarrayOrTensor, modality: str | None = None, meta: Mapping[str, Any] | None = None
    ) -> NdarrayOrTensor:
        """Normalise ``img``.

        Args:
            img: image (any shape), numpy or torch (a ``MetaTensor`` keeps its metadata).
            modality: canonical modality; ``None`` if unknown.
            meta: metadata; defaults to ``img.meta`` for a ``MetaTensor``.

        Returns:
            float32 image of the same type and shape with values in ``[0, 1]``.
        """
        if meta is None:
            meta = _meta_of(img)
        rule = self.rule(modality, meta)
        x, *_ = convert_data_type(img, torch.Tensor, dtype=torch.float32)
        x = x.as_tensor() if isinstance(x, MetaTensor) else x
        if rule == "ct_window":
            out = self._ct(x)
            out = out.as_tensor() if isinstance(out, MetaTensor) else out
        elif rule == "uint8":
            out = (x / 255.0).clamp_(0.0, 1.0)
        else:
            flat = x.reshape(-1)
            if flat.numel() > 16_000_000:  # torch.quantile has an input size limit
                flat = flat[:: flat.numel() // 16_000_000 + 1]
            q = torch.tensor([self.percentiles[0] / 100.0, self.percentiles[1] / 100.0], dtype=torch.float32)
            lo, hi = torch.quantile(flat, q).tolist()
            if not hi > lo:
                out = torch.zeros_like(x)
            else:
                out = ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)
        result, *_ = convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)
        return result


class NormalizeByModalityd(MapTransform):
    """Dictionary wrapper of :class:`NormalizeByModality` that resolves the modality first.

    The modality is ``data[modality_key]`` or, when that is missing/empty, the DICOM tag
    ``Modality`` in the image metadata; it is canonicalised with a
    :class:`~modan_monai.data.MetadataVocabulary` (``CT`` synonyms map to ``CT``). An unknown
    modality is treated as non-CT (no error): normalisation must not depend on the vocabulary
    being complete.

    Args:
        keys: image keys.
        modality_key: datalist key of the modality.
        vocabulary: a ``MetadataVocabulary``, a path to a vocabulary JSON, or ``None`` for the
            default vocabulary.
        ct_window: see :class:`NormalizeByModality`.
        ct_modalities: see :class:`NormalizeByModality`.
        percentiles: see :class:`NormalizeByModality`.
        allow_missing_keys: do not raise if a key is missing.

    Example:
        >>> norm = NormalizeByModalityd(keys="image")
        >>> out = norm({"image": img, "modality": "CT"})  # doctest: +SKIP
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality_key: str = "modality",
        vocabulary: Any = None,
        ct_window: tuple[float, float] = (-1000.0, 1000.0),
        ct_modalities: Sequence[str] = ("CT",),
        percentiles: tuple[float, float] = (0.5, 99.5),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        # imported here so that this module does not depend on the vocabulary module at import time
        from modan_monai.data.vocabulary import MetadataVocabulary

        if vocabulary is None or isinstance(vocabulary, (str, Path)):
            vocabulary = MetadataVocabulary.from_file(vocabulary, unknown="empty")
        self.vocabulary = vocabulary
        self.modality_key = modality_key
        self.normalizer = NormalizeByModality(ct_window=ct_window, ct_modalities=ct_modalities, percentiles=percentiles)

    def canonical_modality(self, value: Any) -> str | None:
        """Canonical modality of ``value`` or ``None`` (empty or unknown).

        Args:
            value: raw modality value.

        Returns:
            canonical name or ``None``.
        """
        if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
            return None
        try:
            return self.vocabulary.canonical("modality", str(value))
        except ValueError:  # a vocabulary built with unknown="error": unknown means "not CT" here
            return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Normalise every key.

        Args:
            data: dictionary with images (``MetaTensor`` from :class:`LoadManifestImaged`).

        Returns:
            a new dictionary with normalised images.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = _meta_of(img) or dict(d.get(f"{key}_meta_dict", {}) or {})
            modality = self.canonical_modality(d.get(self.modality_key))
            if modality is None:
                modality = self.canonical_modality(meta.get("Modality"))
            d[key] = self.normalizer(img, modality, meta)
        return d
