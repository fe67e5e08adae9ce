"""Pretraining step throughput under each precision / memory layout vs the fp32 eager bare encoder, and bf16's loss.

Two measurements in one process:

1. **Throughput.** The ModAn-MulSupCon pretraining step exactly as ``bundles/pretrain/configs/train.json`` builds
   it (``ContrastiveModel(ResNet18Encoder, ProjectionHead 512/512/128)``, ``MulSupConLoss``, SGD,
   ``PrepareViewGroups``, ``modan_monai.engines.Trainer``; the bundle's ``amp`` and ``channels_last`` ids set per
   row, its handlers left out), fed pre-made collated batches of random views from a ``DataLoader`` over an
   in-memory list, so no data loading or augmentation is timed. Reference: the bundle's ``encoder``
   (``ResNet18Encoder``, 2-D, 1 channel, the bundle's stem) alone in fp32 eager mode, forward on the same
   ``B x V`` views, ``mean(features**2)``, backward and an SGD step (the bundle's lr, momentum, weight decay).
   Every row runs ``--steps`` steps per round, ``--rounds`` rounds, interleaved (the order rotates each round),
   after ``--warmup`` steps each; the table shows the median images/s and its ratio to the bare encoder's::

       ratio = images/s of the pretraining step in that setting / images/s of the bare fp32 encoder
       (target on the CPU: bf16 + channels_last >= 1.6)

   An image is one of the ``B`` batch items; each step encodes its ``V`` views (``B x V`` encoder inputs) in
   every row, the bare encoder's included.

2. **Loss.** Two fresh trainers, fp32 and bf16, from the same seed (identical initial weights, checked) on the
   same ``--loss-steps`` batches (two noisy views of one random image each, random modality + anatomy labels):
   the training loss at step 1 and at the last step side by side, and their relative difference.

fp16 rows are added with ``--device cuda`` (fp16 on the CPU has no gradient scaler; bf16 is the CPU's mixed
precision). On CUDA, fp32 convolutions use TF32 unless ``torch.backends.cudnn.allow_tf32`` is off (printed).

Usage:
    python scripts/bench_precision.py                                  # 64 px, batch 64, on the CPU
    python scripts/bench_precision.py --steps 2 --warmup 1 --image-size 32 --batch-size 8   # smoke: 75 small steps
    python scripts/bench_precision.py --steps 2 --warmup 1 --image-size 32 --batch-size 8 --rounds 1 --loss-steps 2
    python scripts/bench_precision.py --device cuda --batch-size 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "pretrain"
CONFIG = BUNDLE / "configs" / "train.json"

BARE = "bare encoder fp32 (eager)"
TARGET_SETTING = "bf16 + channels_last"
TARGET_RATIO = 1.6


@dataclass(frozen=True)
class Setting:
    """One row of the table: the bundle's ``amp`` and ``channels_last`` ids."""

    name: str
    amp: str | None
    channels_last: bool


CPU_SETTINGS = (
    Setting("fp32", None, False),
    Setting("channels_last", None, True),
    Setting("bf16", "bf16", False),
    Setting("bf16 + channels_last", "bf16", True),
)
CUDA_SETTINGS = CPU_SETTINGS + (Setting("fp16", "fp16", False), Setting("fp16 + channels_last", "fp16", True))


