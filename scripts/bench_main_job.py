"""Benchmark of the README's main job: the default pretraining bundle run on a fresh demo corpus.

Runs, in a temporary folder (or ``--workdir``), exactly the bundle command of README command 1::

    cd bundles/pretrain && python -m monai.bundle run --config_file configs/train.json --logging_file configs/logging.conf

with ``MODAN_MONAI_DEMO_DIR`` and ``--output_dir`` pointing into that folder, so the demo corpus is written
from scratch as on a fresh machine and no earlier checkpoint is resumed. Prints the wall time, the CPU time
of the run, the load average before and after (the README's figure is meant for an idle machine: a load
well above 0 means other processes shared the cores), and, from the run's ``summary.json``, the epoch-mean
loss and the k-NN and linear-probe accuracy at epoch 0 and at the last epoch.

Usage:
    python scripts/bench_main_job.py [--workdir DIR] [--repeats N] [-- extra bundle overrides, e.g. --epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "pretrain"
COMMAND = ["-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--logging_file", "configs/logging.conf"]


def run_once(workdir: Path, extra: list[str]) -> dict[str, object]:
    """One run of the main job in ``workdir`` (fresh corpus and output folder); returns its figures.

    Raises:
        RuntimeError: when the bundle run fails (the end of its output is included).
    """
    demo, out = workdir / "demo", workdir / "models"
    env = {**os.environ, "MODAN_MONAI_DEMO_DIR": str(demo)}
    cmd = [sys.executable, *COMMAND, "--output_dir", str(out), *extra]
    load_before = os.getloadavg()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"bundle run failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_s": wall,
        "cpu_s": (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one block per repeat."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="folder for the corpus and outputs (default: a new temporary folder)")
    parser.add_argument("--repeats", type=int, default=1, help="runs, each from a fresh corpus (default 1)")
    args = parser.parse_args(own)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.workdir is not None and not Path(args.workdir).is_dir():
        what = "is not a folder" if Path(args.workdir).exists() else "does not exist"
        parser.error(f"--workdir {args.workdir} {what} (create it, or leave --workdir out for a temporary folder)")
    print(f"cores: {os.cpu_count()}  command: cd {BUNDLE} && python {' '.join(COMMAND + extra)}")
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            result = run_once(Path(tmp), extra)
        s = result["summary"]
        knn, probe, loss = s["knn"], s["linear_probe"], s["loss"]
        print(
            f"run {r + 1}: wall {result['wall_s']:.1f} s  cpu {result['cpu_s']:.1f} s  "
            f"load average before {result['load_before'][0]:.2f} after {result['load_after'][0]:.2f}\n"
            f"  epochs {s['epochs_completed']}  loss {loss['first']['value']:.3f} (epoch {loss['first']['epoch']}) -> "
            f"{loss['last']['value']:.3f} (epoch {loss['last']['epoch']})\n"
            f"  k-NN accuracy ({knn['split']}, k={knn['k']}, majority class {knn['majority_rate']:.3f}): "
            f"{knn['first']['accuracy']:.3f} (epoch {knn['first']['epoch']}) -> "
            f"{knn['last']['accuracy']:.3f} (epoch {knn['last']['epoch']}); per epoch {knn['per_epoch']}\n"
            f"  linear probe ({probe['split']}): {probe['first']['accuracy']:.3f} (epoch {probe['first']['epoch']}) -> "
            f"{probe['last']['accuracy']:.3f} (epoch {probe['last']['epoch']}); per epoch {probe['per_epoch']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
