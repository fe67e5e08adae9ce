"""The load -> normalise -> resize chain shared by pretraining, classification, segmentation and embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import Resized, Transform
from monai.utils import ensure_tuple

from modan_monai.data.readers import NAN_POLICIES
from modan_monai.data.segmentation import LoadStructureMasksd
from modan_monai.data.slicing import SLICE_MODES

from .intensity import NormalizeByModalityd
from .io import LoadManifestImaged, RandSliced

__all__ = ["load_preprocess_transforms"]


def _spatial_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    sizes = tuple(int(s) for s in ensure_tuple(image_size))
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"image_size must be a positive int or a pair of them, got {image_size!r}")
    return sizes  # type: ignore[return-value]


def load_preprocess_transforms(
    keys: KeysCollection = "image",
    image_size: int | Sequence[int] = 64,
    *,
    vocabulary: Any = None,
    ct_window: Sequence[float] = (-1000.0, 1000.0),
    nan_policy: str = "error",
    fill_value: float = 0.0,
    modality_key: str = "modality",
    slice_mode: str = "all",
    structures: Sequence[str] | Mapping[str, Sequence[str] | str] | None = None,
    label_key: str = "label",
    resize_mode: str = "area",
) -> list[Transform]:
    """Transforms that turn a datalist row into ``[0, 1]`` images of one size: load -> normalise -> resize.

    The chain, in order:

    1. ``RandSliced()`` when ``slice_mode == "random"`` (rows from
       ``expand_volume_slices(mode="random")``: draws the volume slice; nothing after it is cached by a
       ``CacheDataset``);
    2. :class:`~modan_monai.transforms.LoadManifestImaged` (``keys``, ``nan_policy``, ``fill_value``): the
       reader chosen by suffix, channel-first ``MetaTensor`` in MONAI's ``(x, y)`` order, NaN/Inf pixels rejected
       or replaced;
    3. with ``structures``: :class:`~modan_monai.data.segmentation.LoadStructureMasksd` (masks under
       ``label_key``, checked against the image at full size);
    4. :class:`~modan_monai.transforms.NormalizeByModalityd` (``modality_key``, ``vocabulary``, ``ct_window``);
    5. ``monai.transforms.Resized`` to ``image_size`` (images ``resize_mode``, default area; masks nearest).

    The list is what ``pretrain``, ``classify``, ``segment`` and the embeddings put before their task transforms
    (labels, views, augmentation, ``EnsureTyped`` / ``SelectItemsd``). ``Resized`` is invertible, so ``Invertd``
    on a ``Compose`` that starts with this list maps predictions back to the input's size and affine.

    Args:
        keys: image keys (file paths in the row). With ``structures`` exactly one.
        image_size: output side ``S`` (or a ``(S0, S1)`` pair, in the images' ``(x, y)`` order).
        vocabulary: modality vocabulary for the normaliser (``MetadataVocabulary``, a JSON path or ``None``
            for the default one).
        ct_window: HU window ``(min, max)`` of CT images.
        nan_policy: ``"error"`` (default: NaN/Inf pixels raise a ``ValueError`` naming row and file) or
            ``"replace"`` (they become ``fill_value``; the number is logged).
        fill_value: replacement value for ``nan_policy="replace"``.
        modality_key: row key of the modality (falls back to the DICOM ``Modality`` tag).
        slice_mode: the ``mode`` the datalist was expanded with (``"all"``, ``"central"``, ``"random"``);
            ``"random"`` adds ``RandSliced`` first.
        structures: segmentation structures (see :func:`modan_monai.data.segmentation.normalise_structures`),
            or ``None`` for images only.
        label_key: key of the stacked masks (with ``structures``).
        resize_mode: interpolation of the images (``Resized`` ``mode``); masks always use ``"nearest"``.

    Returns:
        A list of MONAI transforms (compose it with ``monai.transforms.Compose`` or concatenate it with more).

    Raises:
        ValueError: an unknown ``nan_policy`` / ``slice_mode``, a bad ``image_size``, or ``structures`` with
            several image keys.

    Example:
        >>> from monai.transforms import Compose
        >>> pipe = Compose(load_preprocess_transforms("image", image_size=64))
        >>> [type(t).__name__ for t in pipe.transforms]
        ['LoadManifestImaged', 'NormalizeByModalityd', 'Resized']

        In bundle JSON::

            "load_transforms": {"_target_": "modan_monai.transforms.load_preprocess_transforms",
                                "image_size": "@image_size", "vocabulary": "@vocabulary", "ct_window": "@ct_window"}
    """
    image_keys = [str(k) for k in ensure_tuple(keys)]
    if not image_keys:
        raise ValueError("keys must name at least one image key")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    if slice_mode not in SLICE_MODES:
        raise ValueError(f"slice_mode must be one of {SLICE_MODES}, got {slice_mode!r}")
    size = _spatial_size(image_size)
    transforms: list[Transform] = []
    if slice_mode == "random":
        transforms.append(RandSliced())
    transforms.append(LoadManifestImaged(keys=image_keys, nan_policy=nan_policy, fill_value=fill_value))
    resize_keys, modes = list(image_keys), [resize_mode] * len(image_keys)
    if structures is not None:
        if len(image_keys) != 1:
            raise ValueError(f"structures need exactly one image key, got keys={image_keys}")
        transforms.append(LoadStructureMasksd(structures, image_key=image_keys[0], label_key=label_key))
        resize_keys.append(label_key)
        modes.append("nearest")
    lo, hi = (float(v) for v in ct_window)
    transforms += [
        NormalizeByModalityd(keys=image_keys, modality_key=modality_key, vocabulary=vocabulary, ct_window=(lo, hi)),
        Resized(keys=resize_keys, spatial_size=size, mode=modes),
    ]
    return transforms
