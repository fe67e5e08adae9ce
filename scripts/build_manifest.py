#!/usr/bin/env python
"""Build a manifest CSV from a dataset in its raw layout.

Examples:
    python scripts/build_manifest.py busi ../shared/datasets/busi -o manifests/busi.csv
    python scripts/build_manifest.py dicom_dir /data/dicoms -o ct.csv --dataset tcga --opt ignore_non_dicom=true
    python scripts/build_manifest.py dicom_dir /data/dicoms -o ct.csv --salt-file ~/secrets/ct.salt --keep-uids
    python scripts/build_manifest.py mrnet /data/MRNet-v1.0 -o mrnet.csv --opt planes=sagittal,coronal
    python scripts/build_manifest.py chestxray14 /data/ChestX-ray14 -o cxr14.csv
    python scripts/build_manifest.py chexpert /data/CheXpert-v1.0-small -o chexpert.csv --opt csvs=valid.csv
    python scripts/build_manifest.py shared-pretrain ../shared/datasets -o pretrain.csv --max-per-dataset 500
    python scripts/build_manifest.py jsrt ../shared/datasets/jsrt_scr -o jsrt.csv \\
        --split-fractions train=0.6,val=0.1,test=0.3
    python scripts/build_manifest.py dicom_dir /data/dicoms -o ct.csv --opt workers=2
    python scripts/build_manifest.py class_folders /data/isic -o isic.csv --opt modality=DMS --opt anatomy=skin \\
        --opt split_fractions=train=0.8,test=0.2 --opt seed=0
    python scripts/build_manifest.py class_folders /data/fundus -o fundus.csv \\
        --opt 'classes={"dr": {"modality": "OP", "anatomy": "retina"}, "oct": {"modality": "OPT", "anatomy": "retina"}}'
    python scripts/build_manifest.py image_masks /data/kvasir_seg -o kvasir.csv --opt modality=ES \\
        --opt anatomy=colon --opt structures=polyp
    python scripts/build_manifest.py image_masks /data/DRIVE/training -o drive.csv --opt modality=OP \\
        --opt anatomy=retina --opt 'case_id_regex=^([0-9]+)_' \\
        --opt 'mask_names={"vessel": "1st_manual/{case_id}_manual1", "fov": "mask/{stem}_mask"}'
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_manifests import BUILDERS, assign_splits, build_manifest, parse_fractions, summarize
from modan_monai.data.manifest import write_manifest
from modan_monai.utils.logs import setup_logging

_KINDS = sorted(BUILDERS) + ["shared-pretrain"]  # builder names; shared-pretrain is the documented alias


def _parse_value(text: str, key: str = "") -> Any:
    """``{...}`` / ``[...]`` / ``"..."`` -> JSON, ``true``/``false`` -> bool, integers -> int, ``a,b`` -> tuple, else
    the string (a JSON string ``"a,b"`` keeps its commas, e.g. a case_id_regex ``"^(\\d{1,3})"``)."""
    if text.strip().startswith(("{", "[", '"')):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--opt {key}: value is not valid JSON ({err}): {text!r}") from None
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
        options[key.strip()] = _parse_value(value, key.strip())
    return options


def _parse_fractions(text: str) -> dict[str, float]:
    try:
        return parse_fractions(text, option="--split-fractions")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_privacy_options(parser: argparse.ArgumentParser, args: argparse.Namespace, options: dict[str, Any]) -> None:
    """``--salt`` / ``--salt-file`` / ``--keep-uids`` into ``options``; the salt file defaults to ``<output>.salt``.

    Applies to every builder that takes a ``salt_file`` (``dicom_dir``, ``shared-pretrain``); refused for the others.
    """
    accepted = inspect.signature(BUILDERS[args.kind.replace("-", "_")]).parameters
    given = [flag for flag, value in (("--salt", args.salt), ("--salt-file", args.salt_file),
                                      ("--keep-uids", args.keep_uids)) if value]
    if "salt_file" not in accepted:
        if given:
            parser.error(f"{' / '.join(given)} only apply to kind dicom_dir and shared-pretrain (kind {args.kind} reads no DICOM ids)")
        return
    if args.salt is not None and args.salt_file is not None:
        parser.error("pass either --salt or --salt-file, not both")
    if args.salt is not None:
        options["salt"] = args.salt
    elif args.salt_file is not None:
        options["salt_file"] = args.salt_file
    elif "salt" not in options and "salt_file" not in options:
        options["salt_file"] = str(Path(args.output).expanduser()) + ".salt"
    if args.keep_uids:
        options["keep_uids"] = True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=(
            "Kind 'shared-pretrain' builds the pretraining corpus from a shared/datasets-style root: PneumoniaMNIST "
            "(XR/chest), JSRT (XR/chest), TCGA CT DICOM (CT/chest; BodyPartExamined CHEST or LUNG), head CT "
            "(CT/head), knee_kl (XR/knee; case = patient), bccd_blood (SM/blood), ham10000 (DMS/skin; case = "
            "lesion_id) and retinamnist (OP/eye). BUSI is NOT included: it is a downstream evaluation set, and a model "
            "is never pretrained on the images it is evaluated on (use --exclude for the dataset you evaluate on). "
            "Kinds knee_kl and ham10000 read those layouts alone; kind chestxray14: Data_Entry_2017.csv, "
            "train_val_list.txt / test_list.txt (-> train / test) and images_NNN/images/ (one 0/1 column per "
            "finding); kind chexpert: the CheXpert-v1.0-small folder, train.csv (-> train) / valid.csv (-> test), "
            "observations kept as 1 / 0 / -1 / empty; both take --opt partial=true for a copy of some images. "
            "Kind image_folder: <root>/<image>, --opt "
            "modality=... --opt anatomy=... required. "
            "Kind dicom_dir: case_id is a salted pseudonym of the PatientID (HMAC-SHA256; StudyInstanceUID when the "
            "patient id is empty). The salt is --salt, or the file --salt-file (default: <output>.salt beside the "
            "manifest), created with a random secret when absent: keep it private, never share it, and keep it to "
            "get the same pseudonyms in later builds (a salt file in a git work tree that does not ignore it gets a "
            "warning). UIDs are left out unless --keep-uids; --opt workers=N reads "
            "the headers in N processes (same manifest). "
            "Kind class_folders: <root>/<class>/<image>, label = class folder; --opt modality=... --opt anatomy=... "
            "or --opt 'classes={\"<class>\": {\"modality\": ..., \"anatomy\": ...}}'; --opt case_id_regex=... "
            "(one group). Kind image_masks: <root>/images/ + <root>/masks/<structure>/ (or a flat masks/, or "
            "--opt masks=images for <stem>_mask.* beside the images) -> mask_<structure> columns; --opt modality=... "
            "--opt anatomy=... required; --opt 'mask_names={\"<structure>\": \"<mask folder>/{case_id}_manual1\"}' "
            "when mask names derive otherwise from the image names ({case_id}, {stem}). Both take "
            "--opt split_fractions=train=0.8,test=0.2 --opt seed=N. "
            "Linked folders are followed by every builder. "
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
                        help="builder option; repeatable; a,b is a tuple, true/false a bool, {...} / [...] / \"...\" "
                             "JSON (a quoted JSON string keeps commas)")
    parser.add_argument("--max-per-dataset", type=int, help="shared-pretrain: subsample each dataset to N rows")
    parser.add_argument("--seed", type=int, default=0, help="subsampling / split seed (default 0)")
    parser.add_argument("--exclude", nargs="*", default=[],
                        help="shared-pretrain: datasets to leave out (pneumoniamnist, jsrt, ct_tcga, head_ct, knee_kl, "
                             "bccd_blood, ham10000, retinamnist)")
    parser.add_argument("--split-fractions", type=_parse_fractions, metavar="NAME=F,...",
                        help="assign a seeded random split per case_id (e.g. train=0.6,val=0.1,test=0.3; --seed)")
    parser.add_argument("--salt", help="dicom_dir: secret salt of the case_id pseudonyms (a salt file is safer: "
                                            "command lines are visible to other users and kept in shell history)")
    parser.add_argument("--salt-file", help="dicom_dir: file holding the salt, created when absent "
                                            "(default <output>.salt)")
    parser.add_argument("--keep-uids", action="store_true",
                        help="dicom_dir: keep the Study/Series/SOP Instance UID columns (left out by default)")
    args = parser.parse_args(argv)
    setup_logging()  # the bundles' log format (modan_monai.utils.logs.LOG_FORMAT)

    options = _parse_options(args.opt)
    for name in ("dataset", "split"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.kind.replace("-", "_") == "shared_pretrain":
        options.update(max_per_dataset=args.max_per_dataset, seed=args.seed, exclude=tuple(args.exclude))
    elif args.max_per_dataset is not None or args.exclude:
        parser.error("--max-per-dataset / --exclude only apply to kind shared-pretrain")
    _add_privacy_options(parser, args, options)
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
