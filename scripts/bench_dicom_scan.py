#!/usr/bin/env python
"""Header-scan throughput of the DICOM-folder manifest builder: files/s with 1 process vs several.

Builds the ``dicom_dir`` manifest of a folder (``data_manifests.dicom_dir.build``: headers only, read with
``stop_before_pixels=True``) with ``workers=1`` and with each other requested worker count, alternately, and prints
the median files/s of each and the speed-up. The frames must be identical for every worker count (checked). To get a
count of files worth timing, the folder's files can be linked (or copied) ``--copies`` times into a temporary folder.

Usage:
    python scripts/bench_dicom_scan.py [FOLDER] [--copies 20] [--mode hardlink|copy|symlink] [--workers 1 2]
        [--repeats 3]

FOLDER defaults to the shared TCGA CT slices, ``$MODAN_SHARED_DATASETS/ct_tcga_dicom/dicom_dir`` (or
``<repo>/../shared/datasets/...``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from data_manifests import dicom_dir  # noqa: E402

_PLACE = {"hardlink": os.link, "copy": shutil.copy2, "symlink": os.symlink}


def default_folder() -> Path:
    """The shared TCGA CT DICOM folder: ``$MODAN_SHARED_DATASETS`` or ``<repo>/../shared/datasets``."""
    env = os.environ.get("MODAN_SHARED_DATASETS")
    datasets = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return datasets / "ct_tcga_dicom" / "dicom_dir"


def replicate(source: Path, target: Path, copies: int, mode: str) -> int:
    """Place every file of ``source`` ``copies`` times under ``target/copy_<k>/`` (hard links fall back to copies).

    Returns:
        The number of files placed.
    """
    files = sorted(p for p in source.iterdir() if p.is_file())
    if not files:
        raise SystemExit(f"error: no files in {source}")
    place = _PLACE[mode]
    for k in range(copies):
        folder = target / f"copy_{k:03d}"
        folder.mkdir(parents=True)
        for file in files:
            try:
                place(file.resolve(), folder / file.name)
            except OSError:  # e.g. a hard link across file systems
                shutil.copy2(file, folder / file.name)
    return copies * len(files)


def scan(folder: Path, workers: int) -> tuple[float, pd.DataFrame]:
    """Seconds of one ``dicom_dir.build`` of ``folder`` with ``workers`` processes, and its frame."""
    start = time.perf_counter()
    frame = dicom_dir.build(folder, salt="bench-dicom-scan", workers=workers)
    return time.perf_counter() - start, frame


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=None, help="DICOM folder (default: shared TCGA CT)")
    parser.add_argument("--copies", type=int, default=20, help="place the files N times in a temp folder (0: scan "
                                                                "the folder itself; default 20)")
    parser.add_argument("--mode", choices=sorted(_PLACE), default="hardlink", help="how copies are made")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed scans per worker count (default 3)")
    args = parser.parse_args(argv)
    folder = (args.folder or default_folder()).expanduser()
    if not folder.is_dir():
        raise SystemExit(f"error: DICOM folder not found: {folder} (pass one, or set MODAN_SHARED_DATASETS)")
    counts = list(dict.fromkeys([1, *args.workers]))
    with tempfile.TemporaryDirectory(prefix="bench_dicom_scan_") as tmp:
        root = folder
        if args.copies > 0:
            root = Path(tmp) / "tree"
            n = replicate(folder, root, args.copies, args.mode)
            print(f"{n} files: {args.copies} x {folder} ({args.mode})")
        _, reference = scan(root, 1)  # warm the page cache and the imports; reference frame
        print(f"{len(reference)} DICOM files; cpu_count {os.cpu_count()}; {args.repeats} timed scans each")
        times: dict[int, list[float]] = {w: [] for w in counts}
        for _ in range(args.repeats):
            for workers in counts:
                seconds, frame = scan(root, workers)
                pd.testing.assert_frame_equal(frame, reference)  # the same frame for any worker count
                times[workers].append(seconds)
    base = statistics.median(times[1])
    print("| workers | median s | files/s | speed-up |")
    print("|---|---|---|---|")
    for workers in counts:
        median = statistics.median(times[workers])
        print(f"| {workers} | {median:.3f} | {len(reference) / median:,.0f} | {base / median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
