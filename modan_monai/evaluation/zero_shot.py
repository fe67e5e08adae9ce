"""Zero-shot analyses of encoder embeddings (Adam-v2, Taher et al., Figs. 3-6): landmarks, localizability,
part-whole hierarchy, composability, interpolation / extrapolation.

The official Adam-v2 release has no code for these analyses; the definitions are the project's
(``shared/spec/methods.md`` section 3). An embedding is an encoder's pooled backbone feature (no head), computed in
eval mode without gradients, of a patch resized to the encoder's input size.

Coordinates: images and masks are ``(H, W)`` arrays (row = y, top = 0; column = x, image left = 0), i.e. the
transpose of MONAI's ``(x, y)`` order. A point ``(row, col)`` names the pixel with those indices; continuously, pixel
``(r, c)`` covers ``[r, r + 1) x [c, c + 1)``, so a patch of side ``s`` centred on it spans
``[r + 0.5 - s / 2, r + 0.5 + s / 2)`` (and likewise in x). Patches are cut with sub-pixel bilinear sampling and
box-averaged to the input size (:func:`crop_boxes`), zero outside the image, so a patch of an image that is affine
in (x, y) has a mean that is exactly affine in the patch centre.

Geometry (landmarks, wholes, parts, sampled points) is drawn once and shared by every encoder compared, so the
encoders see the same patches.

BatchNorm statistics (:func:`prepare_encoder`): an encoder that has never been trained (a BatchNorm layer with
``num_batches_tracked == 0``, e.g. scratch) is evaluated with statistics estimated on the analysis patches, the
k-NN monitor's rule and code (:func:`modan_monai.handlers.knn.bn_never_trained`,
:func:`~modan_monai.handlers.knn.bn_estimated_copy`); with its initial statistics (mean 0, variance 1) its embeddings
are nearly constant and win every raw-cosine figure.

Controls: each figure comes with one that a degenerate (constant) embedding cannot pass. Localizability: beside the
paper's distance to the centroid, leave-one-image-out nearest-centroid accuracy of the landmark
(:func:`nearest_centroid_accuracy`, chance ``1 / L``). Hierarchy: top-1 retrieval (chance ``1 / L``). Composability:
matched - mismatched (chance 0). Interpolation / extrapolation: beside the trivial predictor "mean embedding of all
patches" (the gain over it, chance 0) and after centring every embedding on that mean (chance 0)
(:func:`interpolation_controls`). Every summary has a 95 % percentile bootstrap interval over images
(:func:`bootstrap_interval`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from modan_monai.handlers.knn import BN_STATS, bn_estimated_copy, bn_never_trained
from modan_monai.utils.names import safe_file_name

#: the analyses :func:`run_zero_shot` runs, in order
ZERO_SHOT_ANALYSES: tuple[str, ...] = ("localizability", "hierarchy", "composability", "interpolation")

__all__ = [
    "ZERO_SHOT_ANALYSES",
    "BN_STATS",
    "JSRT_LANDMARKS",
    "LANDMARK_KINDS",
    "Landmark",
    "bootstrap_interval",
    "centre_boxes",
    "composability",
    "cosine_rows",
    "crop_boxes",
    "cross_level_retrieval",
    "distances_to_centroid",
    "embed_patches",
    "guillotine_parts",
    "hierarchy_embeddings",
    "interpolation",
    "interpolation_controls",
    "interpolation_embeddings",
    "landmark_embeddings",
    "landmarks_from_masks",
    "load_images_and_landmarks",
    "localizability",
    "markdown_table",
    "nearest_centroid_accuracy",
    "plot_boxes",
    "plot_hierarchy",
    "prepare_encoder",
    "run_zero_shot",
    "sample_interpolation_points",
    "structure_points",
    "summarise",
]

#: the points of a structure: centroid and extreme pixels; ``lateral`` / ``medial`` are the left or right extreme
#: away from / towards the image's vertical midline (see :func:`structure_points`)
LANDMARK_KINDS: tuple[str, ...] = ("centroid", "top", "bottom", "left", "right", "lateral", "medial")


@dataclass(frozen=True)
class Landmark:
    """One landmark: a point of one structure's mask.

    Attributes:
        name: landmark name (CSV / plot label).
        structure: the mask it is taken from (manifest column ``mask_<structure>``).
        kind: one of :data:`LANDMARK_KINDS`.
    """

    name: str
    structure: str
    kind: str


#: JSRT/SCR default set (10 landmarks). SCR's ``left_lung`` is the patient's left lung, which lies on the image's
#: right in a PA radiograph; the ``lateral`` / ``medial`` kinds are decided per image from the side of the midline
#: the structure's centroid lies on, so they hold for either convention.
JSRT_LANDMARKS: tuple[Landmark, ...] = (
    Landmark("right_lung_apex", "right_lung", "top"),
    Landmark("right_lung_bottom", "right_lung", "bottom"),
    Landmark("right_lung_lateral", "right_lung", "lateral"),
    Landmark("left_lung_apex", "left_lung", "top"),
    Landmark("left_lung_bottom", "left_lung", "bottom"),
    Landmark("left_lung_lateral", "left_lung", "lateral"),
    Landmark("heart_centroid", "heart", "centroid"),
    Landmark("heart_bottom", "heart", "bottom"),
    Landmark("right_clavicle_medial", "right_clavicle", "medial"),
    Landmark("left_clavicle_medial", "left_clavicle", "medial"),
)


def _lower_median(values: np.ndarray) -> float:
    ordered = np.sort(values)
    return float(ordered[(len(ordered) - 1) // 2])


def structure_points(mask: np.ndarray, midline: float | None = None) -> dict[str, tuple[float, float]]:
    """Centroid and extreme pixels of a binary mask.

    ``top`` / ``bottom`` are a pixel of the smallest / largest row, ``left`` / ``right`` of the smallest / largest
    column; among tied pixels the lower median of the other coordinate is taken (it is a mask pixel). ``lateral``
    is ``right`` when the centroid lies right of ``midline`` and ``left`` otherwise; ``medial`` is the opposite
    extreme.

    Args:
        mask: ``(H, W)`` array, nonzero = structure.
        midline: column of the vertical midline; default the image centre ``(W - 1) / 2``.

    Returns:
        ``{kind: (row, col)}`` for every kind of :data:`LANDMARK_KINDS`.

    Raises:
        ValueError: a mask that is not 2-D or is empty.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"structure_points: a (H, W) mask is needed, got shape {m.shape}.")
    rows, cols = np.nonzero(m)
    if rows.size == 0:
        raise ValueError("structure_points: the mask is empty.")
    mid = (m.shape[1] - 1) / 2.0 if midline is None else float(midline)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    points = {
        "centroid": (float(rows.mean()), float(cols.mean())),
        "top": (float(top), _lower_median(cols[rows == top])),
        "bottom": (float(bottom), _lower_median(cols[rows == bottom])),
        "left": (_lower_median(rows[cols == left]), float(left)),
        "right": (_lower_median(rows[cols == right]), float(right)),
    }
    on_right = points["centroid"][1] > mid
    points["lateral"] = points["right"] if on_right else points["left"]
    points["medial"] = points["left"] if on_right else points["right"]
    return points


