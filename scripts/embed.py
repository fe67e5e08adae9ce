#!/usr/bin/env python
"""Encoder features of a manifest -> 2-D UMAP coloured by (modality, anatomy), CSV, TensorBoard projector.

Examples:
    python scripts/embed.py --manifest pretrain.csv --encoder modan=runs/modan/encoder.pt \\
        --encoder mlvicx=runs/mlvicx/encoder.pt --encoder imagenet=imagenet:resnet18.pth --out embeddings/
    tensorboard --logdir embeddings/projector

Per encoder NAME: NAME_umap.png, NAME_umap.csv (coordinates + metadata), NAME_features.npy; all encoders in
projector/. The same (modality, anatomy) pair has the same colour in every map. Each encoder is built by the
encoder registry (modan_monai.networks.registry.build_encoder): a checkpoint's architecture and stem are read from it.
The CSVs and projector metadata hold the manifest's row, path, index, dataset, case_id, modality and anatomy only:
file paths are written, so do not name files after patients (see bundles/pretrain/docs/data.md, "Privacy").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modan_monai.evaluation import embed_manifest, parse_init_specs
from modan_monai.utils.interrupt import sigterm_as_interrupt
from modan_monai.utils.logs import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", required=True, help="manifest CSV (e.g. the pretraining images)")
    parser.add_argument("--encoder", action="append", required=True, metavar="NAME=SPEC",
                        help="repeatable; SPEC: scratch | imagenet:<torchvision resnet18 .pth> | <encoder/training "
                             "checkpoint of any pretraining method>")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--stem", default=None, choices=("3x3", "7x7"),
                        help="encoder stem (default: the checkpoint's; 3x3 for scratch and ImageNet weights)")
    parser.add_argument("--seed", type=int, default=0, help="UMAP seed (default 0)")
    parser.add_argument("--splits", nargs="*", help="manifest splits to use (default: all rows)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()  # the bundles' log format (modan_monai.utils.logs.LOG_FORMAT)
    try:
        written = embed_manifest(
            args.manifest, parse_init_specs(args.encoder), args.out, image_size=args.image_size,
            batch_size=args.batch_size, stem=args.stem, seed=args.seed, splits=args.splits, device=args.device,
            num_workers=args.num_workers,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # Ctrl-C or SIGTERM: one line, the lock released, exit 130 / 143
        sys.exit(main())
