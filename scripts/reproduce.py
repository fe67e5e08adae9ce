#!/usr/bin/env python
"""The evidence command: pretrain every method on the shared corpus, evaluate each against scratch, one table.

Examples:
    python scripts/reproduce.py --out results/evidence
    python scripts/reproduce.py --out results/evidence --methods modan simclr --epochs 8 --batch-size 32
    python scripts/reproduce.py --out /tmp/evidence_smoke --quick      # CI smoke test: its numbers are not evidence

Stages, each in <out>/<stage>/ (glue over the project's own commands; nothing is re-implemented here):
  manifests        the pretraining corpus (build_manifest kind shared-pretrain without JSRT; BUSI is never in it),
                   BUSI benign vs malignant, JSRT/SCR with a seeded train/val/test split (data_manifests).
  pretrain_<m>     bundles/pretrain for method m (python -m monai.bundle run), the same budget for every method:
                   the same epochs over the same training images at the same batch size, so the same number of
                   optimizer steps (Adam-v2's level schedule spreads those epochs over levels 0/1/2); the k-NN and
                   linear-probe monitors on the corpus' val split at epoch 0 and at the last epoch (summary.json).
  busi             scripts/run_cv.py: fine-tune and linear probe (frozen encoder + linear head) AUC over repeats x
                   folds, scratch and every encoder on the same saved folds.
  jsrt             scripts/run_segmentation.py: few-shot test Dice over training-set sizes x seeds.
  zero_shot        scripts/zero_shot.py on JSRT test images: the controls of controls.csv (95 % bootstrap CIs).
Then <out>/table.md, table.csv, results.json and stages.csv (wall time per stage). Each method is tested against
scratch with the paired Wilcoxon signed-rank test (modan_monai.evaluation.stats.wilcoxon_paired) over the paired
units named in the table header (BUSI: the same fold; JSRT: the same size and seed; zero-shot: the same image).

Resumable: a stage writes done.json with its settings when it finishes; a rerun skips a stage whose done.json
matches, refuses one whose settings differ (naming the stage folder and the settings) unless --force-stage <stage>
(which also redoes the stages that use its outputs), and redoes an interrupted stage (the sub-scripts resume
their own partial results when the settings are the same).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["FULL", "METHODS", "QUICK", "ReproduceError", "forced_closure", "level_schedule", "main", "reproduce"]

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_BUNDLE = ROOT / "bundles" / "pretrain"

#: method name -> (table label, config files of bundles/pretrain). The one place the per-method recipes live.
METHODS: dict[str, tuple[str, list[str]]] = {
    "modan": ("ModAn-MulSupCon", ["configs/train.json"]),
    "simclr": ("SimCLR", ["configs/train.json", "configs/simclr.json"]),
    "supervised": ("supervised", ["configs/train.json", "configs/supervised.json"]),
    "mlvicx": ("MLVICX", ["configs/train.json", "configs/mlvicx.json", "configs/mlvicx_small.json"]),
    "adamv2": ("Adam-v2", ["configs/train.json", "configs/adamv2.json"]),
}

JSRT_STRUCTURES = {"heart": ["heart"], "lungs": ["left_lung", "right_lung"],
                   "clavicles": ["left_clavicle", "right_clavicle"]}
JSRT_SPLITS = {"train": 0.6, "val": 0.1, "test": 0.3}

#: Full-run defaults (sized for about 45 min on an idle 2-core machine; see the pretrain bundle docs, "Evidence").
FULL: dict[str, Any] = {
    "image_size": 64, "pretrain_per_dataset": 40, "epochs": 3, "batch_size": 32,
    "busi_images": 100, "busi_repeats": 2, "busi_folds": 3, "busi_epochs": 2,
    "jsrt_images": 0, "few_shot": [6], "seg_seeds": [0, 1], "seg_epochs": 5, "seg_samples": 32,
    "zero_shot_images": 20, "bootstrap": 1000,
}
#: --quick: tiny everything, for the CI smoke test (its numbers are not evidence).
QUICK: dict[str, Any] = {
    "image_size": 32, "pretrain_per_dataset": 4, "epochs": 1, "batch_size": 8,
    "busi_images": 16, "busi_repeats": 1, "busi_folds": 2, "busi_epochs": 1,
    "jsrt_images": 16, "few_shot": [2], "seg_seeds": [0], "seg_epochs": 1, "seg_samples": 4,
    "zero_shot_images": 3, "bootstrap": 50,
}
ZERO_SHOT_CONTROLS: dict[str, tuple[str, str, str, str]] = {  # column -> (figure, statistic, per-image file, column)
    "landmark NC acc": ("localizability", "leave-one-image-out nearest-centroid accuracy", "localizability.csv",
                        "nearest_centroid"),
    "composability matched-mismatched": ("composability", "matched - mismatched", "composability.csv", "difference"),
    "interpolation gain": ("interpolation", "cosine - mean-embedding predictor", "interpolation.csv", "gain"),
}


class ReproduceError(Exception):
    """A refused input or a failed stage; its message names the stage folder, setting or file at fault."""


# ----------------------------------------------------------------------------------------------- stage bookkeeping
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ReproduceError(f"{path}: cannot read it ({err}); delete the stage folder or pass --force-stage") from None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys if old.get(k) != new.get(k)]


def stage_state(folder: Path, settings: Mapping[str, Any], forced: bool) -> str:
    """``"done"`` (skip), ``"run"``; refuses a finished stage whose settings differ (unless forced)."""
    done = folder / "done.json"
    if not done.exists() or forced:
        return "run"
    old = _read_json(done).get("settings", {})
    diff = _differences(old, json.loads(json.dumps(settings)))
    if diff:
        raise ReproduceError(f"stage folder {folder} was finished with other settings ({'; '.join(diff)}): pass "
                             f"--force-stage {folder.name} to redo it (and the stages that use it), or another --out")
    return "done"


def run_stage(folder: Path, settings: Mapping[str, Any], state: str, work: Callable[[Path], None]) -> float:
    """Run ``work(folder)`` unless ``state`` is ``"done"``; returns the stage's wall time in seconds."""
    done = folder / "done.json"
    if state == "done":
        print(f"[reproduce] {folder.name}: done with the same settings, skipped", flush=True)
        return float(_read_json(done)["seconds"])
    settings = json.loads(json.dumps(settings))
    started = folder / "started.json"
    if done.exists() or (started.exists() and _read_json(started) != settings):
        shutil.rmtree(folder)  # forced, or interrupted under other settings: start clean
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(started, settings)
    print(f"[reproduce] {folder.name}: running", flush=True)
    start = time.perf_counter()
    work(folder)
    seconds = time.perf_counter() - start
    _write_json(done, {"settings": settings, "seconds": seconds})
    started.unlink()
    print(f"[reproduce] {folder.name}: finished in {seconds:.0f} s", flush=True)
    return seconds


