"""Adam-v2 at paper scale on one GPU: 224 px, batch 128, bf16, for at most 8 minutes on the shared corpus.

Runs the pretraining bundle itself (``bundles/pretrain``: ``configs/train.json`` + ``configs/adamv2.json``, the
paper's recipe: joint L_loc + L_comp + L_dec, AdamW ``5e-4 * batch / 256``, EMA teacher, coarse-to-fine levels)
through MONAI's ``ConfigWorkflow`` (its ``initialize`` checks, run and finalize), with these ids set:
``image_size`` (224), ``batch_size`` (128), ``amp`` (``bf16``: ``torch.autocast`` on the GPU, losses in float32),
``stem`` (``7x7``: the ImageNet stem for 224 px; the bundle's 3x3 stem is for small images), ``level_schedule``
(``--epochs-per-level`` epochs at each level 0, 1, 2), ``num_workers``, ``knn_interval`` (default: the planned
epochs, so the monitor runs at epoch 0 and where the run ends; each evaluation costs time) and, for
``--encoder resnet50`` (the official backbone), ``encoder``. Everything else is ``adamv2.json``'s default.

The corpus is ``--manifest``, or the shared corpus built here as ``scripts/build_manifest.py shared-pretrain
<--shared> --exclude jsrt`` does (``--max-per-dataset`` subsamples it). The run stops at the wall-clock limit
``--minutes`` (default 8, at most 8 unless ``--allow-longer``), counted from the trainer's start: after an epoch
when the next epoch would not fit, else after the iteration that reaches it, keeping back the time the first k-NN
evaluation took for the last one; the engine is terminated as ignite does (``engine.terminate()``), so the
encoder, the checkpoint and ``summary.json`` are written as at a normal end, and the k-NN monitor evaluates the
encoder where it stopped. Start-up (manifest, image cache, model) is not counted and is printed separately.

Printed (and written to ``--json``, default ``<output_dir>/bench_adamv2_gpu.json``):

- **images/s**: training images (batch items; each gives 14 views) per second over the trainer's iterations
  after the first ``--warmup-iterations``, each timed from the batch request to the end of its step (CUDA
  synchronised), so data loading counts and the monitor's evaluations, checkpoints and start-up do not; also
  the whole run's images per wall-clock second;
- **GPU utilisation**: ``nvidia-smi --query-gpu=utilization.gpu,memory.used`` sampled every second by a
  background thread, mean / median / minimum over the timed iterations, and the largest memory used (plus
  ``torch.cuda.max_memory_allocated``);
- **L_loc against ln K**: the localizability term's epoch mean in the first and last completed epoch
  (``summary.json`` ``terms``) and its mean over the last iterations, each beside ln K (K = ``num_prototypes``):
  at ln K the teacher has collapsed to a uniform output;
- **k-NN and linear probe** accuracy at epoch 0 (the random encoder) and at the end (``summary.json``).

Without CUDA the script refuses to run unless ``--device cpu`` is given: then it runs the same path at the sizes
given (a smoke test; e.g. ``--image-size 32 --batch-size 4 --minutes 0.3``).

Usage:
    python scripts/bench_adamv2_gpu.py                                   # 224 px, batch 128, bf16, 8 minutes
    python scripts/bench_adamv2_gpu.py --encoder resnet50 --batch-size 256 --minutes 6
    python scripts/bench_adamv2_gpu.py --device cpu --image-size 32 --batch-size 4 --minutes 0.3 \\
        --max-per-dataset 12 --num-workers 0 --warmup-iterations 1
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "pretrain"
CONFIGS = [BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "adamv2.json"]
MAX_MINUTES = 8.0
NVIDIA_SMI_QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
ENCODERS = {
    "resnet18": "modan_monai.networks.ResNet18Encoder",
    "resnet50": "modan_monai.networks.ResNet50Encoder",
}

__all__ = ["GPUSampler", "IterationTimer", "WallClockLimit", "bench_table", "build_shared_manifest", "gpu_sampler",
           "main"]


class GPUSampler:
    """Sample ``nvidia-smi``'s GPU utilisation (%) and memory used (MiB) every ``interval`` seconds in a thread.

    Args:
        gpu: the ``nvidia-smi -i`` selector (an index or a ``GPU-<uuid>``).
        interval: seconds between samples.
        command: the executable (default ``nvidia-smi`` on the ``PATH``).

    Example:
        >>> sampler = GPUSampler("0")
        >>> sampler.sample()  # doctest: +SKIP
        (97.0, 40213.0)
    """

    def __init__(self, gpu: str, interval: float = 1.0, command: str = "nvidia-smi") -> None:
        self.gpu = str(gpu)
        self.interval = float(interval)
        self.command = command
        #: (time.perf_counter(), utilisation %, memory used MiB)
        self.samples: list[tuple[float, float, float]] = []
        #: the first failure of ``nvidia-smi`` (the sampling stops there)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nvidia-smi sampler", daemon=True)

    def sample(self) -> tuple[float, float]:
        """One ``(utilisation %, memory used MiB)`` reading.

        Raises:
            RuntimeError: ``nvidia-smi`` is missing, fails or prints something else than two numbers.
        """
        executable = shutil.which(self.command)
        if executable is None:
            raise RuntimeError(f"{self.command} not found on the PATH: GPU utilisation cannot be sampled")
        proc = subprocess.run([executable, "-i", self.gpu, *NVIDIA_SMI_QUERY], capture_output=True, text=True,
                              timeout=10)
        text = proc.stdout.strip()
        if proc.returncode != 0:
            raise RuntimeError(f"{self.command} -i {self.gpu} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or text).strip()[-300:]}")
        try:
            util, memory = (float(v) for v in text.splitlines()[0].split(","))
        except (ValueError, IndexError):
            raise RuntimeError(f"{self.command} -i {self.gpu} printed {text!r}, expected 'utilization, memory'") from None
        return util, memory

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter()
            try:
                util, memory = self.sample()
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
                self.error = str(err)
                return
            self.samples.append((now, util, memory))
            self._stop.wait(max(0.0, self.interval - (time.perf_counter() - now)))

    def start(self) -> None:
        """Start sampling in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def summary(self, intervals: Sequence[tuple[float, float]]) -> dict[str, Any]:
        """Utilisation mean / median / minimum and the largest memory over the samples taken inside ``intervals``.

        Args:
            intervals: sorted, non-overlapping ``(start, end)`` ``time.perf_counter()`` spans (the timed training
                steps: samples taken between them, e.g. during a k-NN evaluation, are left out).

        Returns:
            ``samples`` (count), ``utilization_mean``, ``utilization_median``, ``utilization_min`` (%),
            ``memory_used_max_mib``, and ``error`` (``None`` unless ``nvidia-smi`` failed); the statistics are
            ``None`` when no sample falls in the window.
        """
        starts = [start for start, _ in intervals]
        window = []
        for t, u, m in self.samples:
            i = bisect.bisect_right(starts, t) - 1
            if i >= 0 and t <= intervals[i][1]:
                window.append((u, m))
        utils = [u for u, _ in window]
        return {
            "samples": len(window),
            "utilization_mean": statistics.fmean(utils) if utils else None,
            "utilization_median": statistics.median(utils) if utils else None,
            "utilization_min": min(utils) if utils else None,
            "memory_used_max_mib": max(m for _, m in window) if window else None,
            "error": self.error,
        }


