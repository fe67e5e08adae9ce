"""Manifest-reading benchmark: rows/s of read_manifest and manifest_to_datalist next to bare pandas.read_csv.

For each size, writes a manifest CSV (PNG paths in folders of ``--per-folder`` files, modality, anatomy, label,
case_id, split...) to a temporary folder and times, on the same file: bare ``pandas.read_csv``,
:func:`modan_monai.data.read_manifest`, :func:`modan_monai.data.manifest_to_datalist` and both together. Without
``--check-files`` the manifest is read with ``check_files=False`` (the listed files do not exist); with it, one
empty file per row is created first and both modes are timed (``check_files=True`` lists each folder once).

Usage:
    python scripts/bench_manifest.py [--rows 10000 100000 1000000] [--check-files] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from modan_monai.data import manifest_to_datalist, read_manifest  # noqa: E402

T = TypeVar("T")


def manifest_frame(rows: int, per_folder: int, seed: int = 0) -> pd.DataFrame:
    """A manifest of ``rows`` PNG rows, ``per_folder`` files per folder, with the usual metadata columns."""
    rng = np.random.default_rng(seed)
    i = np.arange(rows)
    return pd.DataFrame({
        "path": [f"images/f{k // per_folder:05d}/img_{k:07d}.png" for k in i.tolist()],
        "key": "",
        "index": "",
        "modality": rng.choice(["XR", "CT", "MRI", "US"], rows),
        "anatomy": rng.choice(["chest", "head", "knee", "breast"], rows),
        "split": rng.choice(["train", "val", "test"], rows, p=[0.8, 0.1, 0.1]),
        "dataset": "synthetic",
        "case_id": [f"case{k // 3:07d}" for k in i.tolist()],
        "label": rng.integers(0, 2, rows),
    })


def create_files(root: Path, paths: list[str]) -> tuple[int, float]:
    """Create an empty file for each relative path under ``root``; returns the folder count and the seconds taken."""
    start = time.perf_counter()
    folders = sorted({os.path.dirname(p) for p in paths})
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for path in paths:
        os.close(os.open(root / path, os.O_CREAT | os.O_WRONLY, 0o644))
    return len(folders), time.perf_counter() - start


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[T, float, float]:
    """Call ``fn`` ``repeat`` times; return the last result and the fastest run's wall and CPU seconds.

    The CPU time (``time.process_time``: this process, all its threads) is the steadier figure on a shared machine.
    """
    wall = cpu = float("inf")
    result = None
    for _ in range(repeat):
        result = None  # the previous result is freed before the next run, as a fresh call would find memory
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return result, wall, cpu


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="manifest sizes")
    parser.add_argument("--per-folder", type=int, default=1000, help="files per image folder")
    parser.add_argument("--check-files", action="store_true",
                        help="create the listed files and also time read_manifest(check_files=True)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement (the fastest is reported)")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temporary folder (default: system)")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.rows))
    if sizes[0] < 1 or args.per_folder < 1 or args.repeat < 1:
        parser.error("--rows, --per-folder and --repeat must be >= 1")
    modes = [False, True] if args.check_files else [False]
    print(f"cpus: {os.cpu_count()}  pandas {pd.__version__}  numpy {np.__version__}  python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        largest = manifest_frame(sizes[-1], args.per_folder)
        if args.check_files:
            folders, seconds = create_files(root, largest["path"].tolist())
            print(f"created {len(largest)} empty files in {folders} folders ({seconds:.1f} s, not timed below)")
        header = (f"{'rows':>9s} {'check_files':>11s} {'read_csv/s':>11s} {'read_manifest/s':>15s} "
                  f"{'to_datalist/s':>13s} {'both/s':>9s} {'both s':>7s} {'vs read_csv':>11s} {'both/s cpu':>10s}")
        print(header)
        print("-" * len(header))
        for rows in sizes:
            csv = root / f"manifest_{rows}.csv"
            largest.iloc[:rows].to_csv(csv, index=False)
            _, t_csv, c_csv = timed(lambda csv=csv: pd.read_csv(csv), args.repeat)
            for check in modes:
                df, t_read, c_read = timed(lambda csv=csv, check=check: read_manifest(csv, check_files=check),
                                           args.repeat)
                items, t_list, c_list = timed(lambda df=df: manifest_to_datalist(df), args.repeat)
                if len(items) != rows:
                    raise RuntimeError(f"expected {rows} datalist rows, got {len(items)}")
                both = t_read + t_list
                print(f"{rows:9d} {str(check):>11s} {rows / t_csv:11.0f} {rows / t_read:15.0f} {rows / t_list:13.0f} "
                      f"{rows / both:9.0f} {both:7.2f} {both / t_csv:10.1f}x {rows / (c_read + c_list):10.0f}")
                del df, items
    print("read_csv = bare pandas.read_csv of the same file; both = read_manifest + manifest_to_datalist;")
    print("vs read_csv = time of both / time of read_csv; both/s cpu = rows / CPU seconds of both (the steadier")
    print(f"figure when other processes share the CPUs); fastest of {args.repeat} run(s) each. check_files=True: "
          "every row's file exists.")


if __name__ == "__main__":
    main()
