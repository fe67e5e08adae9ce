"""A small synthetic segmentation task (chest phantoms with heart and lung masks) for the segment bundle's defaults.

The demo corpus (:mod:`modan_monai.data.demo`) has no masks, so the segmentation bundle runs on a fresh machine on
this task instead. It follows the JSRT/SCR layout of ``data_manifests/jsrt.py``::

    <root>/images/000.png ...                                 8-bit radiograph-like chest phantoms
    <root>/masks/{heart,left_lung,right_lung}/000.png ...     0/255 masks with the image's file name
    <root>/segmentation.csv                                   manifest: mask_heart, mask_left_lung, mask_right_lung

Radiological convention as in JSRT: the patient's left lung is on the image's right. The heart overlaps the
left lung a little, so the structures are multi-label (as the SCR clavicles over the lungs).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .demo import default_demo_dir
from .manifest import write_manifest

__all__ = ["DEMO_SEGMENTATION_MANIFEST", "DEMO_SEGMENTATION_STRUCTURES", "demo_segmentation_manifest"]

DEMO_SEGMENTATION_MANIFEST = "segmentation.csv"
DEMO_SEGMENTATION_STRUCTURES: tuple[str, ...] = ("heart", "left_lung", "right_lung")
_VERSION = "1"
_SPLITS = {"val": 0.2, "test": 0.2}


def _phantom(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A radiograph-like chest phantom in [0, 255] and its boolean structure masks."""
    from scipy.ndimage import gaussian_filter

    ax = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")

    def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0

    j = lambda s=0.06: float(rng.uniform(-s, s))  # noqa: E731 - random jitter of the shapes
    body = ellipse(j(0.03), j(0.03), 0.92 + j(0.04), 0.85 + j(0.04))
    masks = {
        "right_lung": ellipse(-0.1 + j(), -0.4 + j(), 0.55 + j(), 0.27 + j()) & body,  # image left
        "left_lung": ellipse(-0.1 + j(), 0.4 + j(), 0.5 + j(), 0.25 + j()) & body,  # image right
        "heart": ellipse(0.22 + j(), 0.15 + j(), 0.28 + j(0.04), 0.3 + j(0.04)) & body,
    }
    tissue = np.where(body, 0.55, 0.05).astype(np.float32)
    tissue[masks["right_lung"] | masks["left_lung"]] = 0.2
    tissue[masks["heart"]] = 0.75
    tissue[np.abs(xx) < 0.06] = 0.9  # spine
    image = gaussian_filter(tissue, 1.0) + rng.normal(0.0, 0.04, tissue.shape)
    return np.clip(image * 255.0, 0, 255).astype(np.uint8), masks


def demo_segmentation_manifest(
    root: str | Path | None = None, size: int = 64, n_images: int = 40, seed: int = 0
) -> str:
    """Write (once) the demo segmentation task and return its manifest path.

    ``n_images`` phantoms (one case each) are split per case: 20% ``val``, 20% ``test`` (at least one each), the
    rest ``train`` (24 of the default 40, the largest few-shot set). The files are rewritten only when ``root``
    does not hold this exact version, size, count and seed; the manifest is written atomically.

    Args:
        root: output folder; default ``<demo dir>/segmentation`` (:func:`modan_monai.data.demo.default_demo_dir`).
        size: image side in pixels.
        n_images: number of images (>= 3).
        seed: random seed of the shapes, noise and split.

    Returns:
        The manifest path (str), columns ``path, modality (XR), anatomy (chest), split, dataset, case_id,
        mask_heart, mask_left_lung, mask_right_lung``.

    Raises:
        ValueError: when ``n_images`` < 3 or ``size`` < 16.
    """
    from PIL import Image

    if n_images < 3:
        raise ValueError(f"n_images must be >= 3 (one image per split at least), got {n_images}.")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}.")
    root = Path(root) if root is not None else default_demo_dir() / "segmentation"
    manifest = root / DEMO_SEGMENTATION_MANIFEST
    stamp = f"{_VERSION} size={size} n_images={n_images} seed={seed}\n"
    version = root / "VERSION"
    if manifest.is_file() and version.is_file() and version.read_text() == stamp:
        return str(manifest)

    rng = np.random.default_rng(seed)
    order = rng.permutation(n_images)
    n_val = max(1, round(_SPLITS["val"] * n_images))
    n_test = max(1, round(_SPLITS["test"] * n_images))
    split_of = {int(i): "val" if r < n_val else "test" if r < n_val + n_test else "train" for r, i in enumerate(order)}
    rows = []
    for structure in DEMO_SEGMENTATION_STRUCTURES:
        (root / "masks" / structure).mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        image, masks = _phantom(size, rng)
        name = f"{i:03d}.png"
        Image.fromarray(image, mode="L").save(root / "images" / name)
        row = {"path": str(root / "images" / name), "modality": "XR", "anatomy": "chest", "split": split_of[i],
               "dataset": "demo_segmentation", "case_id": f"phantom{i:03d}"}
        for structure in DEMO_SEGMENTATION_STRUCTURES:
            path = root / "masks" / structure / name
            Image.fromarray(masks[structure].astype(np.uint8) * 255, mode="L").save(path)
            row[f"mask_{structure}"] = str(path)
        rows.append(row)
    fd, tmp = tempfile.mkstemp(suffix=".csv", dir=root)
    os.close(fd)
    write_manifest(pd.DataFrame(rows), tmp)
    os.replace(tmp, manifest)
    version.write_text(stamp)
    return str(manifest)
