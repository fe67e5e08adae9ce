#!/usr/bin/env python
"""Run the segment bundle over inits x few-shot sizes x seeds and tabulate the test Dice (mean ± sd over seeds).

Examples:
    python scripts/build_manifest.py jsrt ../shared/datasets/jsrt_scr -o jsrt.csv \\
        --split-fractions train=0.6,val=0.1,test=0.3
    python scripts/run_segmentation.py --manifest jsrt.csv --structures "{'heart': ['heart'], \\
        'clavicles': ['left_clavicle', 'right_clavicle']}" --init scratch --init modan=modan/encoder.pt \\
        --init mlvicx=mlvicx/encoder.pt --few-shot 3 6 12 24 --seeds 0 1 2 --out results/jsrt_fewshot

Each run is the `run` of bundles/segment (train, then evaluate on the test split; what `python -m monai.bundle run`
does, the equivalent commands are in its log) in <out>/<init>/n<k>_s<seed>/ with its run.log, in one of --jobs worker
processes. Each init's architecture and stem are read from its checkpoint by the encoder registry. Re-running with
the same --out skips the runs already in results.csv. Outputs: results.csv (one row per run) and summary.md
(mean ± sd over seeds).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path

from modan_monai.evaluation import parse_init_specs
from modan_monai.evaluation.protocol import non_negative_int, positive_int
from modan_monai.evaluation.segmentation_grid import plan_runs, run_grid, segmentation_markdown, segmentation_summary
from modan_monai.utils import RunLockError, lock_output_dir
from modan_monai.utils.interrupt import sigterm_as_interrupt
from modan_monai.utils.logs import setup_logging

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "segment"


def _size(text: str) -> int | None:
    return None if text == "all" else positive_int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", required=True, help="manifest with mask_<structure> columns and a split column")
    parser.add_argument("--structures", required=True,
                        help="list of structures, or a mapping channel -> structures merged by union (Python literal)")
    parser.add_argument("--init", action="append", required=True, metavar="NAME=SPEC",
                        help="repeatable; SPEC: scratch | imagenet:<file> | an encoder.pt or training checkpoint of "
                             "any pretraining method (its architecture and stem are read from it)")
    parser.add_argument("--few-shot", nargs="+", type=_size, default=[3, 6, 12, 24],
                        help="training-set sizes; 'all' for the whole training split (default 3 6 12 24)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--image-size", type=positive_int, default=128)
    parser.add_argument("--epochs", type=positive_int, default=30)
    parser.add_argument("--samples-per-epoch", type=non_negative_int, default=32,
                        help="training samples drawn per epoch, whatever the set size: every run gets the same number "
                             "of steps (default 32; 0: one pass over the training set)")
    parser.add_argument("--val-interval", type=positive_int, default=1, help="validate every N epochs (default 1)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--stem", default=None, choices=("3x3", "7x7"),
                        help="encoder stem of every init (default: each checkpoint's; 3x3 for scratch / ImageNet)")
    parser.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    parser.add_argument("--jobs", type=positive_int, default=1, help="worker processes: runs in parallel (default 1)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    setup_logging()  # the bundles' log format (modan_monai.utils.logs.LOG_FORMAT)

    try:
        structures = ast.literal_eval(args.structures)
    except (ValueError, SyntaxError):
        parser.error(f"--structures must be a Python list or dict literal, got {args.structures!r}")
    try:
        inits = parse_init_specs(args.init)
        runs = plan_runs(inits, args.few_shot, args.seeds, stem=args.stem, image_size=args.image_size)
    except (ValueError, FileNotFoundError) as err:  # before --out is created: a refused grid writes nothing
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:  # one run per --out; released on return, or at exit
        lock = lock_output_dir(args.out, what="--out")
    except RunLockError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    overrides = {
        "manifest": str(Path(args.manifest).resolve()), "structures": structures, "image_size": args.image_size,
        "epochs": args.epochs, "samples_per_epoch": args.samples_per_epoch or None,
        "val_interval": args.val_interval, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "freeze_encoder": args.freeze_encoder,
    }
    results = run_grid(runs, args.out, BUNDLE, overrides, jobs=args.jobs, threads_per_job=args.threads)
    summary = segmentation_summary(results, init_order=list(inits))
    text = segmentation_markdown(summary)
    (Path(args.out) / "summary.md").write_text(text + "\n")
    print(text)
    lock.release()
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # Ctrl-C or SIGTERM: one line, the lock released, exit 130 / 143
        sys.exit(main())