def landmarks_from_masks(
    masks: Mapping[str, np.ndarray],
    spec: Sequence[Landmark] = JSRT_LANDMARKS,
    *,
    source: str = "<image>",
) -> np.ndarray:
    """The landmarks of one image from its structure masks.

    Args:
        masks: ``{structure: (H, W) mask}``.
        spec: the landmarks (default :data:`JSRT_LANDMARKS`).
        source: the image file / manifest row, named in errors.

    Returns:
        ``(L, 2)`` float array of ``(row, col)`` in ``spec`` order.

    Raises:
        ValueError: an unknown kind, or a structure a landmark needs that is missing or empty (naming ``source``,
            the structure and the landmark).
    """
    out = np.zeros((len(spec), 2), dtype=np.float64)
    cache: dict[str, dict[str, tuple[float, float]]] = {}
    for i, landmark in enumerate(spec):
        if landmark.kind not in LANDMARK_KINDS:
            raise ValueError(f"landmark {landmark.name!r}: unknown kind {landmark.kind!r}; kinds: {LANDMARK_KINDS}.")
        if landmark.structure not in cache:
            mask = masks.get(landmark.structure)
            if mask is None:
                raise ValueError(f"image {source}: no mask for structure {landmark.structure!r}, needed by landmark "
                                 f"{landmark.name!r} (masks given: {sorted(masks)}).")
            if not np.asarray(mask).any():
                raise ValueError(f"image {source}: the mask of structure {landmark.structure!r} is empty; landmark "
                                 f"{landmark.name!r} needs it.")
            cache[landmark.structure] = structure_points(mask)
        out[i] = cache[landmark.structure][landmark.kind]
    return out


def centre_boxes(points: np.ndarray, sides: float | np.ndarray) -> np.ndarray:
    """Square boxes centred on pixels.

    Args:
        points: ``(M, 2)`` ``(row, col)`` pixel coordinates.
        sides: box side(s) in pixels, scalar or ``(M,)``.

    Returns:
        ``(M, 4)`` boxes ``(top, left, bottom, right)`` in continuous coordinates (see the module docstring).
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2) + 0.5
    half = np.broadcast_to(np.asarray(sides, dtype=np.float64), (len(p),)) / 2.0
    return np.stack([p[:, 0] - half, p[:, 1] - half, p[:, 0] + half, p[:, 1] + half], axis=1)


def crop_boxes(
    images: torch.Tensor, boxes: np.ndarray, image_index: Sequence[int] | np.ndarray, size: int, chunk: int = 64
) -> torch.Tensor:
    """Cut boxes out of images and resize them to ``size`` (zero outside the image).

    Each output pixel is the mean of ``f x f`` bilinear samples (``f = ceil(box side / size)``, as in RoIAlign),
    so downscaling averages like an area resize and an image affine in (x, y) gives patches whose mean is affine in
    the box centre.

    Args:
        images: ``(N, C, H, W)``.
        boxes: ``(M, 4)`` ``(top, left, bottom, right)``, continuous coordinates.
        image_index: ``(M,)`` index into ``images`` of each box.
        size: output side ``S``.
        chunk: boxes per ``grid_sample`` call.

    Returns:
        ``(M, C, S, S)`` float32.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    index = np.asarray(image_index, dtype=np.int64).reshape(-1)
    if len(index) != len(boxes):
        raise ValueError(f"crop_boxes: {len(boxes)} boxes but {len(index)} image indices.")
    n, c, h, w = images.shape
    out = torch.zeros((len(boxes), c, size, size), dtype=torch.float32)
    extent = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    factors = np.maximum(1, np.ceil(extent / size - 1e-9)).astype(int)
    images = images.float()
    for f in np.unique(factors):
        chosen = np.flatnonzero(factors == f)
        steps = (np.arange(size * f) + 0.5) / (size * f)
        for start in range(0, len(chosen), chunk):
            ids = chosen[start:start + chunk]
            b = boxes[ids]
            ys = b[:, :1] + steps[None] * (b[:, 2:3] - b[:, :1])  # (m, S f)
            xs = b[:, 1:2] + steps[None] * (b[:, 3:4] - b[:, 1:2])
            gy = torch.as_tensor(2.0 * ys / h - 1.0, dtype=torch.float32)[:, :, None].expand(-1, -1, size * f)
            gx = torch.as_tensor(2.0 * xs / w - 1.0, dtype=torch.float32)[:, None, :].expand(-1, size * f, -1)
            grid = torch.stack([gx, gy], dim=-1)
            sampled = F.grid_sample(images[torch.as_tensor(index[ids])], grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)
            out[torch.as_tensor(ids)] = F.avg_pool2d(sampled, int(f)) if f > 1 else sampled
    return out


