"""Part-whole views for Adam-v2 pretraining (methods.md §3 "Sampling per image at level m").

Adam-v2 (Taher et al., "Representing Part-Whole Hierarchies in Foundation Models by Learning
Localizability, Composability, and Decomposability from Anatomy via Self-Supervision", CVPR 2024)
samples per image an anchor *whole* ``w`` at level ``m`` (coarse to fine), splits it into its
``n = 4`` quadrant *parts*, and makes a teacher view, a student global view and graded student
local views of ``w``. :class:`AdamV2Viewsd` makes these view groups; :class:`DINOViewsd` makes the
views of the optional localizability-only (plain DINO) phase of the official release.

Views are plain float32 ``torch.Tensor`` (no ``MetaTensor``), stacked per group as
``(V, C, H, W)``. Images should be in ``[0, 1]`` (the intensity jitter clamps to that range).
Spatial axes are taken as they come: "row-major" means along the first spatial axis, then the
second (for the ``(C, W, H)`` images the modan_monai readers produce, the first axis is x).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.networks.layers.simplelayers import gaussian_1d, separable_filtering
from monai.transforms import MapTransform, RandomizableTransform

from .views import RandResizedCrop, SimCLRViewsd, _plain_tensor

__all__ = ["AdamV2Viewsd", "DINOViewsd", "DEFAULT_LOCAL_AREA_BINS", "OFFICIAL_LOCAL_RATIOS"]

#: Area bins of the 8 graded local views (fractions of the whole's area), official release.
DEFAULT_LOCAL_AREA_BINS: tuple[tuple[float, float], ...] = (
    (0.05, 0.1),
    (0.1, 0.2),
    (0.2, 0.3),
    (0.3, 0.4),
    (0.4, 0.5),
    (0.5, 0.6),
    (0.6, 0.7),
    (0.7, 0.8),
)
#: Aspect-ratio ranges the official release cycles through for the local views (2/3-1, then 1-3/2).
OFFICIAL_LOCAL_RATIOS: tuple[tuple[float, float], ...] = ((3.0 / 4.5, 1.0), (1.0, 4.5 / 3.0))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of ``(N, C, h, w)`` to ``(N, C, size, size)``."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a ``(C, h, w)`` view about its centre by ``degrees``, bilinear, zeros outside."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    mat = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=x.dtype)
    grid = F.affine_grid(mat, [1, *x.shape], align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a ``(C, h, w)`` view with MONAI's separable filter (edge values replicated)."""
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=4.0, normalize=True).to(x.dtype)
    return separable_filtering(x[None], [kernel, kernel], mode="replicate")[0]


