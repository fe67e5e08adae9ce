"""Metadata label transforms: multi-hot (modality ++ anatomy ++ ...) and combined-class labels.

Values come from the data dict (manifest columns); when a value is missing or empty and the image is a DICOM file,
the DICOM tag stored in the image's meta data (``Modality``, ``BodyPartExamined``...) is used instead.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from modan_monai.data.vocabulary import MetadataVocabulary, _is_empty

__all__ = ["DEFAULT_DICOM_TAGS", "CombinedClassd", "MultiHotLabeld"]

#: Vocabulary group -> DICOM attribute keyword consulted when the manifest value is empty.
DEFAULT_DICOM_TAGS: dict[str, str] = {
    "modality": "Modality",
    "anatomy": "BodyPartExamined",
    "view": "ViewPosition",
    "laterality": "ImageLaterality",
}


class _MetadataLabelBase(MapTransform):
    """Shared logic: resolve the vocabulary and collect one raw value per group (manifest first, then DICOM tags)."""

    def __init__(
        self,
        groups: Sequence[str] | None = None,
        vocabulary: MetadataVocabulary | str | Path | None = None,
        label_key: str = "label",
        image_key: str = "image",
        unknown: str | None = None,
        dicom_tags: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(vocabulary, MetadataVocabulary):
            vocab = vocabulary
        else:
            vocab = MetadataVocabulary.from_file(vocabulary, unknown=unknown or "error")
        self.vocabulary = vocab.subset(groups, unknown=unknown)
        super().__init__(keys=self.vocabulary.group_names, allow_missing_keys=True)
        self.label_key = label_key
        self.image_key = image_key
        self.dicom_tags = dict(DEFAULT_DICOM_TAGS if dicom_tags is None else dicom_tags)

    def _image_meta(self, data: Mapping[Hashable, Any]) -> Mapping[str, Any]:
        image = data.get(self.image_key)
        if isinstance(image, MetaTensor):
            return image.meta
        meta = data.get(f"{self.image_key}_meta_dict")
        return meta if isinstance(meta, Mapping) else {}

    def _values(self, data: Mapping[Hashable, Any]) -> tuple[dict[str, Any], str]:
        context = ""
        if data.get("manifest") is not None or data.get("row") is not None:
            context = f"manifest {data.get('manifest')} row {data.get('row')}"
        elif isinstance(data.get(self.image_key), (str, Path)):
            context = f"image {data[self.image_key]}"
        meta = self._image_meta(data)
        values: dict[str, Any] = {}
        for group in self.vocabulary.group_names:
            value = data.get(group)
            if _is_empty(value) and group in self.dicom_tags:
                tag_value = meta.get(self.dicom_tags[group])
                # Tags may arrive as 0-d arrays / tensors after collation or as bytes.
                if isinstance(tag_value, (np.ndarray, torch.Tensor)) and tag_value.ndim == 0:
                    tag_value = tag_value.item()
                if isinstance(tag_value, bytes):
                    tag_value = tag_value.decode(errors="replace")
                value = tag_value
            values[group] = value
        return values, context


class MultiHotLabeld(_MetadataLabelBase):
    """Write the multi-hot metadata label (one-hot per vocabulary group, concatenated) to ``label_key``.

    Args:
        groups: vocabulary groups to encode, in order; ``None`` uses every group of the vocabulary.
        vocabulary: a :class:`MetadataVocabulary`, a JSON file, or ``None`` for the packaged default.
        label_key: output key; receives a float32 tensor of shape ``(K,)``.
        image_key: key of the loaded image, whose MetaTensor meta supplies DICOM tags for empty values.
        unknown: override of the vocabulary's unknown policy (``"error"`` or ``"empty"``).
        dicom_tags: group -> DICOM keyword used as fallback (default :data:`DEFAULT_DICOM_TAGS`).

    Raises:
        ValueError: (on call) unknown or empty values with ``unknown="error"``; the message names the manifest and row.

    Example:
        >>> t = MultiHotLabeld(vocabulary=MetadataVocabulary({"modality": {"XR": ["CR"], "CT": []}}))
        >>> t({"modality": "CR"})["label"].tolist()
        [1.0, 0.0]
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        values, context = self._values(d)
        d[self.label_key] = torch.as_tensor(self.vocabulary.encode(values, context=context), dtype=torch.float32)
        return d


class CombinedClassd(_MetadataLabelBase):
    """Write the index of the (modality, anatomy, ...) combination as an int64 scalar tensor to ``label_key``.

    Used by the supervised cross-entropy baseline on combined classes; the number of classes is
    ``self.vocabulary.num_combined`` and the names are ``self.vocabulary.combined_class_names``.

    Args:
        groups: vocabulary groups to combine, in order; ``None`` uses every group of the vocabulary.
        vocabulary: a :class:`MetadataVocabulary`, a JSON file, or ``None`` for the packaged default.
        label_key: output key (default ``"class"``).
        image_key: key of the loaded image, whose MetaTensor meta supplies DICOM tags for empty values.
        unknown: override of the vocabulary's unknown policy; a combined class always needs every group.
        dicom_tags: group -> DICOM keyword used as fallback (default :data:`DEFAULT_DICOM_TAGS`).

    Raises:
        ValueError: (on call) unknown or empty values; the message names the manifest and row.

    Example:
        >>> vocab = MetadataVocabulary({"modality": {"XR": [], "CT": []}, "anatomy": {"chest": [], "head": []}})
        >>> int(CombinedClassd(vocabulary=vocab)({"modality": "CT", "anatomy": "head"})["class"])
        3
    """

    def __init__(
        self,
        groups: Sequence[str] | None = None,
        vocabulary: MetadataVocabulary | str | Path | None = None,
        label_key: str = "class",
        image_key: str = "image",
        unknown: str | None = None,
        dicom_tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(groups, vocabulary, label_key, image_key, unknown, dicom_tags)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        values, context = self._values(d)
        d[self.label_key] = torch.as_tensor(self.vocabulary.combined_index(values, context=context), dtype=torch.int64)
        return d