@torch.no_grad()
def embed_patches(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    patches: torch.Tensor,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Encoder embeddings of patches, in eval mode without gradients (the training mode is restored).

    Args:
        encoder: ``(B, C, S, S) -> (B, D)`` (pooled backbone features).
        patches: ``(M, C, S, S)``.
        batch_size: patches per forward.
        device: torch device.

    Returns:
        ``(M, D)`` float64.

    Raises:
        ValueError: no patches, or NaN/Inf embeddings.
    """
    if len(patches) == 0:
        raise ValueError("embed_patches: no patches.")
    module = encoder if isinstance(encoder, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.to(device).eval()
    try:
        chunks = [encoder(patches[i:i + batch_size].to(device)).float().cpu().reshape(len(patches[i:i + batch_size]), -1)
                  for i in range(0, len(patches), batch_size)]
    finally:
        if module is not None:
            module.train(was_training)
    out = torch.cat(chunks).double().numpy()
    if not np.isfinite(out).all():
        raise ValueError(f"embed_patches: {int((~np.isfinite(out).all(axis=1)).sum())} of {len(out)} embeddings are "
                         "NaN/Inf; check the encoder.")
    return out


def prepare_encoder(
    encoder: torch.nn.Module,
    patches: torch.Tensor,
    bn_stats: str = "auto",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, bool]:
    """The encoder to analyse, with BatchNorm statistics estimated on the analysis patches where the rule says so.

    The k-NN monitor's rule (:class:`modan_monai.handlers.knn.KNNMonitor`, shared code): ``"auto"`` estimates the
    statistics when a BatchNorm layer has never tracked a batch (an untrained encoder, whose statistics are still
    0 / 1 and whose embeddings are then nearly constant) and keeps the running statistics of a trained one;
    ``"recompute"`` always estimates them; ``"running"`` never does.

    Args:
        encoder: the encoder (not changed; a calibrated copy is returned).
        patches: ``(M, C, S, S)`` analysis patches the statistics are estimated on.
        bn_stats: one of :data:`BN_STATS`.
        batch_size: patches per forward pass while estimating.
        device: torch device.

    Returns:
        ``(encoder to analyse, whether its statistics were estimated)``.

    Raises:
        ValueError: an unknown ``bn_stats``, or no patches when the statistics are to be estimated.
    """
    if bn_stats not in BN_STATS:
        raise ValueError(f"zero-shot: bn_stats must be one of {BN_STATS}, got {bn_stats!r}.")
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                 for m in encoder.modules())
    if bn_stats == "running" or not has_bn or (bn_stats == "auto" and not bn_never_trained(encoder)):
        return encoder, False
    if len(patches) == 0:
        raise ValueError("zero-shot: no analysis patches to estimate the BatchNorm statistics on.")
    return bn_estimated_copy(encoder.to(device), patches, batch_size=batch_size), True


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``(..., D)`` arrays -> ``(...)``."""
    return np.sum(_normalise(np.asarray(a, dtype=np.float64)) * _normalise(np.asarray(b, dtype=np.float64)), axis=-1)


def distances_to_centroid(embeddings: np.ndarray) -> np.ndarray:
    """Localizability distances (Fig. 3): per landmark, L2 distance of each image's L2-normalised embedding to the
    mean of those normalised embeddings over the images (the mean is not renormalised).

    Args:
        embeddings: ``(N, L, D)`` (images, landmarks, features).

    Returns:
        ``(N, L)``; lower = the landmark's embedding is more consistent across images.
    """
    z = _normalise(np.asarray(embeddings, dtype=np.float64))
    return np.linalg.norm(z - z.mean(axis=0, keepdims=True), axis=-1)


def nearest_centroid_accuracy(embeddings: np.ndarray) -> np.ndarray:
    """Localizability control: leave-one-image-out nearest-centroid classification of the landmark.

    Each L2-normalised embedding of image ``n`` is assigned the landmark whose centroid (the mean of that
    landmark's normalised embeddings over the other images, as in :func:`distances_to_centroid`) is nearest in L2.
    A patch whose nearest distance is shared by several landmarks (a constant embedding ties them all) scores
    ``1 / (number tied)`` if its own landmark is among them, so chance is ``1 / L``. Unlike the distance, this
    has a between-landmark term: a collapsed embedding is near its centroid but no nearer to its own.

    Args:
        embeddings: ``(N, L, D)``, ``N >= 2``.

    Returns:
        ``(N, L)`` credit in ``[0, 1]``; its mean is the accuracy.

    Raises:
        ValueError: fewer than 2 images.
    """
    z = _normalise(np.asarray(embeddings, dtype=np.float64))
    n, num = z.shape[:2]
    if n < 2:
        raise ValueError(f"nearest_centroid_accuracy: leave-one-image-out needs 2 images or more, got {n}.")
    centroids = (z.sum(axis=0, keepdims=True) - z) / (n - 1)  # (N, L, D): centroids without image n
    dist = np.linalg.norm(z[:, :, None, :] - centroids[:, None, :, :], axis=-1)  # (N, L query, L centroid)
    nearest = np.isclose(dist, dist.min(axis=-1, keepdims=True), rtol=1e-9, atol=1e-12)
    own = nearest[:, np.arange(num), np.arange(num)]
    return own / nearest.sum(axis=-1)


def landmark_embeddings(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    landmarks: np.ndarray,
    input_size: int,
    patch_fraction: float = 0.22,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Embeddings of the landmark patches (side ``patch_fraction * H``) of localizability.

    Args:
        encoder: ``(B, C, S, S) -> (B, D)``.
        images: ``(N, C, H, W)``.
        landmarks: ``(N, L, 2)`` ``(row, col)``.
        input_size: encoder input side ``S``.
        patch_fraction: patch side / image side ``H`` (0.22).
        device: torch device.

    Returns:
        ``(N, L, D)``.
    """
    n, num = landmarks.shape[:2]
    boxes = centre_boxes(landmarks.reshape(-1, 2), patch_fraction * images.shape[-2])
    patches = crop_boxes(images, boxes, np.repeat(np.arange(n), num), input_size)
    return embed_patches(encoder, patches, device=device).reshape(n, num, -1)


def localizability(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    landmarks: np.ndarray,
    input_size: int,
    patch_fraction: float = 0.22,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Localizability distances of landmark patches (the paper's figure; see :func:`nearest_centroid_accuracy`
    for its control).

    Args:
        encoder: ``(B, C, S, S) -> (B, D)``.
        images: ``(N, C, H, W)``.
        landmarks: ``(N, L, 2)`` ``(row, col)``.
        input_size: encoder input side ``S``.
        patch_fraction: patch side / image side ``H`` (0.22).
        device: torch device.

    Returns:
        ``(N, L)`` distances (:func:`distances_to_centroid`).
    """
    return distances_to_centroid(landmark_embeddings(encoder, images, landmarks, input_size, patch_fraction, device))


def hierarchy_embeddings(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    landmarks: np.ndarray,
    input_size: int,
    levels: Sequence[int] = (1, 2, 3),
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Embeddings of landmark patches at the hierarchy levels (Fig. 4): side ``H / 2**l`` at level ``l``.

    Args:
        encoder: ``(B, C, S, S) -> (B, D)``.
        images: ``(N, C, H, W)``.
        landmarks: ``(N, L, 2)``.
        input_size: ``S``.
        levels: the levels ``l``.
        device: torch device.

    Returns:
        ``(N, V, L, D)`` with ``V = len(levels)``.
    """
    n, num = landmarks.shape[:2]
    boxes, index = _hierarchy_boxes(landmarks, images.shape[-2], levels)
    patches = crop_boxes(images, boxes, index, input_size)
    return embed_patches(encoder, patches, device=device).reshape(n, len(levels), num, -1)


def _hierarchy_boxes(landmarks: np.ndarray, h: int, levels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The ``(N * V * L, 4)`` boxes of :func:`hierarchy_embeddings` and their image indices."""
    n, num = landmarks.shape[:2]
    points = np.tile(landmarks[:, None], (1, len(levels), 1, 1)).reshape(-1, 2)
    sides = np.tile(np.repeat([h / 2.0 ** lv for lv in levels], num)[None], (n, 1)).reshape(-1)
    return centre_boxes(points, sides), np.repeat(np.arange(n), len(levels) * num)


def cross_level_retrieval(embeddings: np.ndarray) -> np.ndarray:
    """Cross-level same-landmark top-1 retrieval.

    For image ``n``, ordered level pair ``(v, v')`` (``v != v'``) and landmark ``i``: is the patch of the level-``v'``
    patches of the same image with the highest cosine similarity to patch ``(v, i)`` the one of landmark ``i``?
    Chance = ``1 / L``; the accuracy is the mean of the result.

    Args:
        embeddings: ``(N, V, L, D)``.

    Returns:
        ``(N, V, V, L)`` bool; the diagonal ``v == v'`` is ``False`` and not part of any accuracy.
    """
    z = _normalise(np.asarray(embeddings, dtype=np.float64))
    n, v, num, _ = z.shape
    sims = np.einsum("naid,nbjd->nabij", z, z)  # (N, V, V, L, L)
    correct = np.argmax(sims, axis=-1) == np.arange(num)
    correct[:, np.arange(v), np.arange(v)] = False
    return correct


def guillotine_parts(rng: np.random.Generator, box: Sequence[float], k: int,
                     cut_range: tuple[float, float] = (0.25, 0.75)) -> np.ndarray:
    """Cut a box into ``k`` parts by guillotine cuts.

    ``k - 1`` times, the largest current piece (the first on ties) is cut across its longer side (a random side
    for a square) at ``U(cut_range)`` of that side.

    Args:
        rng: random generator.
        box: ``(top, left, bottom, right)``.
        k: number of parts, >= 1.
        cut_range: the cut position range, fractions of the side.

    Returns:
        ``(k, 4)`` boxes tiling ``box``.
    """
    pieces = [np.asarray(box, dtype=np.float64)]
    for _ in range(int(k) - 1):
        areas = [(p[2] - p[0]) * (p[3] - p[1]) for p in pieces]
        t, l, b, r = pieces.pop(int(np.argmax(areas)))
        tall, wide = b - t, r - l
        frac = rng.uniform(*cut_range)
        horizontal = rng.random() < 0.5 if math.isclose(tall, wide) else tall > wide
        if horizontal:  # a horizontal cut line: top and bottom pieces
            y = t + frac * tall
            pieces += [np.array([t, l, y, r]), np.array([y, l, b, r])]
        else:
            x = l + frac * wide
            pieces += [np.array([t, l, b, x]), np.array([t, x, b, r])]
    return np.stack(pieces)


def composability(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    wholes: np.ndarray,
    parts: Sequence[np.ndarray],
    whole_image: np.ndarray,
    partner: np.ndarray,
    input_size: int,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Composability cosines (Fig. 5): ``cos(E_whole, mean of its part embeddings)`` and the mismatched control.

    Args:
        encoder: ``(B, C, S, S) -> (B, D)``.
        images: ``(N, C, H, W)``.
        wholes: ``(M, 4)`` whole boxes.
        parts: ``M`` arrays ``(k_j, 4)``, the parts of whole ``j`` (:func:`guillotine_parts`).
        whole_image: ``(M,)`` image index of whole ``j``.
        partner: ``(M,)`` the whole whose parts form the mismatched control of whole ``j`` (another image's).
        input_size: ``S``.
        device: torch device.

    Returns:
        ``(matched, mismatched)``, each ``(M,)``; the mean of the parts is unweighted.
    """
    whole_image = np.asarray(whole_image, dtype=np.int64)
    e_whole = embed_patches(encoder, crop_boxes(images, wholes, whole_image, input_size), device=device)
    counts = [len(p) for p in parts]
    part_patches = crop_boxes(images, np.concatenate(parts), np.repeat(whole_image, counts), input_size)
    e_parts = embed_patches(encoder, part_patches, device=device)
    bounds = np.cumsum([0, *counts])
    mean_parts = np.stack([e_parts[bounds[j]:bounds[j + 1]].mean(axis=0) for j in range(len(parts))])
    return cosine_rows(e_whole, mean_parts), cosine_rows(e_whole, mean_parts[np.asarray(partner)])


def sample_interpolation_points(
    rng: np.random.Generator,
    shape: tuple[int, int],
    t: float,
    side: float,
    min_separation: float | None = None,
    max_tries: int = 10000,
) -> tuple[np.ndarray, int]:
    """Draw ``A, B`` uniformly in the image until the patches of ``A, B, C = tA + (1-t)B, D = B + t(B - A)`` all
    lie inside it and ``|A - B| >= min_separation``.

    Args:
        rng: random generator.
        shape: image ``(H, W)``.
        t: the fraction ``t``.
        side: patch side.
        min_separation: least distance of ``A`` and ``B`` (default ``side``, so the two patches differ).
        max_tries: draws before giving up.

    Returns:
        ``((4, 2) points A, B, C, D as (row, col), rejected draws)``.

    Raises:
        ValueError: no valid draw in ``max_tries`` (the patch is too large for the image).
    """
    h, w = shape
    sep = side if min_separation is None else float(min_separation)
    for tries in range(int(max_tries)):
        a = rng.uniform((0, 0), (h, w)) - 0.5
        b = rng.uniform((0, 0), (h, w)) - 0.5
        pts = np.stack([a, b, t * a + (1 - t) * b, b + t * (b - a)])
        boxes = centre_boxes(pts, side)
        inside = (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= h).all() and (boxes[:, 3] <= w).all()
        if inside and np.linalg.norm(a - b) >= sep:
            return pts, tries
    raise ValueError(f"sample_interpolation_points: no A, B in {max_tries} draws whose patches (side {side:g}) lie in "
                     f"a {h}x{w} image at t={t}; use a smaller patch.")


def interpolation(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    points: np.ndarray,
    image_index: np.ndarray,
    ts: np.ndarray,
    side: float,
    input_size: int,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation and extrapolation cosines (Fig. 6; see :func:`interpolation_controls` for the controls).

    Args:
        encoder: ``(B, C, S, S) -> (B, D)``.
        images: ``(N, C, H, W)``.
        points: ``(M, 4, 2)`` ``A, B, C, D`` per sample (:func:`sample_interpolation_points`).
        image_index: ``(M,)``.
        ts: ``(M,)`` the ``t`` of each sample.
        side: patch side.
        input_size: ``S``.
        device: torch device.

    Returns:
        ``(cos(t E_A + (1 - t) E_B, E_C), cos(t (E_B - E_A) + E_B, E_D))``, each ``(M,)``.
    """
    e = interpolation_embeddings(encoder, images, points, image_index, side, input_size, device=device)
    scores = interpolation_controls(e, ts)
    return scores["interpolation"], scores["extrapolation"]


def interpolation_embeddings(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    points: np.ndarray,
    image_index: np.ndarray,
    side: float,
    input_size: int,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Embeddings ``E_A, E_B, E_C, E_D`` of the interpolation patches.

    Args:
        encoder: ``(B, C, S, S) -> (B, D)``.
        images: ``(N, C, H, W)``.
        points: ``(M, 4, 2)`` (:func:`sample_interpolation_points`).
        image_index: ``(M,)``.
        side: patch side.
        input_size: ``S``.
        device: torch device.

    Returns:
        ``(M, 4, D)``.
    """
    m = len(points)
    patches = crop_boxes(images, centre_boxes(points.reshape(-1, 2), side), np.repeat(image_index, 4), input_size)
    return embed_patches(encoder, patches, device=device).reshape(m, 4, -1)


def interpolation_controls(embeddings: np.ndarray, ts: np.ndarray) -> dict[str, np.ndarray]:
    """Interpolation / extrapolation cosines with their controls.

    With ``P_C = t E_A + (1 - t) E_B``, ``P_D = t (E_B - E_A) + E_B`` and ``M`` the mean embedding of all ``4 M``
    patches (the trivial predictor "mean embedding of all patches"), for ``X`` in ``C, D``:

    - ``<kind>``: ``cos(P_X, E_X)``, the paper's figure;
    - ``<kind>_mean``: ``cos(M, E_X)``, the trivial predictor's score;
    - ``<kind>_gain``: the figure minus the trivial predictor's score (chance 0);
    - ``<kind>_centred``: ``cos(P_X - M, E_X - M)``, the figure after centring every embedding on ``M`` (chance 0;
      the trivial predictor scores 0 here by construction).

    A constant embedding scores 1 on the figure and 0 on every control.

    Args:
        embeddings: ``(M, 4, D)`` ``E_A, E_B, E_C, E_D``.
        ts: ``(M,)`` the ``t`` of each sample.

    Returns:
        ``{name: (M,)}`` for ``kind`` in ``interpolation`` (target C) and ``extrapolation`` (target D).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    t = np.asarray(ts, dtype=np.float64).reshape(-1, 1)
    ea, eb, ec, ed = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
    mean = e.reshape(-1, e.shape[-1]).mean(axis=0, keepdims=True)
    # a centred vector shorter than 1e-9 of the typical embedding is rounding noise of a constant embedding: zero
    floor = 1e-9 * float(np.linalg.norm(e, axis=-1).mean()) + 1e-300
    out: dict[str, np.ndarray] = {}
    for kind, pred, target in (("interpolation", t * ea + (1 - t) * eb, ec),
                               ("extrapolation", t * (eb - ea) + eb, ed)):
        out[kind] = cosine_rows(pred, target)
        out[f"{kind}_mean"] = cosine_rows(np.broadcast_to(mean, target.shape), target)
        out[f"{kind}_gain"] = out[kind] - out[f"{kind}_mean"]
        a, b = pred - mean, target - mean
        out[f"{kind}_centred"] = np.sum(a * b, axis=-1) / np.maximum(
            np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), floor * floor)
    return out


def bootstrap_interval(
    values: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: ``scipy.stats.bootstrap`` (``method="percentile"``) with a
    ``numpy.random.Generator`` seeded by ``seed``, so the same values and seed give the same interval.

    Args:
        values: ``(n,)`` independent units (e.g. per-image means).
        confidence: the confidence level (0.95).
        n_resamples: bootstrap resamples.
        seed: the generator's seed.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than 2 values.
    """
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < 2:
        return math.nan, math.nan
    result = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=int(n_resamples), method="percentile",
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarise(frame: pd.DataFrame, value: str, by: Sequence[str], unit: str | None = None, seed: int = 0,
              n_resamples: int = 2000) -> pd.DataFrame:
    """``mean``, ``sd`` (ddof 1) and ``n`` of ``value`` grouped by ``by`` (in first-appearance order).

    Args:
        frame: the measurements.
        value: the column summarised.
        by: the grouping columns.
        unit: the column naming the independent unit (e.g. the image ``row``); when given, ``ci_low`` /
            ``ci_high`` are added: the 95 % :func:`bootstrap_interval` of the mean of the per-unit means, and
            ``units``, their number (the analyses have the same number of measurements per image, so that mean
            is ``mean``).
        seed: the bootstrap seed.
        n_resamples: bootstrap resamples.
    """
    grouped = frame.groupby(list(by), sort=False)[value]
    stats = grouped.agg(mean="mean", sd="std", n="count").reset_index()
    if unit is not None:
        per_unit = frame.groupby([*by, unit], sort=False)[value].mean().reset_index()
        intervals = {key if isinstance(key, tuple) else (key,): bootstrap_interval(g[value].to_numpy(), seed=seed,
                                                                                   n_resamples=n_resamples)
                     for key, g in per_unit.groupby(list(by), sort=False)}
        counts = per_unit.groupby(list(by), sort=False)[value].count()
        keys = [tuple(r) for r in stats[list(by)].itertuples(index=False)]
        stats["ci_low"] = [intervals[k][0] for k in keys]
        stats["ci_high"] = [intervals[k][1] for k in keys]
        stats["units"] = [int(counts.loc[k if len(k) > 1 else k[0]]) for k in keys]
    return stats


def markdown_table(stats: pd.DataFrame, rows: str, columns: str | None = None, digits: int = 3) -> str:
    """A markdown table of ``mean ± sd (n)`` cells from :func:`summarise` output (``mean ± sd (n) [low, high]`` when
    it has the bootstrap interval).

    Args:
        stats: columns ``mean``, ``sd``, ``n`` (and optionally ``ci_low``, ``ci_high``) and the grouping columns.
        rows: the column giving the table rows (e.g. ``encoder``).
        columns: the column giving the table columns, or ``None`` for one value column.
        digits: decimals.
    """
    def cell(r: pd.Series) -> str:
        sd = "nan" if pd.isna(r["sd"]) else f"{r['sd']:.{digits}f}"
        ci = f" [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]" if "ci_low" in r.index else ""
        return f"{r['mean']:.{digits}f} ± {sd} ({int(r['n'])}){ci}"

    row_keys = list(dict.fromkeys(stats[rows]))
    col_keys = list(dict.fromkeys(stats[columns])) if columns else ["mean ± sd (n)"]
    lines = [f"| {rows} | " + " | ".join(str(c) for c in col_keys) + " |", "|" + "---|" * (len(col_keys) + 1)]
    for rk in row_keys:
        cells = []
        for ck in col_keys:
            sel = stats[(stats[rows] == rk) & ((stats[columns] == ck) if columns else True)]
            cells.append(cell(sel.iloc[0]) if len(sel) else "")
        lines.append(f"| {rk} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    from modan_monai.utils.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def plot_boxes(groups: Mapping[str, np.ndarray], path: str | Path, ylabel: str, title: str = "") -> Path:
    """Box plot, one box per group (e.g. per encoder), written atomically as PNG (matplotlib Agg canvas).

    Args:
        groups: ``{label: values}``.
        path: PNG file.
        ylabel: y axis label.
        title: plot title.
    """
    fig = _figure(max(3.0, 1.2 * len(groups) + 1.5), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot([np.asarray(v, dtype=float) for v in groups.values()], showmeans=True)
    ax.set_xticks(range(1, len(groups) + 1), list(groups), rotation=20)
    ax.set(ylabel=ylabel, title=title)
    fig.tight_layout()
    return _save(fig, path)


def plot_hierarchy(coords: np.ndarray, landmark: Sequence[str], level: Sequence[int], path: str | Path,
                   title: str = "") -> Path:
    """2-D map of hierarchy patches: colour = landmark, marker = level (Fig. 4), written atomically as PNG.

    Args:
        coords: ``(M, 2)``.
        landmark: ``M`` landmark names.
        level: ``M`` levels.
        path: PNG file.
        title: plot title.
    """
    from matplotlib import colormaps

    coords = np.asarray(coords)
    landmark, level = np.asarray(landmark), np.asarray(level)
    fig = _figure(7.5, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    palette = colormaps["tab10"].colors + colormaps["tab20b"].colors
    markers = "o^sDvP*X"
    for i, name in enumerate(dict.fromkeys(landmark)):
        for j, lv in enumerate(sorted(set(level.tolist()))):
            sel = (landmark == name) & (level == lv)
            ax.scatter(coords[sel, 0], coords[sel, 1], s=14, color=palette[i % len(palette)],
                       marker=markers[j % len(markers)], linewidths=0, label=name if j == 0 else None)
    for j, lv in enumerate(sorted(set(level.tolist()))):
        ax.scatter([], [], color="grey", marker=markers[j % len(markers)], label=f"level {lv} (side H/{2 ** lv})")
    ax.set(xlabel="UMAP 1", ylabel="UMAP 2", title=title)
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def load_images_and_landmarks(
    datalist: Sequence[Mapping], spec: Sequence[Landmark], load_size: int
) -> tuple[torch.Tensor, np.ndarray]:
    """Read images and structure masks with the project's transforms, at ``load_size``, and find the landmarks.

    Args:
        datalist: manifest rows with ``mask_<structure>`` columns (:func:`modan_monai.data.load_datalist`).
        spec: the landmarks.
        load_size: side the images and masks are resized to (masks nearest).

    Returns:
        ``(images (N, 1, H, W) in [0, 1], landmarks (N, L, 2))``.

    Raises:
        ValueError: a missing mask column / cell or an empty mask, naming the image file and structure.
    """
    from modan_monai.data.segmentation import segmentation_transforms

    structures = list(dict.fromkeys(lm.structure for lm in spec))
    transform = segmentation_transforms(structures, image_size=int(load_size))
    images, landmarks = [], []
    for item in datalist:
        try:
            data = transform(dict(item))
        except RuntimeError as err:  # MONAI wraps a transform's error; show the ValueError naming file and structure
            cause = err.__cause__
            while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, (ValueError, FileNotFoundError)):
                raise cause from None
            raise
        image = torch.as_tensor(data["image"]).float().transpose(-1, -2)  # MONAI (C, x, y) -> (C, H, W)
        label = torch.as_tensor(data["label"]).transpose(-1, -2).numpy() > 0.5
        masks = dict(zip(structures, label))
        source = item.get("source") or item.get("image")
        images.append(image)
        landmarks.append(landmarks_from_masks(masks, spec, source=str(source)))
    return torch.stack(images), np.stack(landmarks)


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    from modan_monai.utils.atomic import atomic_write_text

    return atomic_write_text(path, frame.to_csv(index=False))


def _write_text(path: Path, text: str) -> Path:
    from modan_monai.utils.atomic import atomic_write_text

    return atomic_write_text(path, text)


def run_zero_shot(
    manifest: str | Path,
    encoders: Mapping[str, str],
    out_dir: str | Path,
    *,
    image_size: int = 64,
    load_size: int = 256,
    analyses: Sequence[str] = ZERO_SHOT_ANALYSES,
    splits: Sequence[str] | None = None,
    max_images: int | None = None,
    seed: int = 0,
    spec: Sequence[Landmark] = JSRT_LANDMARKS,
    patch_fraction: float = 0.22,
    levels: Sequence[int] = (1, 2, 3),
    wholes_per_k: int = 2,
    samples_per_t: int = 2,
    ts: Sequence[float] = (0.25, 0.5, 0.75),
    stem: str | None = None,
    bn_stats: str = "auto",
    bn_patches: int = 2048,
    bootstrap_resamples: int = 2000,
    device: str | torch.device = "cpu",
    logger: logging.Logger | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the zero-shot analyses of every encoder on a manifest with structure masks.

    Writes into ``out_dir`` (atomically), per analysis ``A``: ``A.csv`` (one row per encoder and measurement; images
    are named by manifest ``row`` and ``case_id`` only), ``A.png`` (``hierarchy_<encoder>.png`` per encoder for the
    hierarchy maps, ``hierarchy.png`` the retrieval boxes), ``A.md`` (encoders compared, mean ± sd (n) [95 %
    bootstrap interval over images]); and ``landmarks.csv``, ``controls.csv`` (one row per encoder, figure and
    statistic: the paper's figure and its control, mean, interval, images, chance), ``summary.md`` (the BatchNorm
    rule applied to each encoder, the controls table, then all tables), ``settings.json``. The geometry is drawn
    once from ``seed`` and shared by all encoders.

    BatchNorm statistics (:func:`prepare_encoder`): with ``bn_stats="auto"`` an encoder that has never been trained
    is analysed with statistics estimated on a seeded subset of at most ``bn_patches`` of the analysis patches (all
    analyses' patches pooled), the k-NN monitor's rule.

    Args:
        manifest: manifest CSV with ``mask_<structure>`` columns for the structures of ``spec``.
        encoders: ``{name: spec}`` for :func:`~modan_monai.networks.registry.build_encoder`.
        out_dir: output folder.
        image_size: encoder input side.
        load_size: side images and masks are resized to; landmarks and patches are computed at this size.
        analyses: a subset of :data:`ZERO_SHOT_ANALYSES`.
        splits: manifest splits (default all rows).
        max_images: use a seeded random subset of this many images (kept in manifest order).
        seed: seed of the subset, the geometry and UMAP.
        spec: the landmarks (default :data:`JSRT_LANDMARKS`).
        patch_fraction: localizability / interpolation patch side as a fraction of ``load_size``.
        levels: hierarchy levels (patch side ``load_size / 2**l``).
        wholes_per_k: composability wholes per image and part count ``k``.
        samples_per_t: interpolation samples per image and ``t``.
        ts: the interpolation fractions ``t``.
        stem: encoder stem override (``None``: the checkpoint's).
        bn_stats: ``"auto"`` (estimate the BatchNorm statistics of never-trained encoders), ``"recompute"`` (of
            every encoder) or ``"running"`` (never).
        bn_patches: most analysis patches the statistics are estimated on.
        bootstrap_resamples: resamples of the 95 % percentile bootstrap intervals over images.
        device: torch device.
        logger: progress logger.

    Returns:
        ``{analysis: its CSV frame}`` and ``"controls"``, the ``controls.csv`` frame.

    Raises:
        ValueError: no encoder, an unknown analysis or ``bn_stats``, fewer than 2 images for localizability or
            composability, or the errors of the loading and landmark steps (naming file and structure).
    """
    import json

    from modan_monai.data import load_datalist
    from modan_monai.networks.registry import build_encoder

    from .embeddings import umap_embed

    log = logger or logging.getLogger("modan_monai.evaluation")
    if not encoders:
        raise ValueError("run_zero_shot: at least one encoder is needed.")
    unknown = [a for a in analyses if a not in ZERO_SHOT_ANALYSES]
    if unknown:
        raise ValueError(f"run_zero_shot: unknown analyses {unknown}; choose from {ZERO_SHOT_ANALYSES}.")
    if bn_stats not in BN_STATS:
        raise ValueError(f"run_zero_shot: bn_stats must be one of {BN_STATS}, got {bn_stats!r}.")
    if int(bn_patches) < 2:
        raise ValueError(f"run_zero_shot: bn_patches must be >= 2, got {bn_patches}.")
    analyses = [a for a in ZERO_SHOT_ANALYSES if a in analyses]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    datalist = load_datalist(manifest, splits=splits)
    if not datalist:
        raise ValueError(f"run_zero_shot: manifest {manifest} has no rows for splits {splits}.")
    rng = np.random.default_rng(seed)
    if max_images is not None and max_images < len(datalist):
        keep = np.sort(rng.choice(len(datalist), size=int(max_images), replace=False))
        datalist = [datalist[i] for i in keep]
    n = len(datalist)
    if "composability" in analyses and n < 2:
        raise ValueError(f"run_zero_shot: composability's mismatched control needs 2 images or more, got {n}.")
    if "localizability" in analyses and n < 2:
        raise ValueError(f"run_zero_shot: localizability's leave-one-image-out control needs 2 images or more, "
                         f"got {n}.")
    ids = pd.DataFrame({"row": [item.get("row") for item in datalist],
                        "case_id": [item.get("case_id") for item in datalist]})
    log.info("loading %d images and masks at %d px", n, load_size)
    images, landmarks = load_images_and_landmarks(datalist, spec, load_size)
    h, w = images.shape[-2:]
    names = [lm.name for lm in spec]
    _write_csv(pd.DataFrame([{**ids.iloc[i].to_dict(), "landmark": name, "y": landmarks[i, j, 0],
                              "x": landmarks[i, j, 1]} for i in range(n) for j, name in enumerate(names)]),
               out / "landmarks.csv")

    # geometry, drawn once for all encoders
    wholes, parts, whole_image, whole_k, whole_rep = [], [], [], [], []
    if "composability" in analyses:
        for i in range(n):
            for k in (2, 3, 4):
                for r in range(int(wholes_per_k)):
                    side = rng.uniform(0.25, 1.0) * min(h, w)
                    top, left = rng.uniform(0, h - side), rng.uniform(0, w - side)
                    box = np.array([top, left, top + side, left + side])
                    wholes.append(box)
                    parts.append(guillotine_parts(rng, box, k))
                    whole_image.append(i)
                    whole_k.append(k)
                    whole_rep.append(r)
    per_image = 3 * int(wholes_per_k)
    partner = (np.arange(len(wholes)) + per_image) % max(len(wholes), 1)  # same (k, repeat) of the next image
    interp_side = patch_fraction * h
    points, point_image, point_t, rejected = [], [], [], 0
    if "interpolation" in analyses:
        for i in range(n):
            for t in ts:
                for _ in range(int(samples_per_t)):
                    pts, tries = sample_interpolation_points(rng, (h, w), float(t), interp_side)
                    points.append(pts)
                    point_image.append(i)
                    point_t.append(float(t))
                    rejected += tries

    # the analysis patches BatchNorm statistics are estimated on (all analyses pooled; a seeded subset)
    pool_boxes, pool_index = [], []
    if "localizability" in analyses:
        pool_boxes.append(centre_boxes(landmarks.reshape(-1, 2), patch_fraction * h))
        pool_index.append(np.repeat(np.arange(n), len(names)))
    if "hierarchy" in analyses:
        boxes, index = _hierarchy_boxes(landmarks, h, levels)
        pool_boxes.append(boxes)
        pool_index.append(index)
    if "composability" in analyses:
        pool_boxes += [np.stack(wholes), np.concatenate(parts)]
        pool_index += [np.array(whole_image), np.repeat(whole_image, [len(p) for p in parts])]
    if "interpolation" in analyses:
        pool_boxes.append(centre_boxes(np.stack(points).reshape(-1, 2), interp_side))
        pool_index.append(np.repeat(point_image, 4))
    pool_boxes_all, pool_index_all = np.concatenate(pool_boxes), np.concatenate(pool_index)
    bn_take = np.sort(np.random.default_rng([int(seed), 1]).choice(
        len(pool_boxes_all), size=min(int(bn_patches), len(pool_boxes_all)), replace=False))
    bn_pool: torch.Tensor | None = None  # cropped when an encoder needs it

    frames: dict[str, list[pd.DataFrame]] = {a: [] for a in analyses}
    retrieval_frames: list[pd.DataFrame] = []
    tables: dict[str, str] = {}
    bn_estimated: dict[str, bool] = {}
    for enc_name, enc_spec in encoders.items():
        log.info("zero-shot analyses of encoder %s (%s)", enc_name, enc_spec)
        encoder = build_encoder(enc_spec, stem=stem, logger=log)
        if bn_pool is None and bn_stats != "running":
            bn_pool = crop_boxes(images, pool_boxes_all[bn_take], pool_index_all[bn_take], image_size)
        encoder, bn_estimated[enc_name] = prepare_encoder(
            encoder, bn_pool if bn_pool is not None else torch.zeros(0), bn_stats, device=device)
        log.info("encoder %s: %s", enc_name, f"BatchNorm statistics estimated on {len(bn_take)} analysis patches"
                 if bn_estimated[enc_name] else "its own BatchNorm statistics")
        if "localizability" in analyses:
            emb = landmark_embeddings(encoder, images, landmarks, image_size, patch_fraction, device=device)
            dist, ncc = distances_to_centroid(emb), nearest_centroid_accuracy(emb)
            frames["localizability"].append(pd.DataFrame(
                [{"encoder": enc_name, **ids.iloc[i].to_dict(), "landmark": name, "distance": dist[i, j],
                  "nearest_centroid": ncc[i, j]} for i in range(n) for j, name in enumerate(names)]))
        if "hierarchy" in analyses:
            emb = hierarchy_embeddings(encoder, images, landmarks, image_size, levels, device=device)
            correct = cross_level_retrieval(emb)
            rows = []
            for i in range(n):
                for a, la in enumerate(levels):
                    for b, lb in enumerate(levels):
                        if a != b:
                            rows += [{"encoder": enc_name, **ids.iloc[i].to_dict(), "query_level": la,
                                      "gallery_level": lb, "landmark": name, "correct": bool(correct[i, a, b, j])}
                                     for j, name in enumerate(names)]
            retrieval_frames.append(pd.DataFrame(rows))
            flat = emb.reshape(-1, emb.shape[-1])
            coords = umap_embed(flat, seed=seed)
            grid = [(i, lv, name) for i in range(n) for lv in levels for name in names]
            frames["hierarchy"].append(pd.DataFrame(
                [{"encoder": enc_name, **ids.iloc[i].to_dict(), "level": lv, "landmark": name,
                  "umap_x": coords[m, 0], "umap_y": coords[m, 1]} for m, (i, lv, name) in enumerate(grid)]))
            plot_hierarchy(coords, [g[2] for g in grid], [g[1] for g in grid], out / f"hierarchy_{safe_file_name(enc_name, fallback='encoder')}.png",
                           title=f"{enc_name}: landmark patches at levels {tuple(levels)}")
        if "composability" in analyses:
            matched, mismatched = composability(encoder, images, np.stack(wholes), parts, np.array(whole_image),
                                                partner, image_size, device=device)
            frames["composability"].append(pd.DataFrame({
                "encoder": enc_name, "row": ids["row"].to_numpy()[whole_image],
                "case_id": ids["case_id"].to_numpy()[whole_image], "k": whole_k, "repeat": whole_rep,
                "side": [b[2] - b[0] for b in wholes], "matched": matched, "mismatched": mismatched,
                "difference": matched - mismatched,
                "partner_row": ids["row"].to_numpy()[np.array(whole_image)[partner]]}))
        if "interpolation" in analyses:
            pts = np.stack(points)
            scores = interpolation_controls(interpolation_embeddings(
                encoder, images, pts, np.array(point_image), interp_side, image_size, device=device), np.array(point_t))
            base = {"encoder": enc_name, "row": ids["row"].to_numpy()[point_image],
                    "case_id": ids["case_id"].to_numpy()[point_image], "t": point_t,
                    "a_y": pts[:, 0, 0], "a_x": pts[:, 0, 1], "b_y": pts[:, 1, 0], "b_x": pts[:, 1, 1]}
            frames["interpolation"].append(pd.concat(
                [pd.DataFrame({**base, "kind": kind, "cosine": scores[kind], "mean_cosine": scores[f"{kind}_mean"],
                               "gain": scores[f"{kind}_gain"], "centred_cosine": scores[f"{kind}_centred"]})
                 for kind in ("interpolation", "extrapolation")], ignore_index=True))

    results: dict[str, pd.DataFrame] = {}
    boot = {"unit": "row", "seed": int(seed), "n_resamples": int(bootstrap_resamples)}
    controls: list[pd.DataFrame] = []

    def control(frame: pd.DataFrame, value: str, figure: str, statistic: str, chance: float | None,
                better: str) -> None:
        stats = summarise(frame, value, ["encoder"], **boot)
        controls.append(stats.assign(figure=figure, statistic=statistic, chance=chance, better=better))

    chance_l = 1.0 / len(names)
    if "localizability" in analyses:
        df = pd.concat(frames["localizability"], ignore_index=True)
        _write_csv(df, out / "localizability.csv")
        plot_boxes({e: g["distance"].to_numpy() for e, g in df.groupby("encoder", sort=False)},
                   out / "localizability.png", "distance to the landmark centroid",
                   f"Localizability: {n} images x {len(names)} landmarks (lower = better)")
        control(df, "distance", "localizability", "distance to centroid (paper)", None, "lower")
        control(df, "nearest_centroid", "localizability", "leave-one-image-out nearest-centroid accuracy", chance_l,
                "higher")
        tables["localizability"] = (
            f"### Localizability (distance of L2-normalised landmark embeddings to their centroid; lower = better)\n\n"
            + markdown_table(summarise(df, "distance", ["encoder"], **boot), "encoder") + "\nPer landmark:\n\n"
            + markdown_table(summarise(df, "distance", ["landmark", "encoder"], **boot), "landmark", "encoder")
            + f"\nControl: leave-one-image-out nearest-centroid accuracy of the landmark (chance {chance_l:.3f}; a "
            "constant embedding has distance 0 but scores chance here):\n\n"
            + markdown_table(summarise(df, "nearest_centroid", ["encoder"], **boot), "encoder") + "\nPer landmark:\n\n"
            + markdown_table(summarise(df, "nearest_centroid", ["landmark", "encoder"], **boot), "landmark",
                             "encoder"))
        results["localizability"] = df
    if "hierarchy" in analyses:
        df = pd.concat(frames["hierarchy"], ignore_index=True)
        ret = pd.concat(retrieval_frames, ignore_index=True)
        _write_csv(df, out / "hierarchy.csv")
        _write_csv(ret, out / "hierarchy_retrieval.csv")
        per_image = ret.groupby(["encoder", "row"], sort=False)["correct"].mean().rename("accuracy").reset_index()
        control(per_image, "accuracy", "hierarchy", "cross-level top-1 retrieval accuracy", chance_l, "higher")
        plot_boxes({e: g["accuracy"].to_numpy() for e, g in per_image.groupby("encoder", sort=False)},
                   out / "hierarchy.png", "cross-level top-1 retrieval accuracy per image",
                   f"Part-whole hierarchy (chance {1 / len(names):.2f})")
        pairs = ret.assign(pair=[f"{a}->{b}" for a, b in zip(ret["query_level"], ret["gallery_level"])])
        pair_acc = pairs.groupby(["encoder", "pair", "row"], sort=False)["correct"].mean().rename("accuracy")
        tables["hierarchy"] = (
            f"### Part-whole hierarchy: cross-level same-landmark top-1 retrieval accuracy (levels {tuple(levels)}, "
            f"chance {1 / len(names):.3f}; sd and n over images)\n\n"
            + markdown_table(summarise(per_image, "accuracy", ["encoder"], **boot), "encoder")
            + "\nPer ordered level pair (query -> gallery):\n\n"
            + markdown_table(summarise(pair_acc.reset_index(), "accuracy", ["encoder", "pair"], **boot), "encoder",
                             "pair"))
        results["hierarchy"] = df
        results["hierarchy_retrieval"] = ret
    if "composability" in analyses:
        df = pd.concat(frames["composability"], ignore_index=True)
        _write_csv(df, out / "composability.csv")
        groups: dict[str, np.ndarray] = {}
        for e, g in df.groupby("encoder", sort=False):
            groups[f"{e} matched"] = g["matched"].to_numpy()
            groups[f"{e} mismatched"] = g["mismatched"].to_numpy()
        plot_boxes(groups, out / "composability.png", "cos(E_whole, mean of part embeddings)",
                   "Composability (k = 2, 3, 4 guillotine parts)")
        long = df.melt(id_vars=["encoder", "row"], value_vars=["matched", "mismatched", "difference"],
                       var_name="pair", value_name="cosine")
        by_k = df.assign(k=[f"k={k}" for k in df["k"]])
        control(df, "matched", "composability", "matched cosine (paper)", None, "higher")
        control(df, "difference", "composability", "matched - mismatched", 0.0, "higher")
        tables["composability"] = (
            "### Composability: cos(E_whole, mean of part embeddings), the parts' own whole (matched) vs another "
            "image's parts (mismatched)\n\n"
            + markdown_table(summarise(long, "cosine", ["encoder", "pair"], **boot), "encoder", "pair")
            + "\nDifference (matched - mismatched; the control, chance 0) per part count:\n\n"
            + markdown_table(summarise(by_k, "difference", ["encoder", "k"], **boot), "encoder", "k"))
        results["composability"] = df
    if "interpolation" in analyses:
        df = pd.concat(frames["interpolation"], ignore_index=True)
        _write_csv(df, out / "interpolation.csv")
        groups = {f"{e} {kind[:6]}.": g["cosine"].to_numpy()
                  for (e, kind), g in df.groupby(["encoder", "kind"], sort=False)}
        plot_boxes(groups, out / "interpolation.png", "cosine", "Interpolation / extrapolation (t = "
                   + ", ".join(f"{t:g}" for t in ts) + ")")
        col = df.assign(column=[f"{k[:6]}. t={t:g}" for k, t in zip(df["kind"], df["t"])])
        for kind in ("interpolation", "extrapolation"):
            sub = df[df["kind"] == kind]
            control(sub, "cosine", kind, "cosine (paper)", None, "higher")
            control(sub, "mean_cosine", kind, "mean-embedding predictor cosine", None, "higher")
            control(sub, "gain", kind, "cosine - mean-embedding predictor", 0.0, "higher")
            control(sub, "centred_cosine", kind, "cosine after centring on the mean embedding", 0.0, "higher")
        ctrl = df.melt(id_vars=["encoder", "row", "kind"], value_vars=["mean_cosine", "gain", "centred_cosine"],
                       var_name="control", value_name="value")
        ctrl = ctrl.assign(column=[f"{k[:6]}. {c}" for k, c in zip(ctrl["kind"], ctrl["control"])])
        tables["interpolation"] = (
            "### Interpolation cos(t E_A + (1 - t) E_B, E_C) and extrapolation cos(t (E_B - E_A) + E_B, E_D)\n\n"
            + markdown_table(summarise(df, "cosine", ["encoder", "kind"], **boot), "encoder", "kind")
            + "\nPer t:\n\n"
            + markdown_table(summarise(col, "cosine", ["encoder", "column"], **boot), "encoder", "column")
            + "\nControls: mean_cosine = cos(M, E_target), the trivial predictor \"mean embedding M of all patches\"; "
            "gain = cosine - mean_cosine (chance 0); centred_cosine = the cosine after subtracting M from every "
            "embedding (chance 0). A constant embedding scores 1 on the cosine and 0 on gain and centred_cosine.\n\n"
            + markdown_table(summarise(ctrl, "value", ["encoder", "column"], **boot), "encoder", "column")
            + f"\nPatch side {interp_side:g} px at {h} px; {len(points)} samples kept, {rejected} draws rejected "
            "(a patch outside the image, or |A - B| < patch side).\n")
        results["interpolation"] = df
    for analysis, table in tables.items():
        _write_text(out / f"{analysis}.md", table)
    columns = ["encoder", "figure", "statistic", "mean", "ci_low", "ci_high", "sd", "n", "units", "chance", "better"]
    control_frame = pd.concat(controls, ignore_index=True)[columns].rename(columns={"units": "images"})
    control_frame.insert(1, "bn_stats_estimated", [bn_estimated[e] for e in control_frame["encoder"]])
    _write_csv(control_frame, out / "controls.csv")
    results["controls"] = control_frame
    bn_lines = "\n".join(
        f"- {e}: " + (f"BatchNorm statistics estimated on {len(bn_take)} analysis patches ("
                      + ("it had never been trained: the k-NN monitor's rule" if bn_stats == "auto"
                         else "bn_stats 'recompute'") + ")" if bn_estimated[e]
                      else "its own BatchNorm statistics (" + ("trained, or no BatchNorm" if bn_stats == "auto"
                                                                else f"bn_stats {bn_stats!r}") + ")")
        for e in encoders)
    ctrl_table = control_frame.assign(
        measure=[f"{f}: {st}" + (f" (chance {c:.3f})" if pd.notna(c) else "") + f", {b} = better"
             for f, st, c, b in zip(control_frame["figure"], control_frame["statistic"], control_frame["chance"],
                                    control_frame["better"])])
    controls_md = ("### Figures and their controls (mean ± sd (n) [95 % percentile bootstrap interval over images, "
                   f"scipy.stats.bootstrap, {int(bootstrap_resamples)} resamples, seed {int(seed)}])\n\n"
                   + markdown_table(ctrl_table, "measure", "encoder") + "\n")
    settings = {"manifest": str(manifest), "encoders": dict(encoders), "image_size": int(image_size),
                "bn_stats": bn_stats, "bn_patches": int(len(bn_take)), "bn_stats_estimated": bn_estimated,
                "bootstrap": {"method": "percentile (scipy.stats.bootstrap)", "confidence": 0.95, "unit": "image",
                              "resamples": int(bootstrap_resamples), "seed": int(seed)},
                "load_size": int(load_size), "analyses": list(analyses), "splits": list(splits) if splits else None,
                "max_images": max_images, "images": n, "seed": int(seed), "landmarks": names,
                "patch_fraction": patch_fraction, "levels": list(levels), "wholes_per_k": int(wholes_per_k),
                "samples_per_t": int(samples_per_t), "ts": list(ts), "interpolation_rejected": int(rejected)}
    _write_text(out / "settings.json", json.dumps(settings, indent=2) + "\n")
    header = (f"# Zero-shot analyses\n\n{n} images of {Path(manifest).name}"
              f"{' (splits ' + ', '.join(splits) + ')' if splits else ''} at {load_size} px, encoder input "
              f"{image_size} px, seed {seed}; encoders: " + ", ".join(f"{k}" for k in encoders) + ".\n\n"
              + f"BatchNorm statistics (bn_stats {bn_stats!r}):\n\n{bn_lines}\n\n")
    _write_text(out / "summary.md", header + controls_md + "\n" + "\n".join(tables[a] for a in analyses
                                                                           if a in tables))
    log.info("wrote %s", out / "summary.md")
    return results
