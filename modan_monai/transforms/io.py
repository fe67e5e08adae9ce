"""Loading transforms for manifest datalists: :class:`LoadManifestImaged` and :class:`RandSliced`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform

from modan_monai.data.readers import NAN_POLICIES, read_image_row, row_context

__all__ = ["LoadManifestImaged", "RandSliced"]


class LoadManifestImaged(MapTransform):
    """Replace file paths in a datalist row with channel-first float32 ``MetaTensor`` images.

    Uses :func:`modan_monai.data.readers.read_image_row` (one MONAI ``ImageReader`` per format, chosen by
    suffix), so the row's ``key`` (npz array name) and ``index`` (npz position / volume slice / DICOM frame /
    TIFF page) select what is read; they apply to every key in ``keys`` (e.g. an image and its mask file). The
    other keys of the row are kept. Arrays are in MONAI's spatial order: a 2D image becomes ``(1, W, H)``
    (``(1, x, y)``), a volume read without ``index`` ``(1, x, y, slices)``; the metadata (``affine`` included)
    travels with the ``MetaTensor``, so ``SaveImaged`` / ``Invertd`` write results in the input's geometry.

    An image with NaN or +-Inf pixels raises a ``ValueError`` naming the manifest row and the file
    (``nan_policy="error"``, the default); ``nan_policy="replace"`` writes ``fill_value`` into those pixels instead
    and logs how many were replaced (also kept as ``meta["non_finite_replaced"]``).

    Args:
        keys: keys holding file paths.
        nan_policy: ``"error"`` or ``"replace"`` (see :func:`modan_monai.data.readers.replace_non_finite`).
        fill_value: value written into non-finite pixels with ``nan_policy="replace"``.
        allow_missing_keys: do not raise if a key is missing.

    Raises:
        ValueError: an unknown ``nan_policy``.

    Example:
        >>> loader = LoadManifestImaged(keys="image")
        >>> out = loader({"image": "ct.dcm", "key": None, "index": None})  # doctest: +SKIP
        >>> out["image"].shape, out["image"].meta["Modality"]  # doctest: +SKIP
        (torch.Size([1, 512, 512]), 'CT')
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        nan_policy: str = "error",
        fill_value: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        self.nan_policy = nan_policy
        self.fill_value = float(fill_value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key.

        Args:
            data: datalist row.

        Returns:
            a new dictionary with images in place of paths.

        Raises:
            FileNotFoundError: a file is missing (names the manifest row).
            ValueError: an unreadable file or, with ``nan_policy="error"``, NaN/Inf pixels (names the manifest
                row and the file).
        """
        d = dict(data)
        for key in self.key_iterator(d):
            row = dict(d)
            row["image"] = d[key]
            arr, meta = read_image_row(row, nan_policy=self.nan_policy, fill_value=self.fill_value)
            d[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)[None]), meta=meta)
        return d


class RandSliced(RandomizableTransform, MapTransform):
    """Pick a random slice for volume rows created by ``expand_volume_slices(mode="random")``.

    Runs before :class:`LoadManifestImaged`: when ``data[index_key]`` is ``None`` and the row has
    ``num_slices_key``, sets ``data[index_key]`` to a random integer in ``[0, num_slices)``.
    Rows without ``num_slices_key`` (2D images) and rows with an index pass through unchanged.
    Place it first in a ``CacheDataset`` pipeline only if you accept that nothing after it is cached.

    Args:
        index_key: key of the slice index.
        num_slices_key: key of the number of slices of the volume.

    Example:
        >>> t = RandSliced()
        >>> _ = t.set_random_state(seed=0)
        >>> 0 <= t({"image": "v.npy", "index": None, "num_slices": 30})["index"] < 30
        True
    """

    def __init__(self, index_key: str = "index", num_slices_key: str = "num_slices") -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys=index_key, allow_missing_keys=True)
        self.index_key = index_key
        self.num_slices_key = num_slices_key
        self._num_slices = 0
        self._index: int | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw a slice index in ``[0, self._num_slices)``."""
        super().randomize(None)
        self._index = int(self.R.randint(self._num_slices))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Fill in a random slice index.

        Args:
            data: datalist row.

        Returns:
            a new dictionary with ``index_key`` set.

        Raises:
            ValueError: ``num_slices`` is not a positive integer (names the manifest row).
        """
        d = dict(data)
        if d.get(self.index_key) is not None or d.get(self.num_slices_key) is None:
            return d
        n = d[self.num_slices_key]
        if int(n) != n or int(n) < 1:
            raise ValueError(f"{row_context(d)}{d.get('image')}: {self.num_slices_key}={n!r} is not a positive integer")
        self._num_slices = int(n)
        self.randomize()
        d[self.index_key] = self._index
        return d
