"""Segmentation data: structure masks from manifest ``mask_<name>`` columns, transforms and few-shot subsets.

Masks are *multi-label*: one binary channel per structure, because anatomical structures overlap (in JSRT/SCR the
clavicles lie over the lungs), which a label map (one class per pixel) cannot represent. The matching loss is a
sigmoid Dice-CE (``monai.losses.DiceCELoss(sigmoid=True)``) and Dice is reported per channel.

A structure is read from the manifest column ``mask_<name>`` (e.g. ``mask_heart`` of
``data_manifests/jsrt.py``); several columns can be merged into one channel (their union), e.g.
``{"heart": ["heart"], "lungs": ["left_lung", "right_lung"], "clavicles": ["left_clavicle", "right_clavicle"]}``
gives the three structures of the Adam-v2 JSRT task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureTyped, MapTransform, RandAffined, SelectItemsd

from modan_monai.data.readers import read_image_row, row_context

__all__ = [
    "DEFAULT_MASK_VALUES",
    "LoadStructureMasksd",
    "normalise_structures",
    "segmentation_transforms",
    "select_training_subset",
]

#: accepted encodings of a binary mask: {0, 1} or {0, 255} (8-bit PNG masks such as SCR's)
DEFAULT_MASK_VALUES: tuple[tuple[float, ...], ...] = ((0.0, 1.0), (0.0, 255.0))
_MASK_PREFIX = "mask_"


def normalise_structures(structures: Sequence[str] | Mapping[str, Sequence[str] | str]) -> dict[str, list[str]]:
    """Output channel name -> manifest structures merged into it.

    Args:
        structures: a list of structure names (one channel each, read from ``mask_<name>``), or a mapping from
            channel name to the structure(s) whose union forms the channel.

    Returns:
        An ordered dict ``{channel: [structure, ...]}``.

    Raises:
        ValueError: when empty, a name is empty or repeated.

    Example:
        >>> normalise_structures(["heart", "left_lung"])
        {'heart': ['heart'], 'left_lung': ['left_lung']}
        >>> normalise_structures({"lungs": ["left_lung", "right_lung"]})
        {'lungs': ['left_lung', 'right_lung']}
    """
    if isinstance(structures, str):
        structures = [structures]
    if isinstance(structures, Mapping):
        spec = {str(k): [v] if isinstance(v, str) else [str(s) for s in v] for k, v in structures.items()}
    else:
        names = [str(s) for s in structures]
        duplicated = sorted({s for s in names if names.count(s) > 1})
        if duplicated:
            raise ValueError(f"structures are repeated: {duplicated}.")
        spec = {s: [s] for s in names}
    if not spec:
        raise ValueError("structures is empty: name at least one mask_<name> column.")
    for channel, sources in spec.items():
        if not channel.strip() or not sources or any(not s.strip() for s in sources):
            raise ValueError(f"structure {channel!r} -> {sources!r}: names must be non-empty.")
    return spec


def _size_text(shape: Sequence[int]) -> str:
    """``"W x H"`` for a 2D array in MONAI's ``(x, y)`` order, the shape tuple otherwise."""
    shape = tuple(int(s) for s in shape)
    return f"{shape[0]}x{shape[1]} (width x height)" if len(shape) == 2 else str(shape)


def _path_of(image: Any, data: Mapping[Hashable, Any], image_key: str) -> str:
    meta = getattr(image, "meta", None) or {}
    name = meta.get("filename_or_obj") or data.get(f"{image_key}_path") or data.get("image_path")
    return str(name) if name else "<image without file name>"


