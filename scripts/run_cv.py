#!/usr/bin/env python
"""Run the downstream cross-validation protocol (fine-tune / linear probe, label fractions, AUC, Wilcoxon).

Examples:
    python scripts/run_cv.py --manifest busi.csv --label-column label --positive malignant \\
        --init scratch --init imagenet=imagenet:resnet18.pth --init modan=runs/modan/encoder.pt \\
        --reference scratch --out results/busi
    python scripts/run_cv.py --manifest mrnet.csv --label-column acl --planes sagittal \\
        --mrnet-aggregation max --init modan=encoder.pt --modes finetune --fractions 100 --out results/mrnet_acl
    python scripts/run_cv.py --task multiclass --ordinal --manifest knee_kl.csv --label-column label \\
        --init scratch --init modan=encoder.pt --out results/knee_kl
    python scripts/run_cv.py --task multilabel --manifest chestxray14.csv --label-column "Finding Labels" \\
        --test-split test --repeats 3 --init scratch --init modan=encoder.pt --out results/cxr14

--task multiclass: one class per row in --label-column (macro AUC, accuracy, balanced accuracy; kappa with
--ordinal); --task multilabel: --label-columns (1 / 0 / -1 / blank per label, -1 and blank by --uncertain) or
--label-column of |-separated findings. --test-split: no folds, train on the other rows, test on that split.

Every fold runs the classify bundle (bundles/classify: configs/train.json, + configs/linear_probe.json for
linear probing) in process, with the fold's datalists and the options below as overrides. Re-running with the
same --out skips the folds already in results.csv (an interrupted run resumes); the partitions in folds.csv
are reused. Outputs: folds.csv, results.csv, predictions.csv, summary.md, roc.png, settings.json and each
fold's TensorBoard scalars under runs/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modan_monai.evaluation import (
    EVALUATION_LEVELS,
    EXAM_AGGREGATIONS,
    PROTOCOL_MODES,
    TASKS,
    UNCERTAIN_POLICIES,
    parse_init_specs,
    run_protocol,
)
from modan_monai.evaluation.protocol import non_negative_int, positive_int
from modan_monai.utils import RunLockError, lock_output_dir
from modan_monai.utils.interrupt import sigterm_as_interrupt
from modan_monai.utils.logs import progress_only, setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", required=True, help="manifest CSV with a label column")
    parser.add_argument("--task", default="binary", choices=TASKS,
                        help="binary (default), multiclass (one class per row) or multilabel (several labels per row)")
    parser.add_argument("--label-column",
                        help="label column (binary: 0/1, or two values with --positive; multiclass: the class; "
                             "multilabel: |-separated findings such as ChestX-ray14's 'Finding Labels')")
    parser.add_argument("--positive", help="value of the label column mapped to 1 (the other value -> 0; binary)")
    parser.add_argument("--label-columns", nargs="+", metavar="COLUMN",
                        help="multilabel: one 1 / 0 / -1 (uncertain) / blank column per label (CheXpert)")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="classes (labels) in output order (default: from the manifest, sorted)")
    parser.add_argument("--uncertain", choices=UNCERTAIN_POLICIES,
                        help="multilabel --label-columns: -1 and blank cells become ones, zeros, are ignored (left "
                             "out of the loss and the AUC) or are an error (default)")
    parser.add_argument("--ordinal", action="store_true",
                        help="multiclass: the classes are ordered grades; adds the quadratic-weighted kappa")
    parser.add_argument("--init", action="append", required=True, metavar="NAME=SPEC",
                        help="repeatable; SPEC: scratch | imagenet:<torchvision resnet18 .pth> | <encoder/training "
                             "checkpoint>")
    parser.add_argument("--reference", help="init the others are tested against (default: the first --init)")
    parser.add_argument("--modes", nargs="+", default=list(PROTOCOL_MODES), choices=PROTOCOL_MODES)
    parser.add_argument("--fractions", nargs="+", type=float, default=[1.0, 10.0, 30.0, 100.0],
                        help="label fractions in percent of each training fold (default 1 10 30 100)")
    parser.add_argument("--repeats", type=positive_int, default=10, help="repeats of the K-fold procedure (default 10)")
    parser.add_argument("--folds", type=positive_int, help="folds K, 2 or more (default 5)")
    parser.add_argument("--test-split", metavar="SPLIT",
                        help="no folds: train on the rows outside this manifest split (a label fraction of them), test "
                             "on its rows, --repeats times (e.g. test: ChestX-ray14's official test list)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; repeat r uses seed + r (default 0)")
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--step-size", type=positive_int, default=5, help="StepLR step in epochs (default 5)")
    parser.add_argument("--gamma", type=float, default=0.1, help="StepLR factor (default 0.1)")
    parser.add_argument("--image-size", type=positive_int, default=64)
    parser.add_argument("--stem", default="3x3", choices=("3x3", "7x7"), help="encoder stem (match the checkpoints)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of training cases in the inner validation split (default 0.2)")
    parser.add_argument("--splits", nargs="*", help="manifest splits to use (default: all rows)")
    parser.add_argument("--level", default="auto", choices=EVALUATION_LEVELS,
                        help="AUC per image or per exam (auto: exam when the manifest lists volumes)")
    parser.add_argument("--mrnet-aggregation", default="mean", choices=EXAM_AGGREGATIONS,
                        help="exam score from its slice probabilities (default mean)")
    parser.add_argument("--planes", nargs="*", help="MRNet planes to use (plane column; default all)")
    parser.add_argument("--slices", default="all", choices=("all", "central"), help="slices of each volume")
    parser.add_argument("--central-slices", type=positive_int, default=1, help="slices kept with --slices central")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-workers", type=non_negative_int, default=0)
    parser.add_argument("--bundle", help="classify bundle folder (default: bundles/classify of this repository)")
    parser.add_argument("--out", required=True, help="output folder (re-use it to resume)")
    args = parser.parse_args(argv)
    if args.test_split is not None and args.folds is not None:
        parser.error(f"argument --folds: --test-split {args.test_split} tests on that split, without folds")
    args.folds = 5 if args.folds is None else args.folds
    if args.folds < 2:
        parser.error(f"argument --folds: K-fold cross-validation needs 2 folds or more, got {args.folds}")
    if args.task == "multilabel" and (args.label_column is None) == (args.label_columns is None):
        parser.error("--task multilabel reads either --label-columns (1/0/-1/blank per label) or --label-column "
                     "(|-separated findings): give one of them")
    if args.task != "multilabel" and args.label_column is None:
        parser.error(f"--task {args.task} needs --label-column")
    for option, value, task in (("--positive", args.positive, "binary"), ("--ordinal", args.ordinal, "multiclass"),
                                ("--label-columns", args.label_columns, "multilabel")):
        if value and args.task != task:
            parser.error(f"argument {option}: applies to --task {task}, not {args.task}")
    if args.uncertain is not None and args.label_columns is None:
        parser.error("argument --uncertain: applies to the 1/0/-1/blank columns of --label-columns (--task multilabel)")
    try:  # one run per --out (two would write every fold twice); released on return, or at exit
        lock = lock_output_dir(args.out, what="--out")
    except RunLockError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    setup_logging()  # the bundles' log format (modan_monai.utils.logs.LOG_FORMAT)
    # one progress line per fold from modan_monai.evaluation; the bundle's per-epoch lines (ignite, MONAI's
    # StatsHandler, the progress and encoder lines) only at WARNING and above (undone on return, so that a caller in
    # the same process, e.g. a test, keeps its logging)
    try:
        with progress_only(["modan_monai.evaluation"]):
            results = run_protocol(
                args.manifest, args.label_column, parse_init_specs(args.init), args.out, positive=args.positive,
                modes=args.modes, fractions=args.fractions, repeats=args.repeats, folds=args.folds, seed=args.seed,
                reference=args.reference, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                step_size=args.step_size, gamma=args.gamma, image_size=args.image_size, stem=args.stem,
                val_fraction=args.val_fraction, splits=args.splits, level=args.level,
                aggregation=args.mrnet_aggregation, planes=args.planes, slice_mode=args.slices,
                central_slices=args.central_slices, device=args.device,
                num_workers=args.num_workers, bundle=args.bundle, task=args.task, class_names=args.class_names,
                label_columns=args.label_columns, uncertain_policy=args.uncertain or "error", ordinal=args.ordinal,
                test_split=args.test_split,
            )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    print(f"{len(results)} fold results in {args.out}/results.csv; summary in {args.out}/summary.md")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # Ctrl-C or SIGTERM: one line, the lock released, exit 130 / 143
        sys.exit(main())
