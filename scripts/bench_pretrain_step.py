"""Pretraining step throughput on cached data vs the bare encoder forward+backward.

Builds the ``pretrain`` bundle's trainer (CacheDataset, views, network, loss, optimiser,
``PrepareViewGroups``, ``modan_monai.engines.Trainer``) without its logging/checkpoint handlers, fills the
cache, then times one epoch over the manifest (``drop_last`` batches) and, in the same process, the same number of bare
``ResNet18Encoder`` forward+backward passes on random tensors of the same batch (B images x V views) and
image size. The two are timed alternately ``--rounds`` times and the medians compared:

    ratio = pipeline images/s / bare encoder images/s      (target >= 0.9 at 64 px)

With ``--vs CONFIG`` it instead compares the seconds per training step of two methods, timed alternately in one
process (e.g. Adam-v2 against SimCLR: ``--config adamv2.json --vs simclr.json``):

    cost = seconds per step of --config / seconds per step of --vs      (same batch size and image size)

Usage:
    python scripts/bench_pretrain_step.py                         # demo corpus (written to a temp dir)
    python scripts/bench_pretrain_step.py --manifest pretrain.csv --image_size 64 --batch_size 32
    python scripts/bench_pretrain_step.py --config adamv2.json --vs simclr.json --batch_size 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "pretrain"


def build_trainer(manifest: str, image_size: int, batch_size: int, out: str, config: str):
    """Parse the bundle config with the benchmark's overrides and return ``(trainer, encoder, num_views)``."""
    files = [str(BUNDLE / "configs" / "train.json")] + ([str(BUNDLE / "configs" / config)] if config else [])
    parser = ConfigParser()
    parser.read_config(files)
    parser.update(
        {
            "bundle_root": str(BUNDLE),
            "manifest": manifest,
            "output_dir": out,
            "image_size": image_size,
            "batch_size": batch_size,
            "device": "$torch.device('cpu')",
            "train#handlers": [],
            "train#trainer#max_epochs": 1,
        }
    )
    if "level_schedule" in parser:  # Adam-v2: one epoch at the finest level (the views' sizes do not depend on it)
        schedule = parser["level_schedule"]
        parser["level_schedule"] = [[max(int(level) for level, _ in schedule), 1]]
    trainer = parser.get_parsed_content("train#trainer")
    if len(trainer.data_loader) < 1:
        raise ValueError(f"the manifest {manifest} gives no full batch of {batch_size}")
    return trainer, parser.get_parsed_content("encoder"), parser.get_parsed_content("num_views")


def time_pipeline(trainer) -> tuple[float, int]:
    """Seconds and iterations of one ``trainer.run()``.

    A finished ignite engine restarts from epoch 0 on the next run(), with ``epoch_length = len(loader)``: the
    iterations are read back from the engine state rather than assumed.
    """
    trainer.state.max_epochs = None
    start = time.perf_counter()
    trainer.run()
    return time.perf_counter() - start, int(trainer.state.iteration)


def time_bare(encoder: torch.nn.Module, batch: int, views: int, size: int, iterations: int) -> float:
    x = torch.rand(batch * views, 1, size, size)
    encoder.train()
    start = time.perf_counter()
    for _ in range(iterations):
        encoder.zero_grad(set_to_none=True)
        encoder(x).sum().backward()
    return time.perf_counter() - start


def compare_methods(manifest: str, args: argparse.Namespace, tmp: Path) -> None:
    """Print seconds per step of ``args.config`` and ``args.vs`` (median of alternating rounds) and their ratio."""
    names = [args.config or "train.json", args.vs]
    trainers = [
        build_trainer(manifest, args.image_size, args.batch_size, str(tmp / f"out{i}"), cfg if cfg != "train.json" else "")[0]
        for i, cfg in enumerate(names)
    ]
    for trainer in trainers:
        time_pipeline(trainer)  # warm-up
    per_step: list[list[float]] = [[], []]
    for _ in range(args.rounds):
        for i, trainer in enumerate(trainers):
            seconds, iterations = time_pipeline(trainer)
            per_step[i].append(seconds / iterations)
    a, b = (statistics.median(x) for x in per_step)
    print(f"batch {args.batch_size}, {args.image_size} px, {args.rounds} rounds, {torch.get_num_threads()} threads")
    for name, values in zip(names, per_step):
        print(f"{name:>14}: {statistics.median(values):.3f} s/step  rounds {[round(x, 3) for x in values]}")
    print(f"cost of one {names[0]} step / one {names[1]} step: {a / b:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=None, help="manifest CSV; default: a demo corpus of 224 images")
    parser.add_argument("--config", default="", help="override file, e.g. simclr.json or supervised.json")
    parser.add_argument("--vs", default=None, help="second override file: compare seconds per step instead")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest
        if manifest is None:
            from modan_monai.data import ensure_demo_corpus

            manifest = ensure_demo_corpus(Path(tmp) / "demo", size=max(64, args.image_size), per_pair=32)
        if args.vs is not None:
            compare_methods(manifest, args, Path(tmp))
            return
        trainer, encoder, views = build_trainer(
            manifest, args.image_size, args.batch_size, str(Path(tmp) / "out"), args.config
        )
        time_pipeline(trainer)  # warm-up (first iteration allocations, thread pools)
        time_bare(encoder, args.batch_size, views, args.image_size, 1)
        pipe, bare = [], []
        for _ in range(args.rounds):
            seconds, iterations = time_pipeline(trainer)
            pipe.append(iterations * args.batch_size / seconds)
            bare_seconds = time_bare(encoder, args.batch_size, views, args.image_size, iterations)
            bare.append(iterations * args.batch_size / bare_seconds)
    p, b = statistics.median(pipe), statistics.median(bare)
    print(f"batch {args.batch_size} x {views} views, {args.image_size} px, {iterations} iterations x {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads")
    print(f"pipeline (cached data, views, encoder+head, loss, SGD step): {p:8.1f} images/s  rounds {[round(x, 1) for x in pipe]}")
    print(f"bare encoder forward+backward:                               {b:8.1f} images/s  rounds {[round(x, 1) for x in bare]}")
    print(f"ratio pipeline / bare: {p / b:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