class LoadStructureMasksd(MapTransform):
    """Read the masks of the selected structures, validate them against the image and stack them as channels.

    Runs after the image is loaded (``LoadManifestImaged``) and before any resizing. For every channel the masks
    of its structures (manifest columns ``mask_<structure>``; the row's ``key``/``index`` select a slice as for
    the image; the same reader and the same ``(x, y)`` axis order) are read, checked and merged (union), giving a
    float ``(C, W, H)`` tensor of 0/1 under ``label_key`` carrying the image's metadata (affine included, so that
    spatial transforms, ``Invertd`` and ``SaveImaged`` treat image and label alike). A mask with NaN/Inf values
    raises a ``ValueError`` naming the row and the mask file.

    Args:
        structures: see :func:`normalise_structures`.
        image_key: key of the loaded image (``(1, W, H)``).
        label_key: key the stacked masks are written to.
        mask_values: accepted value sets of a mask file (default ``{0, 1}`` or ``{0, 255}``); a mask is
            valid when its distinct values are a subset of one of them.
        allow_missing_keys: passed to ``MapTransform``.

    Raises:
        ValueError: naming the image file and the mask file, when a mask's size differs from the image's or its
            values are not the declared labels; naming the row and column when a mask cell is missing or empty.

    Example:
        >>> load = LoadStructureMasksd({"lungs": ["left_lung", "right_lung"], "heart": ["heart"]})
        >>> out = load(row_with_loaded_image)  # doctest: +SKIP
        >>> out["label"].shape  # doctest: +SKIP
        torch.Size([2, 1024, 1024])
    """

    def __init__(
        self,
        structures: Sequence[str] | Mapping[str, Sequence[str] | str],
        image_key: str = "image",
        label_key: str = "label",
        mask_values: Sequence[Sequence[float]] = DEFAULT_MASK_VALUES,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys=label_key, allow_missing_keys=allow_missing_keys)
        self.structures = normalise_structures(structures)
        self.image_key = image_key
        self.label_key = label_key
        self.mask_values = [frozenset(float(v) for v in values) for values in mask_values]

    def _read_mask(self, data: Mapping[Hashable, Any], structure: str, image_path: str, shape: tuple) -> np.ndarray:
        column = f"{_MASK_PREFIX}{structure}"
        path = data.get(column)
        if path is None or (isinstance(path, float) and math.isnan(path)) or not str(path).strip():
            present = sorted(str(k) for k in data if str(k).startswith(_MASK_PREFIX))
            raise ValueError(
                f"{row_context(data)}image {image_path}: no mask for structure {structure!r} (column {column!r} is "
                f"missing or empty; mask columns present: {present})."
            )
        row = {"image": str(path), "key": data.get("key"), "index": data.get("index"),
               "manifest": data.get("manifest"), "row": data.get("row")}
        mask, _ = read_image_row(row)
        if tuple(mask.shape) != shape:
            raise ValueError(
                f"{row_context(data)}mask {path} ({structure}) has size {_size_text(mask.shape)} but image "
                f"{image_path} has size {_size_text(shape)}: a mask must have its image's size."
            )
        values = frozenset(np.unique(mask).astype(float).tolist())
        if not any(values <= allowed for allowed in self.mask_values):
            shown = sorted(values)[:10]
            more = f" (+{len(values) - 10} more)" if len(values) > 10 else ""
            declared = " or ".join("{" + ", ".join(f"{v:g}" for v in sorted(a)) + "}" for a in self.mask_values)
            raise ValueError(
                f"{row_context(data)}mask {path} ({structure}) of image {image_path} has values {shown}{more}, "
                f"not the declared labels {declared}."
            )
        return mask > 0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add ``label_key``: the ``(C, H, W)`` float 0/1 masks of the structures.

        Args:
            data: datalist row with the image already loaded under ``image_key``.

        Returns:
            A new dictionary with the stacked masks.
        """
        d = dict(data)
        if self.image_key not in d:
            raise ValueError(f"{row_context(d)}LoadStructureMasksd needs the loaded image under {self.image_key!r}.")
        image = d[self.image_key]
        image_path = _path_of(image, d, self.image_key)
        shape = tuple(int(s) for s in image.shape[1:])
        channels = []
        for sources in self.structures.values():
            merged = np.zeros(shape, dtype=bool)
            for structure in sources:
                merged |= self._read_mask(d, structure, image_path, shape)
            channels.append(merged)
        label = torch.from_numpy(np.stack(channels).astype(np.float32))
        meta = dict(getattr(image, "meta", {}) or {})
        d[self.label_key] = MetaTensor(label, meta=meta)
        return d


def segmentation_transforms(
    structures: Sequence[str] | Mapping[str, Sequence[str] | str] | None,
    image_size: int = 128,
    augment: bool = False,
    *,
    label_key: str = "label",
    keep_keys: Sequence[str] | None = (),
    ct_window: Sequence[float] = (-1000.0, 1000.0),
    vocabulary: Any = None,
    track_meta: bool = False,
    nan_policy: str = "error",
    fill_value: float = 0.0,
) -> Compose:
    """Load, validate, normalise and resize an image and its structure masks.

    :func:`modan_monai.transforms.load_preprocess_transforms` with ``structures`` (``LoadManifestImaged`` ->
    :class:`LoadStructureMasksd`, size and value checks at the original size -> ``NormalizeByModalityd`` ([0, 1])
    -> ``Resized``, image: area, masks: nearest) -> when ``augment``: ``RandAffined`` on both (p=0.5, rotation
    +-10 degrees, scale +-10%; no flip, which would swap left and right structures) -> ``EnsureTyped`` ->
    ``SelectItemsd``.

    Args:
        structures: see :func:`normalise_structures`; ``None`` for unlabelled data (inference).
        image_size: output side ``S``.
        augment: add the random affine (training).
        label_key: key of the ``(C, S, S)`` masks.
        keep_keys: other row keys to keep (e.g. ``"filename"``); ``None`` keeps every key of the row (no
            ``SelectItemsd``: a serving request such as MONAI Label's keeps the keys it passes).
        ct_window: HU window of CT images.
        vocabulary: modality vocabulary (default vocabulary when ``None``).
        track_meta: keep ``MetaTensor`` metadata (inference, to invert the resize with ``Invertd`` and write
            masks in the input's size and affine with ``SaveImaged``).
        nan_policy: ``"error"`` or ``"replace"`` for NaN/Inf pixels (see ``LoadManifestImaged``).
        fill_value: replacement value for ``nan_policy="replace"``.

    Returns:
        A MONAI ``Compose``.
    """
    from modan_monai.transforms.presets import load_preprocess_transforms

    labelled = structures is not None
    keys = ["image", label_key] if labelled else ["image"]
    transforms: list[Callable] = list(
        load_preprocess_transforms(
            "image",
            image_size=image_size,
            vocabulary=vocabulary,
            ct_window=ct_window,
            nan_policy=nan_policy,
            fill_value=fill_value,
            structures=structures,
            label_key=label_key,
        )
    )
    if augment:
        transforms.append(
            RandAffined(
                keys=keys,
                prob=0.5,
                rotate_range=(math.radians(10.0),),
                scale_range=(0.1, 0.1),
                mode=["bilinear", "nearest"][: len(keys)],
                padding_mode="zeros",
            )
        )
    transforms.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=track_meta))
    if keep_keys is not None:
        transforms.append(SelectItemsd(keys=[*keys, *keep_keys], allow_missing_keys=True))
    return Compose(transforms)


def select_training_subset(
    datalist: Sequence[Mapping[str, Any]],
    n: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    group_key: str = "case_id",
) -> list[dict[str, Any]]:
    """A reproducible few-shot (``n`` cases) or label-fraction subset of a training datalist.

    Rows are grouped by ``group_key`` (the slices of one case stay together); the sorted group keys are shuffled
    with ``numpy.random.default_rng(seed)`` and the first ``n`` groups (or ``round(fraction * groups)``, at least
    one) are kept. The result depends only on the set of rows and the seed, not on their order, and subsets of
    one seed are nested (the 3-image set is inside the 6-image set, ...). For 2D datasets with one image per case
    (JSRT), ``n`` is the number of images.

    Args:
        datalist: training rows.
        n: number of cases (few-shot: 3, 6, 12, 24), or ``None``.
        fraction: fraction of the cases in ``(0, 1]``, or ``None``; at most one of ``n``/``fraction``.
        seed: selection seed.
        group_key: the grouping column; rows without it form their own group (keyed by ``row``/position).

    Returns:
        The selected rows (copies) in their original order; all rows when both ``n`` and ``fraction`` are None.

    Raises:
        ValueError: when both are given, ``n`` < 1 or larger than the number of cases, or ``fraction`` is not in
            ``(0, 1]``.

    Example:
        >>> rows = [{"case_id": f"c{i}"} for i in range(10)]
        >>> len(select_training_subset(rows, n=3, seed=1))
        3
    """
    if n is not None and fraction is not None:
        raise ValueError(f"give the few-shot size n or the label fraction, not both (n={n}, fraction={fraction}).")
    rows = [dict(r) for r in datalist]
    if n is None and fraction is None:
        return rows
    groups: dict[str, list[int]] = {}
    for position, row in enumerate(rows):
        key = row.get(group_key)
        key = f"__row_{row.get('row', position)}" if key is None else str(key)
        groups.setdefault(key, []).append(position)
    names = sorted(groups)
    if n is not None:
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"few-shot size n must be a positive integer, got {n!r}.")
        k = int(n)
        if k > len(names):
            raise ValueError(
                f"few-shot size n={k} exceeds the {len(names)} training cases (grouped by {group_key!r}, "
                f"{len(rows)} rows)."
            )
    else:
        if not 0.0 < float(fraction) <= 1.0:  # type: ignore[arg-type]
            raise ValueError(f"label fraction must be in (0, 1], got {fraction!r}.")
        k = max(1, round(float(fraction) * len(names)))  # type: ignore[arg-type]
    order = np.random.default_rng(seed).permutation(len(names))
    chosen = {p for i in order[:k] for p in groups[names[i]]}
    return [row for position, row in enumerate(rows) if position in chosen]
