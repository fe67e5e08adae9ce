"""Tiny labelled image manifests written by the evaluation tests (imported by their conftest and tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

__all__ = ["write_png_manifest"]


def write_png_manifest(root: Path, n_cases: int = 12, per_case: int = 2, size: int = 32, seed: int = 0) -> Path:
    """``n_cases`` cases of ``per_case`` 8-bit PNGs; half the cases are positive (a bright disc), half negative.

    Columns: the manifest columns plus ``label`` (0/1) and ``finding`` (``"benign"``/``"malignant"``).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    (root / "png").mkdir(parents=True, exist_ok=True)
    for case in range(n_cases):
        label = case % 2
        for i in range(per_case):
            img = rng.normal(60, 10, (size, size))
            if label:
                cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2] = 200
            path = root / "png" / f"c{case:02d}_{i}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(path)
            rows.append({"path": str(path.relative_to(root)), "key": "", "index": "", "modality": "US",
                         "anatomy": "breast", "split": "train", "dataset": "toy", "case_id": f"case{case:02d}",
                         "label": label, "finding": "malignant" if label else "benign"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
