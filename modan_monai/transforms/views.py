"""Multi-view augmentation for contrastive pretraining (SimCLR-style two crops).

Views are plain float32 ``torch.Tensor`` (no ``MetaTensor``): they are produced many times per
image and per epoch, and the metadata tracking of ``MetaTensor`` only costs time here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform
from monai.utils import MAX_SEED, ensure_tuple_rep

__all__ = ["MultiViewd", "RandResizedCrop", "RandResizedCropd", "SimCLRViewsd"]


def _plain_tensor(img: Any) -> torch.Tensor:
    if isinstance(img, MetaTensor):
        img = img.as_tensor()
    return torch.as_tensor(np.ascontiguousarray(img) if isinstance(img, np.ndarray) else img).float()


class RandResizedCrop(RandomizableTransform):
    """Crop a random area and aspect ratio of a channel-first 2D image and resize it.

    Hand-written because MONAI has no RandomResizedCrop (``RandSpatialCrop`` samples sizes
    uniformly per axis, not area scale x log-uniform aspect ratio). Sampling follows
    ``torchvision.transforms.RandomResizedCrop``: up to 10 attempts drawing an area fraction
    uniformly from ``scale`` and an aspect ratio log-uniformly from ``ratio``; if none fits,
    a centre crop with the ratio clamped to ``ratio``. Resizing is bilinear with antialiasing
    (torchvision's default) via ``torch.nn.functional.interpolate``.

    Args:
        spatial_size: output ``(H, W)`` or one int for a square.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio: extent along the last axis / extent along the first spatial axis
            (torchvision's width / height for a ``(C, H, W)`` tensor). The default range is symmetric
            (``3/4`` to ``4/3``, drawn log-uniformly), so it does not depend on the axis order.
        antialias: antialias when downsampling.

    Example:
        >>> import torch
        >>> crop = RandResizedCrop(32)
        >>> _ = crop.set_random_state(seed=0)
        >>> crop(torch.rand(1, 64, 80)).shape
        torch.Size([1, 32, 32])
    """

    def __init__(
        self,
        spatial_size: int | Sequence[int],
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        antialias: bool = True,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.spatial_size = tuple(int(s) for s in ensure_tuple_rep(spatial_size, 2))
        if min(self.spatial_size) < 1:
            raise ValueError(f"spatial_size must be positive, got {spatial_size}")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.antialias = antialias
        self._box = (0, 0, 1, 1)

    def get_params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Draw a crop box ``(top, left, h, w)`` for an image of ``height`` x ``width``.

        Args:
            height: image height.
            width: image width.

        Returns:
            ``(top, left, h, w)``.
        """
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * self.R.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(self.R.uniform(log_ratio[0], log_ratio[1]))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(self.R.randint(0, height - h + 1))
                left = int(self.R.randint(0, width - w + 1))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def randomize(self, data: Any = None) -> None:
        """Draw the crop box for an image of spatial shape ``data`` ``(H, W)``."""
        super().randomize(None)
        self._box = self.get_params(int(data[0]), int(data[1]))

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        """Crop and resize.

        Args:
            img: ``(C, H, W)`` numpy array or tensor.
            randomize: draw a new box (``False`` reuses the last one).

        Returns:
            float32 tensor ``(C, *spatial_size)``.

        Raises:
            ValueError: ``img`` is not 3-D.
        """
        x = _plain_tensor(img)
        if x.ndim != 3:
            raise ValueError(f"RandResizedCrop expects a channel-first 2D image (C, H, W), got shape {tuple(x.shape)}")
        if randomize:
            self.randomize(x.shape[1:])
        top, left, h, w = self._box
        crop = x[None, :, top : top + h, left : left + w]
        out = F.interpolate(
            crop, size=self.spatial_size, mode="bilinear", align_corners=False, antialias=self.antialias
        )
        return out[0]


class RandResizedCropd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandResizedCrop`; all keys share one crop box.

    Args:
        keys: keys of ``(C, H, W)`` images of equal spatial shape.
        spatial_size: see :class:`RandResizedCrop`.
        scale: see :class:`RandResizedCrop`.
        ratio: see :class:`RandResizedCrop`.
        allow_missing_keys: do not raise if a key is missing.

    Example:
        >>> import torch
        >>> t = RandResizedCropd("image", 16)
        >>> t({"image": torch.rand(1, 40, 40)})["image"].shape
        torch.Size([1, 16, 16])
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int | Sequence[int],
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        allow_missing_keys: bool = False,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.cropper = RandResizedCrop(spatial_size, scale=scale, ratio=ratio)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandResizedCropd:
        """Seed this transform and its cropper."""
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Crop every key with the same box.

        Args:
            data: dictionary of images.

        Returns:
            a new dictionary with cropped images.
        """
        d = dict(data)
        first = True
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key], randomize=first)
            first = False
        return d


class SimCLRViewsd(RandomizableTransform, MapTransform):
    """Make ``num_views`` SimCLR-style views of a grey image (methods.md §1 "Views").

    Each view: :class:`RandResizedCrop` (``scale``, ``ratio``) -> horizontal flip with
    ``flip_prob`` along spatial axis ``flip_axis`` (0: the width axis of the ``(C, W, H)`` images the
    modan_monai readers produce in MONAI's ``(x, y)`` order) -> with ``jitter_prob`` brightness and
    contrast jitter in random order
    (torchvision ``ColorJitter`` semantics on ``[0, 1]`` images: brightness multiplies by a
    factor in ``[1 - brightness, 1 + brightness]``; contrast blends with the image mean by a
    factor in ``[1 - contrast, 1 + contrast]``; results clamped to ``[0, 1]``). Colour-only
    operations (saturation, hue, greyscale) are omitted: they do nothing on one channel.
    The input should already be in ``[0, 1]`` (e.g. after :class:`NormalizeByModalityd`).

    Args:
        keys: the image key (exactly one).
        spatial_size: view size ``(H, W)`` or one int.
        num_views: number of views V.
        scale: crop area range.
        ratio: crop aspect-ratio range.
        flip_prob: probability of a horizontal (width-axis) flip.
        flip_axis: spatial axis of that flip (MONAI ``spatial_axis`` numbering): ``0`` for the readers'
            ``(x, y)`` images, ``1`` for row-major ``(H, W)`` tensors.
        jitter_prob: probability of applying brightness/contrast jitter.
        brightness: brightness jitter strength (0 disables).
        contrast: contrast jitter strength (0 disables).
        views_key: key receiving the ``(V, C, H, W)`` float32 tensor.
        keep_source: keep ``data[key]``; set ``False`` when images of different sizes must be
            collated into one batch (the default collate stacks every tensor key).
        allow_missing_keys: do not raise if the key is missing.

    Example:
        >>> import torch
        >>> t = SimCLRViewsd("image", spatial_size=32)
        >>> _ = t.set_random_state(seed=0)
        >>> t({"image": torch.rand(1, 64, 64)})["views"].shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        spatial_size: int | Sequence[int] = 224,
        num_views: int = 2,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_prob: float = 0.5,
        flip_axis: int = 0,
        jitter_prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        views_key: str = "views",
        keep_source: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SimCLRViewsd takes exactly one image key, got {self.keys}")
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        for name, p in (("flip_prob", flip_prob), ("jitter_prob", jitter_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        for name, s in (("brightness", brightness), ("contrast", contrast)):
            if not 0.0 <= s < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {s}")
        self.cropper = RandResizedCrop(spatial_size, scale=scale, ratio=ratio)
        self.cropper.R = self.R
        self.num_views = int(num_views)
        self.flip_prob = float(flip_prob)
        if flip_axis not in (0, 1):
            raise ValueError(f"flip_axis must be 0 or 1 (a spatial axis of a 2D image), got {flip_axis}")
        self.flip_axis = int(flip_axis)
        self.jitter_prob = float(jitter_prob)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.views_key = views_key
        self.keep_source = keep_source

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SimCLRViewsd:
        """Seed this transform; the cropper shares its random state."""
        super().set_random_state(seed, state)
        self.cropper.R = self.R
        return self

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        ops = []
        if self.brightness > 0:
            ops.append(("brightness", self.R.uniform(1.0 - self.brightness, 1.0 + self.brightness)))
        if self.contrast > 0:
            ops.append(("contrast", self.R.uniform(1.0 - self.contrast, 1.0 + self.contrast)))
        for i in self.R.permutation(len(ops)):
            name, factor = ops[int(i)]
            if name == "brightness":
                x = (x * factor).clamp(0.0, 1.0)
            else:
                # torchvision adjust_contrast: blend with the mean of the (grey) image
                mean = x.mean(dim=(-3, -2, -1), keepdim=True)
                x = (factor * x + (1.0 - factor) * mean).clamp(0.0, 1.0)
        return x

    def make_view(self, img: torch.Tensor) -> torch.Tensor:
        """One random view of a ``(C, H, W)`` image.

        Args:
            img: plain float tensor.

        Returns:
            ``(C, *spatial_size)`` float32 tensor.
        """
        v = self.cropper(img)
        if self.R.rand() < self.flip_prob:
            v = torch.flip(v, dims=(self.flip_axis + 1,))
        if self.R.rand() < self.jitter_prob:
            v = self._jitter(v)
        return v.contiguous()

    def randomize(self, data: Any = None) -> None:
        """Randomness is drawn per view in :meth:`make_view`."""
        super().randomize(None)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add ``views_key``.

        Args:
            data: dictionary with a ``(C, H, W)`` image.

        Returns:
            a new dictionary with ``views_key`` ``(V, C, H, W)``.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            self.randomize()
            img = _plain_tensor(d[key])
            d[self.views_key] = torch.stack([self.make_view(img) for _ in range(self.num_views)])
            if not self.keep_source:
                del d[key]
        return d


class MultiViewd(Randomizable, MapTransform):
    """Apply a random dictionary transform ``num_views`` times and stack the results.

    Args:
        keys: the key whose transformed values are stacked (the first key if several).
        transform: a callable on a dictionary (e.g. a ``monai.transforms.Compose`` of random
            dictionary transforms); each call receives a shallow copy of the input.
        num_views: number of views V.
        views_key: key receiving the ``(V, ...)`` float32 tensor.
        allow_missing_keys: do not raise if the key is missing.

    Example:
        >>> import torch
        >>> t = MultiViewd("image", RandResizedCropd("image", 8), num_views=3)
        >>> t({"image": torch.rand(1, 20, 20)})["views"].shape
        torch.Size([3, 1, 8, 8])
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform: Callable[[dict], Mapping],
        num_views: int = 2,
        views_key: str = "views",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if not callable(transform):
            raise ValueError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.num_views = int(num_views)
        self.views_key = views_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> MultiViewd:
        """Seed this transform and, if it is randomizable, the wrapped transform."""
        super().set_random_state(seed, state)
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=int(self.R.randint(MAX_SEED)))
        return self

    def randomize(self, data: Any = None) -> None:
        """Randomness lives in the wrapped transform."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add ``views_key``.

        Args:
            data: input dictionary.

        Returns:
            a new dictionary with ``views_key``.
        """
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        key = keys[0]
        views = [_plain_tensor(self.transform(dict(d))[key]) for _ in range(self.num_views)]
        d[self.views_key] = torch.stack(views)
        return d