def _check_prob(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return float(p)


class _ViewAugmentd(RandomizableTransform, MapTransform):
    """Shared crop-free augmentation of the part-whole view transforms (not public).

    Per view, in the official order: brightness/contrast jitter with ``jitter_prob`` (the jitter
    of :class:`~modan_monai.transforms.views.SimCLRViewsd`), rotation by ``U(-rotation_degrees,
    rotation_degrees)`` (zeros outside), Gaussian blur with the view's probability and sigma
    ``U(blur_sigma)``. No flip. All randomness comes from ``self.R``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int,
        local_size: int,
        jitter_prob: float,
        brightness: float,
        contrast: float,
        blur_prob: Sequence[float],
        blur_sigma: tuple[float, float],
        rotation_degrees: float,
        keep_source: bool,
        allow_missing_keys: bool,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys, allow_missing_keys)
        name = type(self).__name__
        if len(self.keys) != 1:
            raise ValueError(f"{name} takes exactly one image key, got {self.keys}")
        if int(spatial_size) < 1 or int(local_size) < 1:
            raise ValueError(f"{name}: spatial_size and local_size must be >= 1, got {spatial_size}, {local_size}")
        if int(local_size) > int(spatial_size):
            raise ValueError(f"{name}: local_size ({local_size}) must not exceed spatial_size ({spatial_size})")
        self.spatial_size = int(spatial_size)
        self.local_size = int(local_size)
        if len(blur_prob) != 3:
            raise ValueError(f"{name}: blur_prob must hold 3 probabilities, got {blur_prob}")
        self.blur_prob = tuple(_check_prob("blur_prob", p) for p in blur_prob)
        if not 0.0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"{name}: blur_sigma must satisfy 0 < min <= max, got {blur_sigma}")
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        if rotation_degrees < 0:
            raise ValueError(f"{name}: rotation_degrees must be >= 0, got {rotation_degrees}")
        self.rotation_degrees = float(rotation_degrees)
        # the jitter (and its argument checks) of the SimCLR views; it draws from self.R
        self.jitterer = SimCLRViewsd(
            self.keys, jitter_prob=jitter_prob, brightness=brightness, contrast=contrast, flip_prob=0.0
        )
        self.keep_source = keep_source
        self._share_random_state()

    def _children(self) -> list[Any]:
        return [self.jitterer, self.jitterer.cropper]

    def _share_random_state(self) -> None:
        for child in self._children():
            if child is not None:
                child.R = self.R

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> _ViewAugmentd:
        """Seed this transform; its croppers and jitter share its random state."""
        super().set_random_state(seed, state)
        self._share_random_state()
        return self

    def randomize(self, data: Any = None) -> None:
        """Randomness is drawn per view while the views are made."""
        super().randomize(None)

    def augment(self, views: torch.Tensor, blur_prob: float | Sequence[float]) -> torch.Tensor:
        """Jitter, rotate and blur each view of ``views`` ``(V, C, h, w)``.

        Args:
            views: plain float tensor.
            blur_prob: blur probability, one for all views or one per view.

        Returns:
            ``(V, C, h, w)`` float32 tensor.
        """
        if len(views) == 0:
            return views
        probs = [float(blur_prob)] * len(views) if isinstance(blur_prob, (int, float)) else list(blur_prob)
        out = []
        for v, p in zip(views, probs):
            if self.R.rand() < self.jitterer.jitter_prob:
                v = self.jitterer._jitter(v)
            if self.rotation_degrees > 0:
                v = _rotate(v, self.R.uniform(-self.rotation_degrees, self.rotation_degrees))
            if self.R.rand() < p:
                v = _blur(v, self.R.uniform(*self.blur_sigma))
            out.append(v)
        return torch.stack(out).contiguous()

    def _image(self, d: Mapping[Hashable, Any], key: Hashable) -> torch.Tensor:
        img = _plain_tensor(d[key])
        if img.ndim != 3:
            raise ValueError(
                f"{type(self).__name__} expects a channel-first 2D image (C, H, W) under {key!r}, "
                f"got shape {tuple(img.shape)}"
            )
        return img


class AdamV2Viewsd(_ViewAugmentd):
    """Make the Adam-v2 joint-phase view groups of one image at level ``m`` (methods.md §3).

    Per call, at the current :attr:`level` ``m``:

    - whole ``w``: ``m == 0`` the whole image; ``m >= 1`` a random window of
      ``floor(H / 2^m) x floor(W / 2^m)`` at native resolution, its offset keeping
      ``round(margin * side)`` pixels from each border when there is room, else anywhere.
    - ``parts_key`` ``(n, C, S, S)``: ``w`` split into a ``sqrt(n) x sqrt(n)`` grid of
      non-overlapping parts, row-major (TL, TR, BL, BR for ``n = 4``), remainder rows/columns
      dropped, each resized to ``spatial_size``; augmented like the teacher view (official).
    - ``teacher_key`` ``(1, C, S, S)``: ``w`` resized (no crop).
    - ``global_key`` ``(1, C, S, S)``: a centred crop of ``w`` with area fraction ``U(global_scale)``
      and aspect ratio log-uniform in ``global_ratio`` (``RandResizedCrop`` sampling, then centred).
    - ``local_key`` ``(L, C, s, s)``: ``num_locals`` centred crops, the ``i``-th with area in
      ``local_area_bins[i]`` and ratio in ``local_ratios[i % len]``, resized to ``local_size``.

    Augmentation per view: jitter (``jitter_prob``), rotation ``+-rotation_degrees``, blur with
    ``blur_prob = (teacher and parts, global, local)``. Resizing is bilinear with antialiasing.
    The image should be loaded large enough for the finest window
    (e.g. ``spatial_size * 2**max_level``); windows are cropped before any resize.

    :attr:`level` is a plain attribute a handler can set between epochs (with
    ``num_workers > 0`` the workers must be re-created for it to reach them, i.e.
    ``persistent_workers=False``).

    Args:
        keys: the image key (exactly one), a ``(C, H, W)`` image in ``[0, 1]``.
        spatial_size: input size ``S`` of the teacher, global and part views.
        local_size: size ``s`` of the local views.
        num_locals: number of local views ``L``.
        level: starting level ``m`` in ``0..max_level``.
        max_level: finest level; images must satisfy ``min(H, W) // 2**max_level >= spatial_size``.
        num_parts: number of parts ``n``, a square number (4 by default).
        margin: border margin as a fraction of the image side (50/1024 official).
        global_scale: area range of the global view.
        global_ratio: aspect-ratio range of the global view.
        local_area_bins: ``(lo, hi)`` area range per local view; default the first ``num_locals``
            of :data:`DEFAULT_LOCAL_AREA_BINS`.
        local_ratios: aspect-ratio ranges cycled over the local views; default
            :data:`OFFICIAL_LOCAL_RATIOS`.
        jitter_prob: probability of brightness/contrast jitter per view.
        brightness: brightness jitter strength.
        contrast: contrast jitter strength.
        blur_prob: blur probabilities ``(teacher and parts, global, local)``.
        blur_sigma: range of the blur sigma.
        rotation_degrees: maximum absolute rotation.
        teacher_key: output key of the teacher view.
        global_key: output key of the global view.
        local_key: output key of the local views.
        parts_key: output key of the parts.
        source_key: input key naming the image in errors (e.g. the manifest row).
        keep_source: keep ``data[key]`` (drop it to collate images of different sizes).
        allow_missing_keys: do not raise if the key is missing.

    Raises:
        ValueError: arguments that do not fit; at call time an image too small for ``max_level``
            (naming it) or local crops smaller than 1 px.

    Example:
        >>> import torch
        >>> t = AdamV2Viewsd(spatial_size=16, local_size=8, num_locals=2, max_level=1)
        >>> _ = t.set_random_state(seed=0)
        >>> out = t({"image": torch.rand(1, 32, 32)})
        >>> [tuple(out[k].shape) for k in ("teacher", "global", "local", "parts")]
        [(1, 1, 16, 16), (1, 1, 16, 16), (2, 1, 8, 8), (4, 1, 16, 16)]
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        spatial_size: int = 64,
        local_size: int = 28,
        num_locals: int = 8,
        level: int = 0,
        max_level: int = 2,
        num_parts: int = 4,
        margin: float = 50.0 / 1024.0,
        global_scale: tuple[float, float] = (0.8, 1.0),
        global_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        local_area_bins: Sequence[tuple[float, float]] | None = None,
        local_ratios: Sequence[tuple[float, float]] | None = None,
        jitter_prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        blur_prob: Sequence[float] = (0.1, 1.0, 0.5),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        rotation_degrees: float = 10.0,
        teacher_key: str = "teacher",
        global_key: str = "global",
        local_key: str = "local",
        parts_key: str = "parts",
        source_key: str = "source",
        keep_source: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys, spatial_size, local_size, jitter_prob, brightness, contrast, blur_prob, blur_sigma,
            rotation_degrees, keep_source, allow_missing_keys,
        )  # fmt: skip
        if int(max_level) < 0:
            raise ValueError(f"AdamV2Viewsd: max_level must be >= 0, got {max_level}")
        self.max_level = int(max_level)
        self.level = level
        grid = math.isqrt(int(num_parts)) if int(num_parts) > 0 else 0
        if grid < 1 or grid * grid != int(num_parts):
            raise ValueError(f"AdamV2Viewsd: num_parts must be a square number (4: 2x2 quadrants), got {num_parts}")
        self.num_parts, self._grid = int(num_parts), grid
        if not 0.0 <= margin < 0.5:
            raise ValueError(f"AdamV2Viewsd: margin must be in [0, 0.5), got {margin}")
        self.margin = float(margin)
        if int(num_locals) < 0:
            raise ValueError(f"AdamV2Viewsd: num_locals must be >= 0, got {num_locals}")
        if local_area_bins is None:
            if int(num_locals) > len(DEFAULT_LOCAL_AREA_BINS):
                raise ValueError(
                    f"AdamV2Viewsd: num_locals={num_locals} exceeds the {len(DEFAULT_LOCAL_AREA_BINS)} default area "
                    "bins; pass local_area_bins with one (lo, hi) per local view"
                )
            local_area_bins = DEFAULT_LOCAL_AREA_BINS[: int(num_locals)]
        bins = [(float(lo), float(hi)) for lo, hi in local_area_bins]
        if len(bins) != int(num_locals):
            raise ValueError(f"AdamV2Viewsd: {len(bins)} local_area_bins for num_locals={num_locals}")
        for lo, hi in bins:
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"AdamV2Viewsd: each local area bin must satisfy 0 < lo <= hi <= 1, got {(lo, hi)}")
        ratios = list(OFFICIAL_LOCAL_RATIOS if local_ratios is None else local_ratios)
        if not ratios:
            raise ValueError("AdamV2Viewsd: local_ratios must hold at least one (lo, hi) range")
        self.local_area_bins = tuple(bins)
        self.global_cropper = RandResizedCrop(self.spatial_size, scale=global_scale, ratio=global_ratio)
        self.local_croppers = [
            RandResizedCrop(self.local_size, scale=b, ratio=ratios[i % len(ratios)]) for i, b in enumerate(bins)
        ]
        self.teacher_key, self.global_key = teacher_key, global_key
        self.local_key, self.parts_key = local_key, parts_key
        self.source_key = source_key
        self._share_random_state()

    @property
    def level(self) -> int:
        """Current level ``m`` (``0..max_level``): the whole is a ``1 / 2^m`` window of the image."""
        return self._level

    @level.setter
    def level(self, value: int) -> None:
        if isinstance(value, bool) or int(value) != value or not 0 <= int(value) <= self.max_level:
            raise ValueError(
                f"AdamV2Viewsd: `level` must be an integer in 0..{self.max_level} (max_level), got {value}"
            )
        self._level = int(value)

    def _children(self) -> list[Any]:
        return super()._children() + [getattr(self, "global_cropper", None), *getattr(self, "local_croppers", [])]

    def _name(self, d: Mapping[Hashable, Any], img: torch.Tensor) -> str:
        if self.source_key in d:
            return str(d[self.source_key])
        return f"of shape {tuple(img.shape)}"

    def window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Draw the whole's window ``(top, left, h, w)`` at the current level.

        Args:
            height: image extent along the first spatial axis.
            width: image extent along the second spatial axis.

        Returns:
            ``(top, left, h, w)``.
        """
        scale = 2**self.level
        h, w = height // scale, width // scale
        if self.level == 0:
            return 0, 0, h, w
        offsets = []
        for side, extent in ((height, h), (width, w)):
            pad = int(round(self.margin * side))
            hi = side - extent - pad
            offsets.append(int(self.R.randint(pad, hi + 1)) if hi >= pad else int(self.R.randint(0, side - extent + 1)))
        return offsets[0], offsets[1], h, w

    def parts(self, whole: torch.Tensor) -> torch.Tensor:
        """Split ``whole`` ``(C, h, w)`` into the row-major grid of parts at native resolution.

        Args:
            whole: the anchor whole.

        Returns:
            ``(n, C, h // g, w // g)`` with ``g = sqrt(n)``; remainder rows/columns dropped.
        """
        g = self._grid
        ph, pw = whole.shape[1] // g, whole.shape[2] // g
        return torch.stack(
            [whole[:, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw] for i in range(g) for j in range(g)]
        )

    @staticmethod
    def _centred(cropper: RandResizedCrop, whole: torch.Tensor) -> torch.Tensor:
        """A centred crop of ``whole`` with the area and ratio ``cropper`` samples, resized."""
        height, width = whole.shape[1:]
        _, _, h, w = cropper.get_params(height, width)
        top, left = (height - h) // 2, (width - w) // 2
        return _resize(whole[None, :, top : top + h, left : left + w], cropper.spatial_size[0])

    def _check_locals(self, whole: torch.Tensor, name: str) -> None:
        area = whole.shape[1] * whole.shape[2]
        for cropper, (lo, _) in zip(self.local_croppers, self.local_area_bins):
            r_lo, r_hi = cropper.ratio
            if min(round(math.sqrt(lo * area / r_hi)), round(math.sqrt(lo * area * r_lo))) < 1:
                raise ValueError(
                    f"AdamV2Viewsd: image {name}: a local crop of area fraction {lo} of its "
                    f"{whole.shape[1]}x{whole.shape[2]} whole at level {self.level} would be < 1 px; "
                    "load larger images or raise the smallest local area bin"
                )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add the teacher, global, local and parts view groups.

        Args:
            data: dictionary with a ``(C, H, W)`` image.

        Returns:
            a new dictionary with ``teacher_key`` ``(1, C, S, S)``, ``global_key`` ``(1, C, S, S)``,
            ``local_key`` ``(L, C, s, s)`` and ``parts_key`` ``(n, C, S, S)``.

        Raises:
            ValueError: the image is not ``(C, H, W)``, is too small for ``max_level``, or its
                smallest local crop would be < 1 px.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            img = self._image(d, key)
            height, width = img.shape[1:]
            finest = min(height, width) // 2**self.max_level
            if finest < self.spatial_size:
                raise ValueError(
                    f"AdamV2Viewsd: image {self._name(d, img)} of size {height}x{width} is too small for "
                    f"max_level={self.max_level}: its finest window side is {finest} px < spatial_size="
                    f"{self.spatial_size}; load images at >= {self.spatial_size * 2**self.max_level} px "
                    "(raise the load size) or lower `max_level` / `image_size`"
                )
            self.randomize()
            top, left, h, w = self.window(height, width)
            whole = img[:, top : top + h, left : left + w]
            self._check_locals(whole, self._name(d, img))
            teacher_p, global_p, local_p = self.blur_prob
            d[self.teacher_key] = self.augment(_resize(whole[None], self.spatial_size), teacher_p)
            d[self.global_key] = self.augment(self._centred(self.global_cropper, whole), global_p)
            if self.local_croppers:
                local = torch.cat([self._centred(c, whole) for c in self.local_croppers])
            else:
                local = img.new_zeros((0, img.shape[0], self.local_size, self.local_size))
            d[self.local_key] = self.augment(local, local_p)
            d[self.parts_key] = self.augment(_resize(self.parts(whole), self.spatial_size), teacher_p)
            if not self.keep_source:
                del d[key]
        return d


class DINOViewsd(_ViewAugmentd):
    """Make the views of the localizability-only (plain DINO) phase of Adam-v2's official release.

    From the whole image: ``num_globals`` :class:`RandResizedCrop` globals (``global_scale``) and
    ``num_locals`` :class:`RandResizedCrop` locals (``local_scale``), each then jittered
    (``jitter_prob``), rotated (``+-rotation_degrees``) and blurred with
    ``blur_prob = (first global, other globals, locals)`` (DINO official: 1.0, 0.1, 0.5). The teacher
    sees the globals; the DINO loss skips same-index pairs in this phase. The official release
    rotates by up to 30 degrees in this phase (10 in the joint phase).

    Args:
        keys: the image key (exactly one), a ``(C, H, W)`` image in ``[0, 1]``.
        spatial_size: global view size ``S``.
        local_size: local view size ``s``.
        num_globals: number of global views.
        num_locals: number of local views.
        global_scale: area range of the global crops.
        local_scale: area range of the local crops.
        ratio: aspect-ratio range of all crops.
        jitter_prob: probability of brightness/contrast jitter per view.
        brightness: brightness jitter strength.
        contrast: contrast jitter strength.
        blur_prob: blur probabilities ``(first global, other globals, locals)``.
        blur_sigma: range of the blur sigma.
        rotation_degrees: maximum absolute rotation.
        global_key: output key of the global views ``(num_globals, C, S, S)``.
        local_key: output key of the local views ``(num_locals, C, s, s)``.
        keep_source: keep ``data[key]``.
        allow_missing_keys: do not raise if the key is missing.

    Example:
        >>> import torch
        >>> t = DINOViewsd(spatial_size=16, local_size=8, num_locals=3)
        >>> _ = t.set_random_state(seed=0)
        >>> out = t({"image": torch.rand(1, 32, 32)})
        >>> tuple(out["global"].shape), tuple(out["local"].shape)
        ((2, 1, 16, 16), (3, 1, 8, 8))
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        spatial_size: int = 64,
        local_size: int = 28,
        num_globals: int = 2,
        num_locals: int = 8,
        global_scale: tuple[float, float] = (0.8, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        jitter_prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        blur_prob: Sequence[float] = (1.0, 0.1, 0.5),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        rotation_degrees: float = 30.0,
        global_key: str = "global",
        local_key: str = "local",
        keep_source: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys, spatial_size, local_size, jitter_prob, brightness, contrast, blur_prob, blur_sigma,
            rotation_degrees, keep_source, allow_missing_keys,
        )  # fmt: skip
        if int(num_globals) < 1 or int(num_locals) < 0:
            raise ValueError(f"DINOViewsd: need num_globals >= 1 and num_locals >= 0, got {num_globals}, {num_locals}")
        self.num_globals, self.num_locals = int(num_globals), int(num_locals)
        self.global_cropper = RandResizedCrop(self.spatial_size, scale=global_scale, ratio=ratio)
        self.local_cropper = RandResizedCrop(self.local_size, scale=local_scale, ratio=ratio)
        self.global_key, self.local_key = global_key, local_key
        self._share_random_state()

    def _children(self) -> list[Any]:
        return super()._children() + [getattr(self, "global_cropper", None), getattr(self, "local_cropper", None)]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add the global and local view groups.

        Args:
            data: dictionary with a ``(C, H, W)`` image.

        Returns:
            a new dictionary with ``global_key`` ``(G, C, S, S)`` and ``local_key`` ``(L, C, s, s)``.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            img = self._image(d, key)
            self.randomize()
            first, rest, local_p = self.blur_prob
            globals_ = torch.stack([self.global_cropper(img) for _ in range(self.num_globals)])
            d[self.global_key] = self.augment(globals_, [first] + [rest] * (self.num_globals - 1))
            if self.num_locals:
                locals_ = torch.stack([self.local_cropper(img) for _ in range(self.num_locals)])
            else:
                locals_ = img.new_zeros((0, img.shape[0], self.local_size, self.local_size))
            d[self.local_key] = self.augment(locals_, local_p)
            if not self.keep_source:
                del d[key]
        return d
