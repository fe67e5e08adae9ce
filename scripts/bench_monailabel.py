"""Server start time and per-request latencies of the MONAI Label app, measured against a real local server.

Usage::

    python scripts/bench_monailabel.py [--image chest.png] [--repeats 5] [--out /tmp/bench_monailabel]

Serves random-weight models built from the bundles' ``network_def`` at their default sizes (segment 128 px,
classify 64 px; latency does not depend on the weights). The 2D image is ``--image`` (e.g. a 1024 x 1024 JSRT
radiograph) or a synthetic 512 x 512 PNG; the volume is a synthetic 256 x 256 x 20 NIfTI. Prints the time from
process start to the first ``/info/`` answer, the median and range of ``--repeats`` requests per case (the
first request of a model, which loads its weights, is reported apart), and one ``/train/segment`` round of one
epoch on 4 labelled images.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import requests
from PIL import Image

from modan_monai.apps.monailabel.lib.bundle import repository_bundle, write_initial_weights
from modan_monai.apps.monailabel.process import LocalServer


def _timed(call) -> tuple[float, requests.Response]:
    start = time.perf_counter()
    response = call()
    return time.perf_counter() - start, response


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None, help="a 2D image to serve (default: synthetic 512 px)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_monailabel_"))
    studies = root / "studies"
    studies.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if args.image is not None:
        shutil.copy(args.image, studies / f"img0{''.join(args.image.suffixes)}")
        ext = "".join(args.image.suffixes)
        size = Image.open(args.image).size
    else:
        ext, size = ".png", (512, 512)
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(studies / "img0.png")
    for i in range(1, 4):
        shutil.copy(studies / f"img0{ext}", studies / f"img{i}{ext}")
    nib.save(nib.Nifti1Image(rng.normal(0, 300, (256, 256, 20)).astype(np.float32), np.diag([0.7, 0.7, 2.0, 1.0])),
             str(studies / "vol.nii.gz"))
    conf = {f"{name}_model": write_initial_weights(repository_bundle(name), root / f"{name}.pt")
            for name in ("segment", "classify")}
    with LocalServer(studies, conf, log_file=root / "server.log") as server:
        print(f"server start (process start -> first /info/ answer): {server.start_seconds:.1f} s")
        cases = [
            (f"segment, 2D {ext} {size[0]}x{size[1]}", "segment", "img0", {}),
            ("segment, NIfTI volume 256x256x20 (slice by slice)", "segment", "vol", {}),
            ("segment, one NIfTI slice", "segment", "vol", {"slice": 10}),
            (f"classify, 2D {ext} {size[0]}x{size[1]}", "classify", "img0", {}),
        ]
        for label, model, image, params in cases:
            def call(model=model, image=image, params=params) -> requests.Response:
                return requests.post(f"{server.url}/infer/{model}", params={"image": image, "output": "json"},
                                     data={"params": json.dumps(params)}, timeout=600)

            first, response = _timed(call)
            if response.status_code != 200:
                raise RuntimeError(f"{label}: HTTP {response.status_code}: {response.text}")
            times = [_timed(call)[0] for _ in range(args.repeats)]
            print(f"{label}: median {statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}, "
                  f"max {max(times) * 1000:.0f}, n={len(times)}); first request {first * 1000:.0f} ms")
        label = np.zeros(size, np.uint8)
        label[size[0] // 4: size[0] // 2, size[1] // 4: 3 * size[1] // 4] = 1
        label[size[0] // 2: 3 * size[0] // 4, size[1] // 4: 3 * size[1] // 4] = 2
        for i in range(4):
            path = root / f"label{i}.png"
            Image.fromarray(label.T).save(path)
            with open(path, "rb") as f:
                requests.put(f"{server.url}/datastore/label", params={"image": f"img{i}", "tag": "final"},
                             files={"label": (path.name, f)}, timeout=60).raise_for_status()
        seconds, response = _timed(lambda: requests.post(f"{server.url}/train/segment", params={"run_sync": "true"},
                                                         json={"epochs": 1}, timeout=1800))
        if response.status_code != 200:
            raise RuntimeError(f"train: HTTP {response.status_code}: {response.text}")
        print(f"/train/segment, 1 epoch on 3 train + 1 val images at 128 px: {seconds:.1f} s "
              f"(val mean Dice {response.json()['val_mean_dice']:.3f})")
    print(f"work folder: {root}")


if __name__ == "__main__":
    main()