class IterationTimer:
    """Per iteration of an ignite engine: the seconds from the batch request to the end of the step, the batch
    size and the loss terms (``engine.state.output["loss_terms"]``).

    Args:
        synchronize: called before reading the clock at the end of a step (``torch.cuda.synchronize`` on a GPU,
            so the step's kernels are counted in it).
    """

    def __init__(self, synchronize: Callable[[], None] = lambda: None) -> None:
        self.synchronize = synchronize
        #: (start, end, batch size, {term: value}) per iteration
        self.records: list[tuple[float, float, int, dict[str, float]]] = []
        self._start: float | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._batch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _batch_started(self, engine: Engine) -> None:
        self._start = time.perf_counter()

    def _completed(self, engine: Engine) -> None:
        self.synchronize()
        end = time.perf_counter()
        output = engine.state.output if isinstance(engine.state.output, Mapping) else {}
        terms = {str(k): float(v) for k, v in dict(output.get("loss_terms") or {}).items()}
        batch = engine.state.batch
        size = _batch_size(batch)
        self.records.append((self._start if self._start is not None else end, end, size, terms))

    def throughput(self, warmup: int) -> dict[str, Any]:
        """Images per second over the iterations after the first ``warmup``.

        Raises:
            ValueError: when no iteration is left after ``warmup`` (naming both counts).
        """
        timed = self.records[warmup:]
        if not timed:
            raise ValueError(
                f"only {len(self.records)} iteration(s) ran within the time limit, none left after "
                f"--warmup-iterations {warmup} to measure images/s: raise --minutes or lower --warmup-iterations."
            )
        seconds = sum(end - start for start, end, _, _ in timed)
        images = sum(size for _, _, size, _ in timed)
        return {"iterations": len(timed), "images": images, "seconds": seconds, "images_per_s": images / seconds,
                "intervals": [(start, end) for start, end, _, _ in timed]}


