#!/usr/bin/env python
"""Zero-shot analyses of encoder embeddings on landmark patches (Adam-v2 Figs. 3-6): localizability, part-whole
hierarchy, composability, interpolation / extrapolation.

Examples:
    python scripts/zero_shot.py --manifest jsrt.csv --split test --init scratch \\
        --init adamv2=runs/adamv2/encoder.pt --init modan=runs/modan/encoder.pt --out results/zero_shot

The manifest needs mask_<structure> columns (the JSRT/SCR builder writes mask_heart, mask_left_lung,
mask_right_lung, mask_left_clavicle, mask_right_clavicle); landmarks come from the masks at --load-size and
patches are resized to --image-size. Outputs per analysis: <analysis>.csv, .png and .md (encoders compared, mean ±
sd (n) [95 % percentile bootstrap interval over images]), plus landmarks.csv, controls.csv (each paper figure beside
the control a constant embedding cannot pass), hierarchy_<init>.png, summary.md and settings.json. Images are named
by manifest row and case_id only. An encoder that has never been trained (scratch) is analysed with BatchNorm
statistics estimated on the analysis patches (--bn-stats auto, the k-NN monitor's rule); summary.md says which
encoders. Definitions: modan_monai.evaluation.zero_shot and shared/spec/methods.md section 3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modan_monai.evaluation import parse_init_specs
from modan_monai.evaluation.protocol import positive_int
from modan_monai.evaluation.zero_shot import BN_STATS, ZERO_SHOT_ANALYSES, run_zero_shot
from modan_monai.utils import RunLockError, lock_output_dir
from modan_monai.utils.interrupt import sigterm_as_interrupt
from modan_monai.utils.logs import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", required=True, help="manifest CSV with mask_<structure> columns")
    parser.add_argument("--init", action="append", required=True, metavar="NAME=SPEC",
                        help="repeatable; SPEC: scratch | imagenet:<file> | <encoder.pt or training checkpoint>")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--image-size", type=positive_int, default=64, help="encoder input side (default 64)")
    parser.add_argument("--load-size", type=positive_int, default=256,
                        help="side images and masks are resized to before landmarks and patches (default 256)")
    parser.add_argument("--analyses", nargs="+", default=list(ZERO_SHOT_ANALYSES), choices=ZERO_SHOT_ANALYSES)
    parser.add_argument("--split", nargs="*", dest="splits", help="manifest splits to use (default: all rows)")
    parser.add_argument("--max-images", type=positive_int, help="a seeded random subset of this many images")
    parser.add_argument("--wholes-per-k", type=positive_int, default=2,
                        help="composability wholes per image and part count k (default 2)")
    parser.add_argument("--samples-per-t", type=positive_int, default=2,
                        help="interpolation samples per image and t (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset, geometry and UMAP (default 0)")
    parser.add_argument("--bn-stats", default="auto", choices=BN_STATS,
                        help="BatchNorm statistics: auto = estimate them on the analysis patches for an encoder that "
                             "has never been trained (the k-NN monitor's rule); recompute = for every encoder; "
                             "running = never (default auto)")
    parser.add_argument("--bn-patches", type=positive_int, default=2048,
                        help="most analysis patches the BatchNorm statistics are estimated on (default 2048)")
    parser.add_argument("--bootstrap-resamples", type=positive_int, default=2000,
                        help="resamples of the 95 %% bootstrap intervals over images (default 2000)")
    parser.add_argument("--stem", default=None, choices=("3x3", "7x7"), help="encoder stem (default: the checkpoint's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        inits = parse_init_specs(args.init)
    except ValueError as err:
        parser.error(f"argument --init: {err}")
    try:  # one run per --out; released on return, or at exit
        lock = lock_output_dir(args.out, what="--out")
    except RunLockError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    setup_logging()  # the bundles' log format (modan_monai.utils.logs.LOG_FORMAT)
    try:
        run_zero_shot(args.manifest, inits, args.out, image_size=args.image_size, load_size=args.load_size,
                      analyses=args.analyses, splits=args.splits, max_images=args.max_images, seed=args.seed,
                      wholes_per_k=args.wholes_per_k, samples_per_t=args.samples_per_t, stem=args.stem,
                      bn_stats=args.bn_stats, bn_patches=args.bn_patches,
                      bootstrap_resamples=args.bootstrap_resamples, device=args.device)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    print(f"zero-shot analyses in {args.out}/summary.md")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # Ctrl-C or SIGTERM: one line, the lock released, exit 130 / 143
        sys.exit(main())