def run_command(cmd: Sequence[str], cwd: Path, log: Path) -> None:
    """Run a sub-command with its output in ``log``; a failure names the command, the log and its last lines."""
    with log.open("a") as handle:
        proc = subprocess.run(list(cmd), cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise ReproduceError(f"stage {log.parent.name}: command failed (exit {proc.returncode}), log {log}:\n{tail}\n"
                             f"stage {log.parent.name} failed: {' '.join(cmd)}")


# ------------------------------------------------------------------------------------------------------- manifests
def check_shared(shared: Path) -> None:
    """Refuse a missing shared folder or one of the datasets the stages read."""
    if not shared.is_dir():
        raise ReproduceError(f"--shared {shared}: folder not found (the shared datasets root; or set "
                             "MODAN_SHARED_DATASETS)")
    for name in ("busi", "jsrt_scr"):
        if not (shared / name).is_dir():
            raise ReproduceError(f"--shared {shared}: dataset folder {name}/ not found (needed for the evaluation)")


def _stratified(frame: pd.DataFrame, column: str, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, the same share of each value of ``column`` (0: all rows)."""
    if not n or n >= len(frame):
        return frame
    share = n / len(frame)
    parts = [g.sample(max(1, round(share * len(g))), random_state=seed) for _, g in frame.groupby(column, sort=True)]
    return pd.concat(parts).sort_index()


def build_manifests(folder: Path, shared: Path, cfg: Mapping[str, Any], seed: int) -> None:
    """Write ``pretrain.csv`` (shared corpus without JSRT), ``busi.csv`` and ``jsrt.csv`` in ``folder``."""
    from data_manifests import assign_splits, build_manifest
    from modan_monai.data.manifest import write_manifest

    pretrain = build_manifest("shared-pretrain", shared, max_per_dataset=cfg["pretrain_per_dataset"], seed=seed,
                              exclude=("jsrt",), salt_file=str(folder / "pretrain.csv.salt"))
    write_manifest(pretrain, folder / "pretrain.csv")
    busi = build_manifest("busi", shared / "busi", classes=("benign", "malignant"))
    write_manifest(_stratified(busi, "label", cfg["busi_images"], seed), folder / "busi.csv")
    jsrt = assign_splits(build_manifest("jsrt", shared / "jsrt_scr"), JSRT_SPLITS, seed=seed)
    write_manifest(_stratified(jsrt, "split", cfg["jsrt_images"], seed), folder / "jsrt.csv")


# -------------------------------------------------------------------------------------------------------- pretrain
def level_schedule(epochs: int) -> list[list[int]]:
    """Adam-v2's (level, epochs) pairs for ``epochs`` epochs: levels 0, 1, 2 in turn, as evenly as possible."""
    levels = min(3, epochs)
    return [[level, epochs // levels + (1 if level < epochs % levels else 0)] for level in range(levels)]


def pretrain_command(method: str, manifest: Path, out: Path, cfg: Mapping[str, Any]) -> list[str]:
    """``python -m monai.bundle run`` of bundles/pretrain for ``method`` with the shared budget."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(METHODS[method][1]),
           "--logging_file", "configs/logging.conf", "--manifest", str(manifest), "--output_dir", str(out),
           "--image_size", str(cfg["image_size"]), "--batch_size", str(cfg["batch_size"]),
           "--epochs", str(cfg["epochs"]), "--knn_interval", str(cfg["epochs"]), "--log_interval", "20"]
    if method == "adamv2":
        cmd += ["--level_schedule", json.dumps(level_schedule(cfg["epochs"]))]
    return cmd


# ------------------------------------------------------------------------------------------------- evaluations
def init_args(encoders: Mapping[str, Path]) -> list[str]:
    """``--init scratch --init <method>=<encoder.pt> ...`` of the evaluation scripts."""
    return ["--init", "scratch"] + [arg for m, path in encoders.items() for arg in ("--init", f"{m}={path}")]


def busi_command(manifest: Path, encoders: Mapping[str, Path], out: Path, cfg: Mapping[str, Any]) -> list[str]:
    """``scripts/run_cv.py`` on BUSI: fine-tune and linear probe of every encoder and scratch on the same folds."""
    return [sys.executable, str(ROOT / "scripts" / "run_cv.py"), "--manifest", str(manifest),
            "--label-column", "label", "--positive", "malignant", *init_args(encoders), "--reference", "scratch",
            "--modes", "finetune", "linear_probe", "--fractions", "100", "--repeats", str(cfg["busi_repeats"]),
            "--folds", str(cfg["busi_folds"]), "--epochs", str(cfg["busi_epochs"]),
            "--batch-size", str(cfg["batch_size"]), "--image-size", str(cfg["image_size"]), "--out", str(out)]


def jsrt_command(manifest: Path, encoders: Mapping[str, Path], out: Path, cfg: Mapping[str, Any]) -> list[str]:
    """``scripts/run_segmentation.py`` on JSRT: few-shot heart / lungs / clavicles of every encoder and scratch."""
    return [sys.executable, str(ROOT / "scripts" / "run_segmentation.py"), "--manifest", str(manifest),
            "--structures", repr(JSRT_STRUCTURES), *init_args(encoders),
            "--few-shot", *map(str, cfg["few_shot"]), "--seeds", *map(str, cfg["seg_seeds"]),
            "--image-size", str(cfg["image_size"]), "--epochs", str(cfg["seg_epochs"]),
            "--samples-per-epoch", str(cfg["seg_samples"]), "--val-interval", str(cfg["seg_epochs"]),
            "--batch-size", "8", "--out", str(out)]


def zero_shot_command(manifest: Path, encoders: Mapping[str, Path], out: Path, cfg: Mapping[str, Any]) -> list[str]:
    """``scripts/zero_shot.py`` on the JSRT test split: the three zero-shot controls of every encoder and scratch."""
    return [sys.executable, str(ROOT / "scripts" / "zero_shot.py"), "--manifest", str(manifest), "--split", "test",
            *init_args(encoders), "--analyses", "localizability", "composability", "interpolation",
            "--image-size", str(cfg["image_size"]), "--load-size", str(4 * cfg["image_size"]),
            "--max-images", str(cfg["zero_shot_images"]), "--bootstrap-resamples", str(cfg["bootstrap"]),
            "--out", str(out)]


# ------------------------------------------------------------------------------------------------------- the table
def _paired_p(values: pd.Series, reference: pd.Series) -> tuple[float, int]:
    """Two-sided paired Wilcoxon p of ``values`` vs ``reference`` over their shared index, and the pair count."""
    from modan_monai.evaluation.stats import WILCOXON_MIN_PAIRS, wilcoxon_paired

    common = values.index.intersection(reference.index)
    if len(common) < WILCOXON_MIN_PAIRS:
        return float("nan"), int(len(common))
    return wilcoxon_paired(values.loc[common], reference.loc[common])["two_sided"], int(len(common))


def _versus_scratch(frame: pd.DataFrame, init_col: str, keys: list[str], value: str, prefix: str) -> dict:
    """Per init: mean, sd of ``value`` over its units, and p vs scratch paired on ``keys``."""
    out: dict[str, dict] = {}
    per_unit = frame.groupby([init_col, *keys])[value].mean()
    ref = per_unit.loc["scratch"] if "scratch" in per_unit.index.get_level_values(0) else pd.Series(dtype=float)
    for init in per_unit.index.get_level_values(0).unique():
        values = per_unit.loc[init]
        p, n = _paired_p(values, ref) if init != "scratch" else (float("nan"), 0)
        out[str(init)] = {f"{prefix}": float(values.mean()), f"{prefix} sd": float(values.std(ddof=1))
                          if len(values) > 1 else float("nan"), f"{prefix} p": p, f"{prefix} pairs": n}
    return out


def busi_results(folder: Path) -> dict:
    """Fine-tune and linear-probe AUC per init from run_cv's ``results.csv``, p paired by (repeat, fold)."""
    frame = pd.read_csv(folder / "results.csv", dtype={"init": str})
    out: dict[str, dict] = {}
    for mode, label in (("finetune", "BUSI fine-tune AUC"), ("linear_probe", "BUSI linear-probe AUC")):
        for init, row in _versus_scratch(frame[frame["mode"] == mode], "init", ["repeat", "fold"], "auc",
                                         label).items():
            out.setdefault(init, {}).update(row)
    return out


def jsrt_results(folder: Path) -> dict:
    """Test mean Dice per init from run_segmentation's ``results.csv``, p paired by (size, seed)."""
    frame = pd.read_csv(folder / "results.csv", dtype={"init": str, "n_train": str})
    return _versus_scratch(frame, "init", ["n_train", "seed"], "test_mean_dice", "JSRT few-shot Dice")


def zero_shot_results(folder: Path) -> dict:
    """The controls of ``controls.csv`` (mean, 95 % CI) per encoder, p paired by image (per-image CSVs)."""
    controls = pd.read_csv(folder / "controls.csv", dtype={"encoder": str})
    out: dict[str, dict] = {}
    for column, (figure, statistic, per_image, value) in ZERO_SHOT_CONTROLS.items():
        frame = pd.read_csv(folder / per_image, dtype={"encoder": str})
        if figure == "interpolation":
            frame = frame[frame["kind"] == "interpolation"]
        tested = _versus_scratch(frame, "encoder", ["row"], value, column)
        rows = controls[(controls["figure"] == figure) & (controls["statistic"] == statistic)]
        for _, row in rows.iterrows():
            out.setdefault(row["encoder"], {}).update({
                column: float(row["mean"]), f"{column} ci": [float(row["ci_low"]), float(row["ci_high"])],
                f"{column} p": tested[row["encoder"]][f"{column} p"],
                f"{column} pairs": tested[row["encoder"]][f"{column} pairs"]})
    return out


def pretrain_results(folder: Path) -> dict:
    """k-NN and linear-probe accuracy on the corpus' val split, epoch 0 -> last, from ``summary.json``."""
    summary = _read_json(folder / "summary.json")
    row = {}
    for key, label in (("knn", "k-NN"), ("linear_probe", "probe")):
        first, last = summary[key]["first"], summary[key]["last"]
        row[f"corpus {label} epoch 0"] = float(first["accuracy"])
        row[f"corpus {label} last"] = float(last["accuracy"])
        row[f"corpus {label} last epoch"] = int(last["epoch"])
    return row


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _cell(row: Mapping[str, Any], key: str) -> str:
    if key not in row:
        return "-"
    text = _fmt(row[key])
    if f"{key} sd" in row:
        text += f" ± {_fmt(row[f'{key} sd'])}"
    if f"{key} ci" in row:
        text += f" [{_fmt(row[f'{key} ci'][0])}, {_fmt(row[f'{key} ci'][1])}]"
    if f"{key} p" in row and row.get(f"{key} pairs", 1) != 0:
        p = row[f"{key} p"]
        text += " (p < 0.001)" if math.isfinite(p) and p < 0.001 else f" (p {_fmt(p)})"
    return text


TABLE_COLUMNS = ["BUSI linear-probe AUC", "BUSI fine-tune AUC", "JSRT few-shot Dice", *ZERO_SHOT_CONTROLS]


def table_markdown(rows: Mapping[str, Mapping[str, Any]], header: str, stages: pd.DataFrame) -> str:
    """One markdown table (rows: scratch + methods) followed by the wall time of each stage."""
    names = ["corpus k-NN epoch 0 -> last", "corpus probe epoch 0 -> last", *TABLE_COLUMNS, "pretrain wall time"]
    lines = [header, "", "| init | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for init, row in rows.items():
        cells = [f"{_fmt(row[f'corpus {k} epoch 0'])} -> {_fmt(row[f'corpus {k} last'])}"
                 if f"corpus {k} epoch 0" in row else "-" for k in ("k-NN", "probe")]
        cells += [_cell(row, key) for key in TABLE_COLUMNS]
        cells.append(f"{row['pretrain seconds']:.0f} s" if "pretrain seconds" in row else "-")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    times = ", ".join(f"{s} {t:.0f} s" for s, t in zip(stages["stage"], stages["seconds"]))
    lines += ["", f"Wall time per stage: {times}; total {stages['seconds'].sum():.0f} s."]
    return "\n".join(lines) + "\n"


def table_header(cfg: Mapping[str, Any], methods: Sequence[str], quick: bool) -> str:
    """The title and the budget paragraph of table.md (a ``--quick`` run is marked as not evidence)."""
    head = ("# Evidence: does each method learn? — QUICK SMOKE RUN: these numbers are NOT evidence\n\n" if quick
            else "# Evidence: does each method learn?\n\n")
    return head + (
        f"Same budget for every method: {cfg['epochs']} epoch(s) over the same training images of the shared corpus "
        f"without JSRT and BUSI (at most {cfg['pretrain_per_dataset']} per dataset), batch {cfg['batch_size']}, "
        f"{cfg['image_size']} px: the same number of optimizer steps (Adam-v2: level schedule "
        f"{level_schedule(cfg['epochs'])}). Corpus k-NN / linear probe: accuracy on the corpus' val split at epoch 0 "
        "(the random encoder) -> the last epoch (no pairing, no p). BUSI (benign vs malignant, "
        f"{cfg['busi_images'] or 'all'} images): AUC mean ± sd over {cfg['busi_repeats']} repeat(s) x "
        f"{cfg['busi_folds']} folds, p paired by fold; linear probe = frozen encoder + linear head. JSRT: test mean "
        f"Dice (heart, lungs, clavicles) with {cfg['few_shot']} training images x seeds {cfg['seg_seeds']}, p paired "
        f"by size and seed. Zero-shot on {cfg['zero_shot_images']} JSRT test images: mean [95 % bootstrap CI], p "
        "paired by image; scratch with BatchNorm statistics estimated on the analysis patches. p: two-sided Wilcoxon "
        "signed-rank vs scratch (n/a below 2 pairs). Methods: " + ", ".join(methods) + ".")


def write_outputs(out: Path, rows: Mapping[str, Mapping[str, Any]], text: str, stages: pd.DataFrame) -> list[Path]:
    """table.md, table.csv, results.json and stages.csv in ``out``."""
    paths = [out / "table.md", out / "table.csv", out / "results.json", out / "stages.csv"]
    paths[0].write_text(text)
    flat = [{"init": init, **{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in row.items()}}
            for init, row in rows.items()]
    pd.DataFrame(flat).to_csv(paths[1], index=False)
    _write_json(paths[2], {"rows": rows, "stages": stages.to_dict(orient="records")})
    stages.to_csv(paths[3], index=False)
    return paths


# ------------------------------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: ``--out``, ``--methods``, ``--quick``, ``--force-stage`` and one option per budget key."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    default_shared = os.environ.get("MODAN_SHARED_DATASETS", str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--shared", default=default_shared, help="shared datasets root (default $MODAN_SHARED_DATASETS "
                                                                "or ../shared/datasets)")
    parser.add_argument("--out", required=True, help="output folder (re-use it to resume)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"subset of {list(METHODS)}")
    parser.add_argument("--quick", action="store_true", help="tiny everything: a smoke test, not numbers")
    parser.add_argument("--seed", type=int, default=0, help="manifest subsampling and split seed (default 0)")
    parser.add_argument("--force-stage", action="append", default=[], metavar="STAGE",
                        help="redo this finished stage (and the stages using it) even if its settings differ")
    for key, value in FULL.items():
        kind = type(value[0]) if isinstance(value, list) else type(value)
        parser.add_argument(f"--{key.replace('_', '-')}", type=kind, nargs="+" if isinstance(value, list) else None,
                            help=f"budget (default {value}; --quick {QUICK[key]})")
    return parser.parse_args(argv)


def budget(args: argparse.Namespace) -> dict[str, Any]:
    """The budget: each key of :data:`FULL` from its option, else from :data:`QUICK` / :data:`FULL`."""
    base = QUICK if args.quick else FULL
    return {key: (getattr(args, key) if getattr(args, key) is not None else base[key]) for key in FULL}


def plan(args: argparse.Namespace, cfg: Mapping[str, Any]) -> list[tuple[str, dict, list[str]]]:
    """(stage, settings, stages it uses) in running order."""
    shared = str(Path(args.shared).resolve())
    manifests = {"shared": shared, "seed": args.seed, **{k: cfg[k] for k in ("pretrain_per_dataset", "busi_images",
                                                                             "jsrt_images")}}
    pre_keys = ("image_size", "epochs", "batch_size")
    stages = [("manifests", manifests, [])]
    stages += [(f"pretrain_{m}", {"configs": METHODS[m][1], **{k: cfg[k] for k in pre_keys}}, ["manifests"])
               for m in args.methods]
    uses = ["manifests", *(f"pretrain_{m}" for m in args.methods)]
    evals = {"busi": ("busi_repeats", "busi_folds", "busi_epochs", "batch_size"),
             "jsrt": ("few_shot", "seg_seeds", "seg_epochs", "seg_samples"),
             "zero_shot": ("zero_shot_images", "bootstrap")}
    for stage, keys in evals.items():
        stages.append((stage, {"methods": list(args.methods), "image_size": cfg["image_size"],
                               **{k: cfg[k] for k in keys}}, uses))
    return stages


def forced_closure(stages: Sequence[tuple[str, dict, list[str]]], forced: Sequence[str]) -> set[str]:
    """The ``--force-stage`` stages and every later stage using one of them; an unknown stage name is an error."""
    names = [s[0] for s in stages]
    unknown = [f for f in forced if f not in names]
    if unknown:
        raise ReproduceError(f"--force-stage {unknown[0]!r}: no such stage; stages: {names}")
    closure = set(forced)
    for name, _, uses in stages:
        if closure.intersection(uses):
            closure.add(name)
    return closure


def stage_work(name: str, out: Path, shared: Path, cfg: Mapping[str, Any],
               args: argparse.Namespace) -> Callable[[Path], None]:
    """The function that runs stage ``name`` in its folder."""
    manifests = out / "manifests"
    encoders = {m: (out / f"pretrain_{m}" / "encoder.pt").resolve() for m in args.methods}
    if name == "manifests":
        return lambda folder: build_manifests(folder, shared, cfg, args.seed)
    if name.startswith("pretrain_"):
        method = name.removeprefix("pretrain_")
        return lambda folder: run_command(pretrain_command(method, (manifests / "pretrain.csv").resolve(),
                                                           folder.resolve(), cfg), PRETRAIN_BUNDLE, folder / "run.log")
    commands = {"busi": (busi_command, "busi.csv"), "jsrt": (jsrt_command, "jsrt.csv"),
                "zero_shot": (zero_shot_command, "jsrt.csv")}
    build, manifest = commands[name]
    return lambda folder: run_command(build((manifests / manifest).resolve(), encoders, folder.resolve(), cfg),
                                      ROOT, folder / "run.log")


def collect(out: Path, methods: Sequence[str], seconds: Mapping[str, float]) -> dict[str, dict]:
    """One table row per init (scratch and each method) from the stage folders' results."""
    rows: dict[str, dict] = {"scratch": {"label": "scratch"}}
    for m in methods:
        rows[m] = {"label": METHODS[m][0], **pretrain_results(out / f"pretrain_{m}"),
                   "pretrain seconds": seconds[f"pretrain_{m}"]}
    for part in (busi_results(out / "busi"), jsrt_results(out / "jsrt"), zero_shot_results(out / "zero_shot")):
        for init, values in part.items():
            if init not in rows:
                raise ReproduceError(f"init {init!r} in the evaluation results is neither scratch nor a method of "
                                     f"--methods {list(methods)}")
            rows[init].update(values)
    return rows


def reproduce(args: argparse.Namespace) -> list[Path]:
    """Run (or resume) every stage, then write the table; returns the written files, table.md first."""
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise ReproduceError(f"--methods: unknown method {unknown[0]!r}; known: {list(METHODS)}")
    shared, out, cfg = Path(args.shared).expanduser(), Path(args.out).expanduser(), budget(args)
    check_shared(shared)
    stages = plan(args, cfg)
    forced = forced_closure(stages, args.force_stage)
    states = {name: stage_state(out / name, settings, name in forced) for name, settings, _ in stages}
    seconds = {}
    for name, settings, _ in stages:
        seconds[name] = run_stage(out / name, settings, states[name], stage_work(name, out, shared, cfg, args))
    table = pd.DataFrame({"stage": list(seconds), "seconds": list(seconds.values()),
                          "status": ["skipped" if states[s] == "done" else "ran" for s in seconds]})
    rows = collect(out, args.methods, seconds)
    text = table_markdown(rows, table_header(cfg, args.methods, args.quick), table)
    return write_outputs(out, rows, text, table)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 1 with ``error: ...`` on bad input, 130 when interrupted."""
    args = parse_args(argv)
    try:
        paths = reproduce(args)
    except (ReproduceError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command to resume (finished stages in {args.out} are kept)",
              file=sys.stderr)
        return 130
    print(paths[0].read_text())
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