def _batch_size(batch: Any) -> int:
    """Batch items of a collated batch: the first dimension of its first tensor (views are ``(B, ...)``)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        for value in batch.values():
            size = _batch_size(value)
            if size:
                return size
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    return 0


class WallClockLimit:
    """Terminate an ignite engine before ``limit_s`` seconds have passed since ``start``.

    After each epoch it stops when another epoch like the last one would end past the limit; after each
    iteration when another iteration like the last one would. ``reserve_s`` is kept back for what runs after the stop (the final
    k-NN evaluation): the first k-NN evaluation's duration, measured as the time from ``start`` to the first batch
    request. ``engine.terminate()`` ends the run as ignite does: ``TERMINATE`` then ``COMPLETED`` handlers run.

    Args:
        limit_s: the wall-clock limit in seconds, counted from :meth:`begin` (call it just before the run).
        clock: the clock (``time.perf_counter``).
    """

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.limit_s = float(limit_s)
        self.clock = clock
        self.start: float | None = None
        self.reserve_s = 0.0
        self.stopped = False
        #: True when the limit stopped the run inside an epoch (that epoch is not completed)
        self.mid_epoch = False
        self.stop_reason: str | None = None
        self._epoch_start: float | None = None
        self._last_epoch_s = 0.0
        self._last_iteration_s = 0.0
        self._iteration_end: float | None = None
        self._first = True

    def begin(self) -> None:
        """Start the clock (call it just before the trainer runs)."""
        self.start = self.clock()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._first_batch)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def elapsed(self) -> float:
        now = self.clock()
        return now - (self.start if self.start is not None else now)

    def _first_batch(self, engine: Engine) -> None:
        if self._first:  # ignite counts GET_BATCH_STARTED with the iteration, still 0 here: no ``once=`` filter
            self._first = False
            self.reserve_s = self.elapsed()

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_start = self._iteration_end = self.clock()  # an epoch's first step is not timed from the last

    def _stop(self, engine: Engine, reason: str, mid_epoch: bool) -> None:
        if not self.stopped:
            self.stopped, self.stop_reason, self.mid_epoch = True, reason, mid_epoch
            engine.logger.info(f"wall-clock limit {self.limit_s:.0f} s: {reason}; stopping")
            engine.terminate()

    def _iteration_completed(self, engine: Engine) -> None:
        now = self.clock()
        if self._iteration_end is not None:  # the previous step's end -> this one's: the next one will take as long
            self._last_iteration_s = now - self._iteration_end
        self._iteration_end = now
        if self.elapsed() + self._last_iteration_s + self.reserve_s >= self.limit_s:
            self._stop(engine, f"limit reached at iteration {engine.state.iteration} (epoch {engine.state.epoch}, "
                               "not completed)", mid_epoch=True)

    def _epoch_completed(self, engine: Engine) -> None:
        if self._epoch_start is not None:
            self._last_epoch_s = self.clock() - self._epoch_start
        if engine.state.epoch >= (engine.state.max_epochs or 0):
            return
        if self.elapsed() + self._last_epoch_s + self.reserve_s >= self.limit_s:
            self._stop(engine, f"epoch {engine.state.epoch + 1} ({self._last_epoch_s:.1f} s like epoch "
                               f"{engine.state.epoch}) would end past the limit", mid_epoch=False)


def build_shared_manifest(shared: Path, out: Path, exclude: Sequence[str], max_per_dataset: int | None,
                          seed: int) -> Path:
    """The shared pretraining corpus (``scripts/build_manifest.py shared-pretrain``) written to ``out``.

    Raises:
        FileNotFoundError: the shared datasets folder (or a source in it) is missing, naming it.
    """
    from data_manifests import build_manifest

    from modan_monai.data.manifest import write_manifest

    if not shared.is_dir():
        raise FileNotFoundError(
            f"--shared {shared}: no such folder (the shared datasets; set --shared or $MODAN_SHARED_DATASETS, "
            "or give --manifest)"
        )
    frame = build_manifest("shared_pretrain", shared, max_per_dataset=max_per_dataset, exclude=tuple(exclude),
                           seed=seed)
    return write_manifest(frame, out)


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _first_last(block: Mapping[str, Any] | None, key: str) -> dict[str, Any] | None:
    if not block or block.get("first") is None:
        return None
    return {"first_epoch": block["first"]["epoch"], "first": block["first"][key],
            "last_epoch": block["last"]["epoch"], "last": block["last"][key]}


def localizability(summary: Mapping[str, Any], records: Sequence[tuple[float, float, int, dict[str, float]]],
                   last_n: int = 10) -> dict[str, Any]:
    """L_loc against ln K: epoch means of the first / last completed epoch and the mean of the last iterations.

    Raises:
        ValueError: the run logged no ``loc`` / ``ln_K`` term (naming the terms it logged).
    """
    terms = summary.get("terms") or {}
    logged = sorted({k for *_, t in records for k in t})
    if "loc" not in logged or "ln_K" not in logged:
        raise ValueError(f"the Adam-v2 loss logged no 'loc' and 'ln_K' terms (logged: {logged}); is "
                         "configs/adamv2.json the method file?")
    ln_k = records[-1][3]["ln_K"]
    tail = [t["loc"] for *_, t in records[-last_n:]]
    return {
        "ln_K": ln_k,
        "epoch_mean": _first_last(terms.get("loc"), "value"),
        "first_iteration": records[0][3]["loc"],
        "last_iterations": len(tail),
        "last_iterations_mean": statistics.fmean(tail),
        "last_iterations_mean_over_ln_K": statistics.fmean(tail) / ln_k,
    }


def bench_table(result: Mapping[str, Any]) -> str:
    """The result as a two-column Markdown table (what is printed)."""
    def fmt(value: Any, spec: str = ".3f", unit: str = "") -> str:
        return "n/a" if value is None else f"{value:{spec}}{unit}"

    s, loc, gpu = result["settings"], result["loc"], result["gpu"]
    knn, probe = result["knn"], result["linear_probe"]
    partial = result["epochs_completed"] + 1 if result["stopped_within_epoch"] else None

    def epoch(number: int) -> str:
        return f"epoch {number}, stopped within it" if number == partial else f"epoch {number}"
    rows = [
        ("device", result["device"]),
        ("settings", f"{s['image_size']} px, batch {s['batch_size']}, amp {s['amp']}, {s['encoder']} stem "
                     f"{s['stem']}, {s['num_workers']} workers, {s['train_images']} training images"),
        ("run", f"{result['epochs_completed']}/{result['max_epochs']} epochs, {result['iterations']} iterations in "
                f"{result['train_wall_s']:.1f} s (limit {result['limit_s']:.0f} s; start-up {result['startup_s']:.1f} s "
                "not counted)" + (f"; stopped: {result['stop_reason']}" if result["stop_reason"] else "")),
        ("images/s", f"{result['images_per_s']:.1f} (over {result['timed_iterations']} iterations after "
                     f"{s['warmup_iterations']} warm-up; whole run {result['images_per_s_wall']:.1f})"),
        ("GPU utilisation", "n/a (--device cpu)" if gpu is None else (
            f"mean {fmt(gpu['utilization_mean'], '.1f', ' %')}, median {fmt(gpu['utilization_median'], '.1f', ' %')}"
            f", min {fmt(gpu['utilization_min'], '.0f', ' %')} ({gpu['samples']} samples); memory used max "
            f"{fmt(gpu['memory_used_max_mib'], '.0f', ' MiB')}, torch max allocated "
            f"{fmt(gpu['torch_max_allocated_mib'], '.0f', ' MiB')}" + (f"; {gpu['error']}" if gpu["error"] else ""))),
        ("L_loc vs ln K", (
            f"ln K {loc['ln_K']:.3f}; first iteration {loc['first_iteration']:.3f}; epoch mean "
            + (f"{loc['epoch_mean']['first']:.3f} (epoch {loc['epoch_mean']['first_epoch']}) -> "
               f"{loc['epoch_mean']['last']:.3f} (epoch {loc['epoch_mean']['last_epoch']})"
               if loc["epoch_mean"] else "n/a (no epoch completed)")
            + f"; last {loc['last_iterations']} iterations {loc['last_iterations_mean']:.3f} "
            f"(x{loc['last_iterations_mean_over_ln_K']:.3f} ln K)")),
        ("k-NN accuracy", "n/a" if knn is None else (
            f"{knn['first']:.3f} (epoch {knn['first_epoch']}) -> {knn['last']:.3f} ({epoch(knn['last_epoch'])}); "
            f"majority class {fmt(result['knn_majority_rate'])}")),
        ("linear probe", "n/a" if probe is None else (
            f"{probe['first']:.3f} (epoch {probe['first_epoch']}) -> {probe['last']:.3f} "
            f"({epoch(probe['last_epoch'])})")),
        ("outputs", f"{result['output_dir']} (summary.json, encoder.pt, TensorBoard)"),
    ]
    lines = ["| quantity | value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared_default = os.environ.get("MODAN_SHARED_DATASETS") or str(ROOT.parent / "shared" / "datasets")
    parser.add_argument("--device", default="cuda",
                        help="cuda (default; cuda:N for another GPU) or cpu (a smoke test at the sizes given)")
    parser.add_argument("--manifest", help="manifest CSV to train on (default: the shared corpus, built here)")
    parser.add_argument("--shared", default=shared_default,
                        help="shared datasets folder (default $MODAN_SHARED_DATASETS or ../shared/datasets)")
    parser.add_argument("--exclude", nargs="*", default=["jsrt"],
                        help="shared-pretrain sources to leave out (default: jsrt, a downstream set)")
    parser.add_argument("--max-per-dataset", type=int, help="subsample each shared source to N rows")
    parser.add_argument("--image-size", type=int, default=224, help="view size (default 224, the paper's)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (default 128)")
    parser.add_argument("--amp", choices=["bf16", "fp16", "fp32"], default="bf16", help="precision (default bf16)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory layout")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="resnet18",
                        help="backbone (default resnet18, the bundle's; resnet50 is the official release's)")
    parser.add_argument("--stem", choices=["7x7", "3x3"], default="7x7", help="encoder stem (default 7x7)")
    parser.add_argument("--epochs-per-level", type=int, default=10,
                        help="epochs at each level 0, 1, 2 (level_schedule; default 10: 30 epochs planned)")
    parser.add_argument("--knn-interval", type=int,
                        help="k-NN / linear-probe monitor every N epochs (default: the planned epochs, so only at "
                             "epoch 0 and where the run ends; 0: off)")
    parser.add_argument("--num-workers", type=int, default=max(0, min(12, (os.cpu_count() or 1) - 2)),
                        help="DataLoader workers and cache threads (default: CPU cores - 2, at most 12)")
    parser.add_argument("--minutes", type=float, default=MAX_MINUTES,
                        help=f"wall-clock limit of the training run (default and maximum {MAX_MINUTES:g})")
    parser.add_argument("--allow-longer", action="store_true", help=f"allow --minutes above {MAX_MINUTES:g}")
    parser.add_argument("--warmup-iterations", type=int, default=5,
                        help="first iterations left out of images/s (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", help="bundle output_dir (default: a new temporary folder); must be empty")
    parser.add_argument("--json", help="result JSON (default <output_dir>/bench_adamv2_gpu.json)")
    args = parser.parse_args(argv)

    if not args.minutes > 0 or not math.isfinite(args.minutes):
        parser.error(f"--minutes must be a positive number, got {args.minutes}")
    if args.minutes > MAX_MINUTES and not args.allow_longer:
        parser.error(f"--minutes {args.minutes:g} is above the {MAX_MINUTES:g}-minute limit of this benchmark; "
                     "add --allow-longer to run longer")
    for name in ("image_size", "batch_size", "epochs_per_level"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.knn_interval is None:
        args.knn_interval = 3 * args.epochs_per_level
    for name in ("knn_interval", "num_workers", "warmup_iterations", "threads"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    device = str(args.device)
    if device == "cpu":
        pass
    elif device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            parser.error(f"--device {device}: torch sees no CUDA device (torch {torch.__version__}, CUDA build "
                         f"{torch.version.cuda}); this benchmark is for a GPU. Pass --device cpu explicitly for a "
                         "smoke test at small sizes (e.g. --image-size 32 --batch-size 4 --minutes 0.3)")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            parser.error(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
        if args.amp == "bf16" and not torch.cuda.is_bf16_supported():
            parser.error(f"--device {device} ({torch.cuda.get_device_name(index)}) does not support bf16; "
                         "pass --amp fp16 or --amp fp32")
    else:
        parser.error(f"--device must be cuda, cuda:N or cpu, got {device!r}")
    if args.output_dir and Path(args.output_dir).exists() and any(Path(args.output_dir).iterdir()):
        parser.error(f"--output-dir {args.output_dir} is not empty: the bundle would resume its checkpoint; "
                     "give a new or empty folder")
    return args


def _overrides(args: argparse.Namespace, manifest: str, output_dir: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "bundle_root": str(BUNDLE),
        "manifest": manifest,
        "output_dir": output_dir,
        "device": f"$torch.device({args.device!r})",
        "seed": args.seed,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "amp": None if args.amp == "fp32" else args.amp,
        "channels_last": bool(args.channels_last),
        "stem": args.stem,
        "level_schedule": [[level, args.epochs_per_level] for level in (0, 1, 2)],
        "num_workers": args.num_workers,
        "knn_interval": args.knn_interval,
    }
    if args.encoder != "resnet18":
        overrides["encoder"] = {"_target_": ENCODERS[args.encoder], "spatial_dims": 2, "in_channels": 1,
                                "stem": "@stem"}
    return overrides


def _device_name(device: str) -> str:
    if device == "cpu":
        return f"cpu ({torch.get_num_threads()} torch thread(s))"
    index = torch.device(device).index or 0
    return f"{device} ({torch.cuda.get_device_name(index)})"


def _nvidia_smi_ids(device: str) -> list[str]:
    """``nvidia-smi -i`` selectors of the torch device, best first: its UUID when torch reports one, its entry of
    ``CUDA_VISIBLE_DEVICES``, its index."""
    index = torch.device(device).index or 0
    ids = []
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        text = str(uuid)
        ids.append(text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}")
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible):
        ids.append(visible[index])
    ids.append(str(index))
    return list(dict.fromkeys(ids))


def gpu_sampler(device: str) -> GPUSampler:
    """A :class:`GPUSampler` on the first selector of :func:`_nvidia_smi_ids` that ``nvidia-smi`` answers (else on
    the first one: its error is then reported with the results)."""
    ids = _nvidia_smi_ids(device)
    for gpu in ids:
        sampler = GPUSampler(gpu)
        try:
            sampler.sample()
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            continue
        return sampler
    return GPUSampler(ids[0])


def _manifest(args: argparse.Namespace, output_dir: Path) -> Path:
    """``--manifest``, or the shared corpus built under ``output_dir/manifest``."""
    if args.manifest:
        manifest = Path(args.manifest).absolute()
        if not manifest.is_file():
            raise FileNotFoundError(f"--manifest {manifest}: no such file")
        return manifest
    manifest = build_shared_manifest(Path(args.shared), output_dir / "manifest" / "pretrain.csv",
                                     args.exclude, args.max_per_dataset, args.seed)
    print(f"shared corpus manifest: {manifest}", flush=True)
    return manifest


def _workflow(args: argparse.Namespace, manifest: Path, output_dir: Path) -> tuple[Any, dict[str, Any], Any]:
    """The bundle's initialised ``ConfigWorkflow``, its overrides and its k-NN monitor (config id
    ``train#handlers#7``; a handler of another type there is refused naming the id)."""
    from monai.bundle import ConfigWorkflow

    from modan_monai.bundle import check_overrides
    from modan_monai.handlers import KNNMonitor

    overrides = _overrides(args, str(manifest), str(output_dir))
    check_overrides([str(c) for c in CONFIGS], overrides)
    workflow = ConfigWorkflow(
        config_file=[str(c) for c in CONFIGS], meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"), workflow_type="train", **overrides,
    )
    workflow.initialize()
    monitor = workflow.parser.get_parsed_content("train#handlers#7")
    if args.knn_interval and not isinstance(monitor, KNNMonitor):
        raise ValueError(f"config id 'train#handlers#7' is a {type(monitor).__name__}, expected the KNNMonitor")
    return workflow, overrides, monitor


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the corpus and the bundle, train within the limit, and return the result (see module doc)."""
    script_start = time.perf_counter()
    output_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="bench_adamv2_gpu_")).absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(args, output_dir)
    workflow, overrides, monitor = _workflow(args, manifest, output_dir)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    cuda = args.device != "cpu"
    if cuda:
        torch.cuda.set_device(torch.device(args.device).index or 0)  # synchronize() and peak memory: this GPU
    timer = IterationTimer(torch.cuda.synchronize if cuda else (lambda: None))
    timer.attach(trainer)
    limit = WallClockLimit(args.minutes * 60.0)
    limit.attach(trainer)

    def final_knn(engine: Engine) -> None:  # stopped early: the monitor evaluates where training stopped
        if args.knn_interval and engine.state.epoch not in monitor.history:
            monitor.record(engine.state.epoch)

    trainer.add_event_handler(Events.TERMINATE, final_knn)
    train_images = len(trainer.data_loader.dataset)
    sampler = gpu_sampler(args.device) if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats(torch.device(args.device))
        sampler.start()
    startup_s = time.perf_counter() - script_start
    limit.begin()
    try:
        workflow.run()
    finally:
        train_wall_s = limit.elapsed()
        if sampler is not None:
            sampler.stop()
        workflow.finalize()

    summary = json.loads((output_dir / "summary.json").read_text())
    speed = timer.throughput(args.warmup_iterations)
    gpu = None
    if sampler is not None:
        gpu = sampler.summary(speed["intervals"])
        gpu["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated(torch.device(args.device)) / 2**20
    images = sum(size for _, _, size, _ in timer.records)
    return {
        "device": _device_name(args.device),
        "settings": {
            "image_size": args.image_size, "batch_size": args.batch_size, "amp": args.amp,
            "channels_last": bool(args.channels_last), "encoder": args.encoder, "stem": args.stem,
            "level_schedule": overrides["level_schedule"], "num_workers": args.num_workers,
            "knn_interval": args.knn_interval, "warmup_iterations": args.warmup_iterations,
            "manifest": str(manifest), "train_images": train_images, "seed": args.seed,
            "torch": torch.__version__,
        },
        "limit_s": limit.limit_s,
        "startup_s": startup_s,
        "train_wall_s": train_wall_s,
        "stopped_by_time_limit": limit.stopped,
        "stop_reason": limit.stop_reason,
        "stopped_within_epoch": limit.mid_epoch,
        "epochs_completed": int(trainer.state.epoch) - int(limit.mid_epoch),
        "max_epochs": summary["max_epochs"],
        "iterations": len(timer.records),
        "images_seen": images,
        "images_per_s": speed["images_per_s"],
        "timed_iterations": speed["iterations"],
        "images_per_s_wall": images / train_wall_s,
        "gpu": gpu,
        "loc": localizability(summary, timer.records),
        "knn": _first_last(summary.get("knn"), "accuracy"),
        "knn_majority_rate": _finite((summary.get("knn") or {}).get("majority_rate")),
        "linear_probe": _first_last(summary.get("linear_probe"), "accuracy"),
        "output_dir": str(output_dir),
        "summary_json": str(output_dir / "summary.json"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints the table and writes the JSON; 1 with ``error: ...`` on bad input."""
    args = _parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    path = Path(args.json) if args.json else Path(result["output_dir"]) / "bench_adamv2_gpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(bench_table(result))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
