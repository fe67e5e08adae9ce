"""Decode-throughput benchmark for modan_monai readers and a cached MONAI pipeline.

Measures images/s of :func:`modan_monai.data.read_image_row` on real files from the shared
datasets (DICOM CT, PNG head CT and JSRT, MedMNIST npz), then a ``monai.data.CacheDataset``
pipeline (LoadManifestImaged -> NormalizeByModalityd -> Resized 64) over the same rows:
first epoch (fills the cache) vs second epoch (served from the cache).

Usage:
    python scripts/bench_decode.py [--datasets ../shared/datasets] [--n 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from monai.data import CacheDataset  # noqa: E402
from monai.transforms import Compose, Resized  # noqa: E402

from modan_monai.data.readers import read_image_row  # noqa: E402
from modan_monai.transforms.intensity import NormalizeByModalityd  # noqa: E402
from modan_monai.transforms.io import LoadManifestImaged  # noqa: E402

T = TypeVar("T")


def default_datasets_dir() -> Path:
    """``$MODAN_SHARED_DATASETS`` or ``<repo>/../shared/datasets``."""
    env = os.environ.get("MODAN_SHARED_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"


def build_rows(root: Path, n: int) -> dict[str, list[dict]]:
    """Datalist rows (plain dicts) per format, ``n`` each.

    Raises:
        FileNotFoundError: a dataset folder or file is missing.
    """
    dicom = sorted((root / "ct_tcga_dicom" / "dicom_dir").glob("*.dcm"))[:n]
    head_ct = sorted((root / "head_ct_hemorrhage" / "head_ct").glob("*.png"))[:n]
    jsrt = sorted((root / "jsrt_scr" / "images_1024").glob("*.png"))[:n]
    npz = root / "pneumoniamnist" / "pneumoniamnist.npz"
    for name, found in (("ct_tcga_dicom", dicom), ("head_ct_hemorrhage", head_ct), ("jsrt_scr", jsrt)):
        if not found:
            raise FileNotFoundError(f"no images found for {name} under {root}")
    if not npz.is_file():
        raise FileNotFoundError(f"file not found: {npz}")

    def row(path: Path, modality: str, **extra: object) -> dict:
        return {"image": str(path), "key": None, "index": None, "modality": modality, **extra}

    return {
        "dicom CT 512x512 (uncompressed)": [row(p, "CT") for p in dicom],
        "png head CT (RGB-encoded grey)": [row(p, "CT") for p in head_ct],
        "png JSRT 1024x1024 grey": [row(p, "XR") for p in jsrt],
        "npz PneumoniaMNIST 28x28": [row(npz, "XR", key="train_images", index=i) for i in range(n)],
    }


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Call ``fn`` and return its result and the elapsed seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=default_datasets_dir(), help="shared datasets folder")
    parser.add_argument("--n", type=int, default=50, help="images per format")
    parser.add_argument("--size", type=int, default=64, help="Resized spatial size in the cached pipeline")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch intra-op threads (DataLoader workers use 1)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    if not args.datasets.is_dir():
        parser.error(f"datasets folder not found: {args.datasets} (use --datasets or MODAN_SHARED_DATASETS)")
    groups = build_rows(args.datasets, args.n)

    pipeline = Compose(
        [
            LoadManifestImaged(keys="image"),
            NormalizeByModalityd(keys="image"),
            Resized(keys="image", spatial_size=(args.size, args.size), mode="bilinear", anti_aliasing=False),
        ]
    )
    header = f"{'format':34s} {'n':>4s} {'read img/s':>11s} {'epoch1 img/s':>13s} {'epoch2 img/s':>13s} {'cache x':>8s}"
    print(f"datasets: {args.datasets}  torch threads: {torch.get_num_threads()}")
    print(header)
    print("-" * len(header))
    for name, rows in groups.items():
        read_image_row(rows[0])  # warm-up (imports, npz cache)
        _, t_read = timed(lambda rows=rows: [read_image_row(r) for r in rows])
        # CacheDataset runs the deterministic transforms when it is built: epoch 1 = build + one pass
        cached, t_fill = timed(
            lambda rows=rows: CacheDataset(
                rows, pipeline, cache_rate=1.0, num_workers=0, progress=False, copy_cache=False
            )
        )
        _, t_pass1 = timed(lambda cached=cached: [cached[i] for i in range(len(cached))])
        _, t_second = timed(lambda cached=cached: [cached[i] for i in range(len(cached))])
        t_first = t_fill + t_pass1
        n = len(rows)
        shape = tuple(cached[0]["image"].shape)
        assert shape == (1, args.size, args.size), shape
        assert 0.0 <= float(cached[0]["image"].min()) and float(cached[0]["image"].max()) <= 1.0
        print(
            f"{name:34s} {n:4d} {n / t_read:11.1f} {n / t_first:13.1f} {n / t_second:13.1f} "
            f"{t_first / max(t_second, 1e-9):8.1f}"
        )
    print("read = read_image_row only; epoch1 = CacheDataset fill (load+normalise+resize) + one pass;")
    print("epoch2 = second pass served from the cache; cache x = epoch1 time / epoch2 time.")


if __name__ == "__main__":
    main()
