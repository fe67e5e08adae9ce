"""Epoch time and memory of the bundles' ``cache`` choices (``none``, ``memory``, ``disk``) on real images.

The rows are JSRT chest radiographs (1024x1024 PNG) and TCGA CT DICOM slices from the shared datasets; the
transforms are the pretraining bundle's deterministic part (:func:`modan_monai.transforms.load_preprocess_transforms`)
at ``--image-size`` followed by its random SimCLR views, as in training. One run prints, per choice:

- ``none``: an epoch (every image decoded);
- ``memory``: building the ``CacheDataset`` and one epoch from RAM;
- ``disk``: the first run (decodes and writes the ``PersistentDataset`` entries) and a second run over a new
  dataset object on the same folder (reads the entries back, decodes nothing), as a later epoch or a later
  training run sees it;

then the bytes one cached image takes (RAM and disk) and what 100 k images need at 64 and 224 px.

Usage:
    python scripts/bench_cache.py [--datasets ../shared/datasets] [--n 100] [--image-size 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from monai.transforms import Compose  # noqa: E402

from modan_monai.data import cached_dataset  # noqa: E402
from modan_monai.transforms import SimCLRViewsd, load_preprocess_transforms  # noqa: E402


def default_datasets_dir() -> Path:
    """``$MODAN_SHARED_DATASETS`` or ``<repo>/../shared/datasets``."""
    env = os.environ.get("MODAN_SHARED_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"


def rows(root: Path, n: int) -> list[dict]:
    """Half JSRT PNGs, half CT DICOM slices.

    Raises:
        FileNotFoundError: when either folder holds no image.
    """
    jsrt = sorted((root / "jsrt_scr" / "images_1024").glob("*.png"))[: n - n // 2]
    dicom = sorted((root / "ct_tcga_dicom" / "dicom_dir").glob("*.dcm"))[: n // 2]
    if not jsrt or not dicom:
        raise FileNotFoundError(f"JSRT PNGs or TCGA DICOM slices not found under {root}")
    return [{"image": str(p), "modality": "XR", "anatomy": "chest", "source": str(p)} for p in jsrt] + [
        {"image": str(p), "modality": "CT", "anatomy": "chest", "source": str(p)} for p in dicom
    ]


def pipeline(size: int) -> Compose:
    """The pretraining bundle's load transforms and views."""
    return Compose(load_preprocess_transforms(keys="image", image_size=size) + [
        SimCLRViewsd(keys="image", spatial_size=[size, size], num_views=2)
    ])


def epoch(dataset: torch.utils.data.Dataset) -> float:
    """Seconds to draw every item once."""
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return time.perf_counter() - start


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=default_datasets_dir())
    parser.add_argument("--n", type=int, default=100, help="images (half JSRT PNG, half CT DICOM)")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = rows(args.datasets, args.n)
    size = args.image_size
    print(f"{len(data)} images (JSRT 1024x1024 PNG + TCGA CT DICOM 512x512), resized to {size} px, 1 thread\n")

    epoch(cached_dataset(data, pipeline(size), cache="none"))  # warm-up: files in the page cache, imports done
    none_epoch = epoch(cached_dataset(data, pipeline(size), cache="none"))
    memory, memory_build = timed(lambda: cached_dataset(data, pipeline(size), cache="memory", progress=False))
    memory_epoch = epoch(memory)
    with tempfile.TemporaryDirectory() as folder:
        first_epoch = epoch(cached_dataset(data, pipeline(size), cache="disk", cache_dir=folder))
        second_epoch = epoch(cached_dataset(data, pipeline(size), cache="disk", cache_dir=folder))
        entries = list(Path(folder).glob("*/*.pt"))
        disk_bytes = sum(p.stat().st_size for p in entries) / len(entries)
    image = memory._cache[0]["image"]  # the cached (decoded, resized) image of one row
    ram_bytes = torch.as_tensor(image).element_size() * torch.as_tensor(image).nelement()

    print(f"{'cache':<8} {'what':<46} {'seconds':>8} {'img/s':>8}")
    for name, what, seconds in [
        ("none", "one epoch (decode every image)", none_epoch),
        ("memory", "build the CacheDataset (decode once)", memory_build),
        ("memory", "one epoch from RAM", memory_epoch),
        ("disk", "first run: decode + write the entries", first_epoch),
        ("disk", "second run: read the entries back", second_epoch),
    ]:
        print(f"{name:<8} {what:<46} {seconds:8.2f} {len(data) / seconds:8.0f}")
    print(f"\ndisk second run vs no cache: {none_epoch / second_epoch:.1f}x faster; "
          f"vs the first run: {first_epoch / second_epoch:.1f}x")
    print(f"one cached {size} px image: {ram_bytes / 1024:.1f} KiB in RAM (float32), {disk_bytes / 1024:.1f} KiB on disk")
    for px in (64, 224):
        ram = ram_bytes * (px / size) ** 2 * 100_000 / 2**30
        disk = (disk_bytes - ram_bytes + ram_bytes * (px / size) ** 2) * 100_000 / 2**30
        print(f"per 100k images at {px:>3} px: memory cache {ram:6.1f} GiB of RAM; disk cache {disk:6.1f} GiB of disk")


if __name__ == "__main__":
    main()