class BatchPool(torch.utils.data.Dataset):
    """Pre-made collated batches served in turn; ``length`` (settable) is the number of batches of one epoch.

    Wrapped in ``DataLoader(pool, batch_size=None)`` it yields the stored batches as they are (no collation).
    """

    def __init__(self, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        if not batches:
            raise ValueError("BatchPool needs at least one batch.")
        self.batches = list(batches)
        self.length = len(self.batches)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batches[index % len(self.batches)]


def bundle_parser(
    *, device: str, amp: str | None = None, channels_last: bool = False, overrides: dict | None = None
) -> ConfigParser:
    """The pretraining bundle's ``train.json`` with the benchmark's device, precision and layout."""
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update(
        {
            "bundle_root": str(BUNDLE),
            "device": f"$torch.device({device!r})",
            "amp": amp,
            "channels_last": bool(channels_last),
            "multi_gpu": False,
            "train#handlers": [],
            "train#trainer#max_epochs": 1,
            **(overrides or {}),
        }
    )
    return parser


def label_group_sizes(parser: ConfigParser) -> list[int]:
    """Sizes of the metadata groups (modality, anatomy) of the bundle's vocabulary: the multi-hot layout."""
    vocabulary = parser.get_parsed_content("vocabulary")
    return [len(vocabulary.classes(group)) for group in vocabulary.group_names]


def make_batches(
    *,
    count: int,
    batch_size: int,
    num_views: int,
    image_size: int,
    group_sizes: Sequence[int],
    views_key: str,
    target_key: str,
    seed: int,
    device: str,
) -> list[dict[str, torch.Tensor]]:
    """``count`` collated batches: ``views_key`` (B, V, 1, H, W), ``target_key`` multi-hot (B, sum(group_sizes)).

    The views of an image are that random image plus independent noise (so the contrastive loss can fall); each
    image gets one random class per metadata group.
    """
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(batch_size)
    batches = []
    for _ in range(count):
        base = torch.rand(batch_size, 1, 1, image_size, image_size, generator=generator)
        noise = torch.randn(batch_size, num_views, 1, image_size, image_size, generator=generator)
        views = (base + 0.1 * noise).clamp_(0.0, 1.0)
        label = torch.zeros(batch_size, sum(group_sizes))
        offset = 0
        for size in group_sizes:
            label[rows, offset + torch.randint(0, size, (batch_size,), generator=generator)] = 1.0
            offset += size
        batches.append({views_key: views.to(device), target_key: label.to(device)})
    return batches


def load_average() -> str:
    """The 1/5/15-minute load average and the CPU count (other work on the machine slows every row)."""
    if not hasattr(os, "getloadavg"):
        return "load average unknown"
    return f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def build_trainer(*, device: str, setting: Setting, pool: BatchPool, seed: int) -> Any:
    """The bundle's ``train#trainer`` (handlers left out, one epoch) over ``DataLoader(pool, batch_size=None)``."""
    loader = torch.utils.data.DataLoader(pool, batch_size=None, shuffle=False, num_workers=0)
    parser = bundle_parser(
        device=device, amp=setting.amp, channels_last=setting.channels_last, overrides={"train#dataloader": loader}
    )
    torch.manual_seed(seed)  # the same initial weights in every row
    return parser.get_parsed_content("train#trainer")


def trainer_runner(*, trainer: Any, pool: BatchPool, device: str) -> Callable[[int], float]:
    """``run(n)``: seconds of one ``trainer.run()`` over ``n`` batches (a finished engine restarts from epoch 0)."""

    def run(n: int) -> float:
        pool.length = n
        trainer.state.max_epochs = None  # a new state: epoch_length read again from the loader (n batches)
        synchronize(device)
        start = time.perf_counter()
        trainer.run()
        synchronize(device)
        seconds = time.perf_counter() - start
        if int(trainer.state.iteration) != n:
            raise RuntimeError(f"the trainer ran {trainer.state.iteration} iterations, expected {n}")
        return seconds

    return run


def bare_runner(*, device: str, pool: BatchPool, views_key: str, seed: int) -> Callable[[int], float]:
    """``run(n)``: seconds of ``n`` fp32 eager steps of the bundle's bare encoder on the pool's ``B x V`` views."""
    parser = bundle_parser(device=device)
    torch.manual_seed(seed)
    encoder = parser.get_parsed_content("encoder").to(device)
    encoder.train()
    optimizer = torch.optim.SGD(
        encoder.parameters(),
        lr=parser["learning_rate"],
        momentum=parser["momentum"],
        weight_decay=parser["weight_decay"],
    )
    inputs = [batch[views_key].flatten(0, 1) for batch in pool.batches]  # (B * V, 1, H, W), views of the batches

    def run(n: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        for i in range(n):
            optimizer.zero_grad(set_to_none=True)
            encoder(inputs[i % len(inputs)]).square().mean().backward()
            optimizer.step()
        synchronize(device)
        return time.perf_counter() - start

    return run


def measure_throughput(
    runners: dict[str, Callable[[int], float]], *, steps: int, warmup: int, rounds: int, batch_size: int
) -> dict[str, list[float]]:
    """images/s of every runner per round: warm-up each, then ``rounds`` interleaved rounds, order rotated."""
    for run in runners.values():
        if warmup:
            run(warmup)
    names = list(runners)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(steps * batch_size / runners[name](steps))
    return rates


def loss_curves(
    *, device: str, settings: Sequence[Setting], batches: Sequence[dict[str, torch.Tensor]], seed: int
) -> dict[str, list[float]]:
    """Training loss of every step of one epoch over ``batches``, per setting, from the same initial weights.

    Raises:
        RuntimeError: when the trainers' initial weights differ (the comparison would not be from one seed).
    """
    trainers = {s.name: build_trainer(device=device, setting=s, pool=BatchPool(batches), seed=seed) for s in settings}
    states = [trainer.network.state_dict() for trainer in trainers.values()]
    for name, state in zip(list(trainers)[1:], states[1:]):
        if any(not torch.equal(state[k], states[0][k]) for k in states[0]):
            raise RuntimeError(f"the {name} trainer does not start from the same weights as {settings[0].name}")
    curves: dict[str, list[float]] = {}
    for name, trainer in trainers.items():
        losses: list[float] = []

        def record(engine: Any, out: list[float] = losses) -> None:
            out.append(float(engine.state.output["loss"].detach()))

        trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
        trainer.run()
        curves[name] = losses
    return curves


def format_table(rates: dict[str, list[float]], reference: str) -> list[str]:
    """Markdown rows: setting, median images/s, ratio of medians to ``reference``, the rounds."""
    ref = statistics.median(rates[reference])
    lines = [f"| setting | images/s (median) | x {reference} | rounds (images/s) |", "|---|---:|---:|---|"]
    for name, values in rates.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {median / ref:.2f} | {', '.join(f'{v:.1f}' for v in values)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (each with the bundle's num_views)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per row and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per row before the first round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians")
    parser.add_argument("--loss-steps", type=int, default=20, help="steps of the fp32 / bf16 loss comparison")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("image_size", "batch_size", "steps", "rounds", "loss_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = CPU_SETTINGS if args.device == "cpu" else CUDA_SETTINGS
    if args.device == "cuda" and not torch.cuda.is_bf16_supported():
        print("this GPU has no bf16: bf16 rows and the bf16 loss left out")
        settings = tuple(s for s in settings if s.amp != "bf16")
    config = bundle_parser(device=args.device)
    views_key, target_key, num_views = config["views_key"], config["target_key"], int(config["num_views"])
    data = dict(
        batch_size=args.batch_size,
        num_views=num_views,
        image_size=args.image_size,
        group_sizes=label_group_sizes(config),
        views_key=views_key,
        target_key=target_key,
        device=args.device,
    )

    if args.device == "cpu":
        where = f"cpu ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, {load_average()}"
    else:
        where = f"{torch.cuda.get_device_name()}, cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"
    print(
        f"ModAn-MulSupCon pretraining step (bundles/pretrain train.json: ResNet18Encoder stem {config['stem']} + "
        "ProjectionHead 512/512/128, MulSupConLoss, SGD) through modan_monai.engines.Trainer"
    )
    print(
        f"{where}; torch {torch.__version__}; batch {args.batch_size} images x {num_views} views, "
        f"{args.image_size} px; {args.steps} steps x {args.rounds} interleaved rounds after {args.warmup} warm-up "
        "steps per row; medians"
    )

    pool = BatchPool(make_batches(count=args.steps, seed=args.seed, **data))
    runners = {BARE: bare_runner(device=args.device, pool=pool, views_key=views_key, seed=args.seed)}
    for setting in settings:
        trainer = build_trainer(device=args.device, setting=setting, pool=pool, seed=args.seed)
        runners[setting.name] = trainer_runner(trainer=trainer, pool=pool, device=args.device)
    rates = measure_throughput(
        runners, steps=args.steps, warmup=args.warmup, rounds=args.rounds, batch_size=args.batch_size
    )
    print()
    print("\n".join(format_table(rates, BARE)))
    if args.device == "cpu":
        print(f"after the timing: {load_average()}")
    if TARGET_SETTING in rates:
        ratio = statistics.median(rates[TARGET_SETTING]) / statistics.median(rates[BARE])
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"target {TARGET_SETTING} >= {TARGET_RATIO:.1f}x the fp32 bare encoder: {ratio:.2f}x, {verdict}")

    loss_settings = [s for s in settings if s.name in ("fp32", "bf16")]
    if len(loss_settings) == 2:
        batches = make_batches(count=args.loss_steps, seed=args.seed + 1, **data)
        curves = loss_curves(device=args.device, settings=loss_settings, batches=batches, seed=args.seed)
        fp32, bf16 = curves["fp32"], curves["bf16"]
        n = args.loss_steps
        print()
        print(f"loss after {n} steps (seed {args.seed}: same initial weights, same {n} batches, constant lr "
              f"{config['learning_rate']}, no channels_last)")
        print("| step | fp32 loss | bf16 loss | abs(bf16 - fp32) / fp32 |")
        print("|---:|---:|---:|---:|")
        for step in sorted({1, n}):
            a, b = fp32[step - 1], bf16[step - 1]
            print(f"| {step} | {a:.4f} | {b:.4f} | {abs(b - a) / abs(a):.2%} |")


if __name__ == "__main__":
    main()
