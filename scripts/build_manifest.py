#!/usr/bin/env python
"""Build a manifest CSV from a dataset in its raw layout.

Examples:
    python scripts/build_manifest.py busi ../shared/datasets/busi -o manifests/busi.csv
    python scripts/build_manifest.py dicom_dir /data/dicoms -o ct.csv --dataset tcga --opt ignore_non_dicom=true
    python scripts/build_manifest.py mrnet /data/MRNet-v1.0 -o mrnet.csv --opt planes=sagittal,coronal
    python scripts/build_manifest.py shared-pretrain ../shared/datasets -o pretrain.csv --max-per-dataset 500
    python scripts/build_manifest.py jsrt ../shared/datasets/jsrt_scr -o jsrt.csv \\
        --split-fractions train=0.6,val=0.1,test=0.3
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from data_manifests import BUILDERS, assign_splits, build_manifest, summarize
from modan_monai.data.manifest import write_manifest

_KINDS = sorted(BUILDERS) + ["shared-pretrain"]  # builder names; shared-pretrain is the documented alias


def _parse_value(text: str) -> Any:
    """``true``/``false`` -> bool, integers -> int, ``a,b`` -> tuple of strings, else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    if "," in text:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--opt expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key.strip()] = _parse_value(value)
    return options


def _parse_fractions(text: str) -> dict[str, float]:
    fractions: dict[str, float] = {}
    for pair in text.split(","):
        name, sep, value = pair.partition("=")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected name=fraction[,name=fraction...], got {text!r}") from None
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected name=fraction[,name=fraction...], got {text!r}")
    return fractions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=(
            "Kind 'shared-pretrain' builds the pretraining corpus from a shared/datasets-style root: PneumoniaMNIST "
            "(XR/chest), JSRT (XR/chest), TCGA CT DICOM (CT/chest; BodyPartExamined CHEST or LUNG) and head CT "
            "(CT/head). BUSI is NOT included: it is a downstream evaluation set, and a model is never pretrained on "
            "the images it is evaluated on (use --exclude for PneumoniaMNIST / head CT when evaluating on those). "
            "Builder options: see each data_manifests.<kind> module docstring."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=_KINDS, help="raw layout / builder")
    parser.add_argument("root", help="dataset root (file for medmnist)")
    parser.add_argument("-o", "--output", required=True, help="manifest CSV to write (paths relative to it)")
    parser.add_argument("--dataset", help="value of the dataset column (builders that take it)")
    parser.add_argument("--split", help="value of the split column (builders without official splits)")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="builder option; repeatable; a,b is a tuple, true/false a bool")
    parser.add_argument("--max-per-dataset", type=int, help="shared-pretrain: subsample each dataset to N rows")
    parser.add_argument("--seed", type=int, default=0, help="subsampling / split seed (default 0)")
    parser.add_argument("--exclude", nargs="*", default=[],
                        help="shared-pretrain: datasets to leave out (pneumoniamnist, jsrt, ct_tcga, head_ct)")
    parser.add_argument("--split-fractions", type=_parse_fractions, metavar="NAME=F,...",
                        help="assign a seeded random split per case_id (e.g. train=0.6,val=0.1,test=0.3; --seed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    options = _parse_options(args.opt)
    for name in ("dataset", "split"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.kind.replace("-", "_") == "shared_pretrain":
        options.update(max_per_dataset=args.max_per_dataset, seed=args.seed, exclude=tuple(args.exclude))
    elif args.max_per_dataset is not None or args.exclude:
        parser.error("--max-per-dataset / --exclude only apply to kind shared-pretrain")
    try:
        frame = build_manifest(args.kind, args.root, **options)
        if args.split_fractions is not None:
            frame = assign_splits(frame, args.split_fractions, seed=args.seed)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = write_manifest(frame, args.output)
    summary = summarize(frame)
    print(f"wrote {len(frame)} rows to {out}")
    print(summary.to_string(index=False))
    if args.split_fractions is not None:
        print(frame["split"].value_counts().rename_axis("split").reset_index(name="rows").to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
