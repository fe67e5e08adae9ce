"""The downstream cross-validation protocol of the paper (Tables 3-5), resumable.

For every initialisation (scratch, ImageNet, a pretrained encoder ...), mode (fine-tune, linear
probe), label fraction, repeat and fold: train a binary classifier on the (subsampled) training
fold with the best epoch picked on an inner validation split, score the test fold and record its
AUC. Each finished fold is appended to ``results.csv`` at once, so a re-run skips what is done.

Every fold is one run of the ``classify`` bundle's ``configs/train.json`` in process
(:func:`~modan_monai.evaluation.training.run_classify_bundle`, with ``configs/linear_probe.json`` for linear
probing): the command-line recipe and the protocol's are the same configuration.

Multi-class and multi-label tasks (``task``, issue 21) run the same protocol: the ``auc`` of a fold is the macro
(mean one-vs-rest) AUC over the classes or labels, with one ``auc_<class>`` column each (and accuracy, balanced
accuracy, kappa for multi-class); the folds are stratified per class (multi-class) or by iterative stratification
(multi-label), grouped by case. With ``test_split`` (the MLVICX Table I protocol on ChestX-ray14's official split)
there are no folds: each repeat trains on a label fraction of the rows outside that split and tests on its rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from modan_monai.data import expand_volume_slices, manifest_to_datalist, read_manifest
from modan_monai.utils import append_complete_lines, atomic_append_text, atomic_write_text, safe_file_name

from .folds import (
    check_fold_classes,
    fold_column,
    group_keys,
    inner_validation_split,
    load_or_create_folds,
    subsample_fraction,
)
from .metrics import multiclass_metrics, multilabel_metrics
from .mrnet import EXAM_AGGREGATIONS, exam_level_auc, select_planes
from .stats import RESULT_KEY_COLUMNS, auc, mean_roc, summary_markdown
from .training import TASKS, check_task, classify_bundle_dir, predict_proba, run_classify_bundle, task_labels

__all__ = [
    "EVALUATION_LEVELS",
    "PROTOCOL_MODES",
    "RESULT_COLUMNS",
    "non_negative_int",
    "parse_init_specs",
    "plot_roc",
    "positive_int",
    "result_columns",
    "run_protocol",
]

#: Training modes: all layers trained, or the encoder frozen (BatchNorm in eval mode) with a linear head.
PROTOCOL_MODES: tuple[str, ...] = ("finetune", "linear_probe")
#: Unit the AUC is computed over: manifest images, or exams (slice probabilities aggregated per case).
EVALUATION_LEVELS: tuple[str, ...] = ("auto", "image", "exam")
#: Columns of ``results.csv``.
RESULT_COLUMNS: tuple[str, ...] = (
    *RESULT_KEY_COLUMNS, "init_spec", "level", "auc", "best_epoch", "best_val_auc", "n_train", "n_val", "n_test",
    "n_train_slices", "seed", "seconds",
)
_PREDICTION_COLUMNS: tuple[str, ...] = (*RESULT_KEY_COLUMNS, "level", "row", "index", "case_id", "label", "score")
#: Further ``results.csv`` columns of a multi-class task (``kappa`` only with ordinal classes).
MULTICLASS_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "kappa")


def result_columns(task: str = "binary", class_names: Sequence[str] = (), ordinal: bool = False) -> tuple[str, ...]:
    """Columns of ``results.csv`` for a task: :data:`RESULT_COLUMNS`, then for multiclass / multilabel
    ``auc_n_classes`` (classes the macro ``auc`` averages), ``auc_<class>`` per class, and for multiclass
    ``accuracy``, ``balanced_accuracy`` (and ``kappa`` when ``ordinal``).

    Args:
        task: one of :data:`~modan_monai.evaluation.training.TASKS`.
        class_names: the classes (labels) of a multiclass (multilabel) task.
        ordinal: multiclass grades: add ``kappa``.

    Returns:
        The column names.

    Raises:
        ValueError: a class name that makes a column name twice (e.g. a class ``n_classes``).
    """
    check_task(task)
    if task == "binary":
        return RESULT_COLUMNS
    columns = (*RESULT_COLUMNS, "auc_n_classes", *(f"auc_{c}" for c in class_names))
    if task == "multiclass":
        columns += MULTICLASS_METRICS if ordinal else MULTICLASS_METRICS[:2]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise ValueError(f"class names {list(class_names)} make the results column(s) {twice} twice; rename the "
                         "class(es).")
    return columns


def _prediction_columns(task: str, class_names: Sequence[str]) -> tuple[str, ...]:
    if task == "binary":
        return _PREDICTION_COLUMNS
    return (*_PREDICTION_COLUMNS[:-1], *(f"label_{c}" for c in class_names), *(f"score_{c}" for c in class_names))


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (batch size, epochs, folds, repeats...).

    Raises:
        argparse.ArgumentTypeError: naming the value; argparse prefixes the option (``argument --batch-size:``).
    """
    value = _int_option(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 0 (``--num-workers``, ``--samples-per-epoch``)."""
    value = _int_option(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer 0 or more, got {text!r}")
    return value


def _int_option(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def parse_init_specs(specs: Sequence[str]) -> dict[str, str]:
    """Parse ``NAME=SPEC`` strings (``SPEC``: ``scratch``, ``imagenet:<path>`` or a checkpoint path).

    A bare ``scratch`` is named ``scratch``; a bare path is named after the file stem.

    Raises:
        ValueError: an empty name/spec or a name given twice.
    """
    inits: dict[str, str] = {}
    for text in specs:
        name, sep, spec = str(text).partition("=")
        if not sep:
            spec = name
            name = "scratch" if spec == "scratch" else Path(spec.split(":", 1)[-1]).stem
        name, spec = name.strip(), spec.strip()
        if not name or not spec:
            raise ValueError(f"init {text!r}: expected NAME=SPEC with SPEC scratch | imagenet:<path> | <checkpoint>.")
        if name in inits:
            raise ValueError(f"init name {name!r} given twice ({inits[name]!r} and {spec!r}).")
        inits[name] = spec
    if not inits:
        raise ValueError("at least one init is needed (e.g. scratch).")
    return inits


def _safe_name(name: str) -> str:
    """A file-name-safe form of an init name (for the per-fold run folders): :func:`~modan_monai.utils.safe_file_name`."""
    return safe_file_name(name, fallback="init")


def _append_csv(frame: pd.DataFrame, path: Path, atomic: bool = True) -> None:
    """Add ``frame``'s rows to a CSV (with the header when the file is new or empty).

    ``atomic``: the whole file is rewritten through a temporary (``results.csv``, read by a resumed run);
    else the rows are appended in place after cutting off a partial last line (``predictions.csv``, large).
    """
    text = frame.to_csv(header=not path.is_file() or path.stat().st_size == 0, index=False, lineterminator="\n")
    (atomic_append_text if atomic else append_complete_lines)(path, text)


def _read_done(
    path: Path, inits: Mapping[str, str], columns: Sequence[str] = RESULT_COLUMNS
) -> tuple[pd.DataFrame, set[tuple]]:
    if not path.is_file():
        return pd.DataFrame(columns=list(columns)), set()
    done = pd.read_csv(path, dtype={"init": str, "mode": str, "init_spec": str})
    missing = [c for c in columns if c not in done.columns]
    if missing:
        raise ValueError(f"results file {path} lacks column(s) {missing}; use a new output folder.")
    for name, spec in inits.items():
        specs = set(done.loc[done["init"] == name, "init_spec"])
        if specs and specs != {spec}:
            raise ValueError(f"results file {path} holds init {name!r} from {sorted(specs)}, now {spec!r}: give the "
                             "new initialisation another name or use a new output folder.")
    keys = {_key(r) for r in done[list(RESULT_KEY_COLUMNS)].itertuples(index=False)}
    return done, keys


def _key(values: Sequence[Any]) -> tuple:
    init, mode, fraction, repeat, fold = values
    return str(init), str(mode), float(fraction), int(repeat), int(fold)


#: Settings that may change between runs sharing an output folder (they add rows, they do not alter finished ones).
_EXTENSIBLE_SETTINGS: tuple[str, ...] = ("inits", "modes", "fractions", "repeats", "reference")


def _check_settings(path: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to resume into a folder whose finished folds were made with other training/evaluation settings."""
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    now = json.loads(json.dumps(settings, default=str))
    changed = sorted(k for k in now if k not in _EXTENSIBLE_SETTINGS and k in saved and saved[k] != now[k])
    if changed:
        detail = "; ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"output folder {path.parent} holds results made with other settings ({detail}); use a new "
                         "output folder or the same settings (inits, modes, fractions and repeats may be added).")


def _fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _draw_mean_roc(ax: Any, label: str, curves: Sequence[tuple[np.ndarray, np.ndarray]], aucs: Sequence[float]) -> None:
    """One init's mean ROC (± sd band) over its folds on ``ax``, labelled with its mean AUC."""
    fpr, tpr, sd = mean_roc(curves)
    line = ax.plot(fpr, tpr, label=f"{label} (AUC {np.mean(aucs):.3f})")[0]
    ax.fill_between(fpr, np.clip(tpr - sd, 0, 1), np.clip(tpr + sd, 0, 1), color=line.get_color(), alpha=0.15)


def _finish_roc_axes(ax: Any, title: str) -> None:
    """The chance diagonal, limits, axis labels and ``title`` of one ROC panel."""
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)


def _plot_class_roc(predictions: pd.DataFrame, path: Path, fraction: float, class_names: Sequence[str]) -> Path:
    """:func:`plot_roc` of a multi-class / multi-label task: one panel per mode and class (``label_<class>``,
    ``score_<class>`` columns; rows without a label for the class, and folds where it has one value, left out)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    subset = predictions[predictions["fraction"].astype(float) == fraction]
    modes = list(dict.fromkeys(subset["mode"]))
    panels = [(mode, name) for mode in modes for name in class_names]
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.9 * nrows))
    FigureCanvasAgg(fig)
    for i, (mode, name) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for init, block in subset[subset["mode"] == mode].groupby("init", sort=False):
            curves, aucs = [], []
            for _, fold in block.groupby(["repeat", "fold"], sort=True):
                known = fold[f"label_{name}"].notna()
                y = fold.loc[known, f"label_{name}"].to_numpy().astype(np.int64)
                if len(np.unique(y)) == 2:
                    curves.append((y, fold.loc[known, f"score_{name}"].to_numpy()))
                    aucs.append(auc(*curves[-1]))
            if curves:
                _draw_mean_roc(ax, init, curves, aucs)
        _finish_roc_axes(ax, f"{mode}: {name}, {fraction:g}% labels")
        if ax.get_legend_handles_labels()[0]:  # a class without a defined AUC in any fold has no curve
            ax.legend(loc="lower right", fontsize="x-small")
    fig.suptitle("one-vs-rest ROC per class (mean ± sd over folds x repeats)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_roc(
    predictions: pd.DataFrame,
    path: str | Path,
    fraction: float | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Mean ROC curve per init (vertical average over repeats and folds), one panel per mode.

    Multi-class and multi-label predictions (``class_names``; ``label_<class>`` and ``score_<class>`` columns): one
    panel per mode and class, its one-vs-rest curves.

    Args:
        predictions: rows of ``predictions.csv`` (``init, mode, fraction, repeat, fold, label, score``).
        path: PNG file.
        fraction: label fraction to plot (default: the largest present).
        class_names: the classes (labels) of a multi-class (multi-label) task; ``None``: binary.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fraction = float(predictions["fraction"].max()) if fraction is None else float(fraction)
    if class_names is not None:
        return _plot_class_roc(predictions, Path(path), fraction, class_names)
    subset = predictions[predictions["fraction"].astype(float) == fraction]
    modes = list(dict.fromkeys(subset["mode"]))
    fig = Figure(figsize=(5.0 * max(1, len(modes)), 4.6))
    FigureCanvasAgg(fig)
    for i, mode in enumerate(modes):
        ax = fig.add_subplot(1, len(modes), i + 1)
        for init, block in subset[subset["mode"] == mode].groupby("init", sort=False):
            curves, aucs = [], []
            for _, fold in block.groupby(["repeat", "fold"], sort=True):
                curves.append((fold["label"].to_numpy(), fold["score"].to_numpy()))
                aucs.append(auc(curves[-1][0], curves[-1][1]))
            _draw_mean_roc(ax, init, curves, aucs)
        _finish_roc_axes(ax, f"{mode}, {fraction:g}% labels (mean ± sd over folds x repeats)")
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _refuse_exam_level(task: str, level: str, manifest: str | Path, has_volumes: bool) -> None:
    raise ValueError(f"task {task!r} is evaluated per image; an exam-level AUC (level {level!r}"
                     + (f", volumes in manifest {manifest}" if has_volumes else "") + ") is for binary tasks: use "
                     "level 'image' (--level image).")


def _split_as_folds(
    df: pd.DataFrame,
    labels: np.ndarray,
    groups: np.ndarray,
    test_split: str,
    repeats: int,
    manifest: str | Path,
    class_names: Sequence[str] | None,
) -> pd.DataFrame:
    """A fold table for a fixed train/test split: fold 0 the rows of ``test_split``, fold 1 the others, every repeat.

    Raises:
        ValueError: no rows on one side, a case (``dataset/case_id``) on both sides (naming them), or a class or label
            that cannot be scored on the test rows or learnt from the training rows.
    """
    is_test = (df["split"].astype(str) == test_split).to_numpy()
    found = sorted(df["split"].astype(str).unique())
    if not is_test.any() or is_test.all():
        side = "no rows in" if not is_test.any() else "only rows of"
        raise ValueError(f"manifest {manifest} has {side} split {test_split!r} (splits: {found}); the test split needs "
                         "its own rows and the training rows the others.")
    shared = sorted(set(groups[is_test]) & set(groups[~is_test]))
    if shared:
        raise ValueError(f"manifest {manifest}: {len(shared)} case(s) have rows in split {test_split!r} and in the "
                         f"training rows, e.g. {shared[:5]}; a case must stay on one side (use a patient-wise split).")
    folds = np.where(is_test, 0, 1).astype(np.int64)
    check_fold_classes(labels, folds, 1, where=f"split {test_split!r} as the test ", class_names=class_names)
    return pd.DataFrame({fold_column(r): folds for r in range(int(repeats))})


def _score_classes(
    task: str,
    names: Sequence[str],
    ordinal: bool,
    test_items: Sequence[Mapping[str, Any]],
    probs: np.ndarray,
    base: Mapping[str, Any],
    where: str,
) -> tuple[float, dict[str, Any], pd.DataFrame]:
    """Macro AUC, further ``results.csv`` columns and ``predictions.csv`` rows of a multi-class / multi-label fold."""
    if task == "multiclass":
        y = np.array([item["label"] for item in test_items], dtype=np.int64)
        metrics = multiclass_metrics(y, probs, names, ordinal=ordinal, context=where)
        result = metrics.auc
        extra: dict[str, Any] = {"accuracy": metrics.accuracy, "balanced_accuracy": metrics.balanced_accuracy}
        if ordinal:
            extra["kappa"] = metrics.kappa
        targets = np.eye(len(names), dtype=np.int64)[y]
        label_text = [names[i] for i in y]
    else:
        targets = np.array([item["label"] for item in test_items], dtype=np.float64).reshape(len(test_items), -1)
        known = ~np.isnan(targets)
        result = multilabel_metrics(np.where(known, targets, 0.0), probs, names, mask=known, context=where)
        extra = {}
        label_text = ["|".join(n for n, v in zip(names, row) if v == 1) for row in targets]
    extra = {**result.as_row(), **extra}
    extra.pop("auc")
    preds = pd.DataFrame({
        **base, "row": [item["row"] for item in test_items], "index": [item.get("index") for item in test_items],
        "case_id": [f"{item['dataset']}/{item['case_id']}" for item in test_items], "label": label_text,
        **{f"label_{n}": targets[:, j] for j, n in enumerate(names)},
        **{f"score_{n}": np.asarray(probs)[:, j] for j, n in enumerate(names)},
    })
    return result.macro, extra, preds


def _check_options(
    inits: Mapping[str, str],
    modes: Sequence[str],
    fractions: Sequence[float],
    *,
    level: str,
    aggregation: str,
    slice_mode: str,
    task: str,
    ordinal: bool,
    splits: Sequence[str] | None,
    test_split: str | None,
    manifest: str | Path,
    bundle: str | Path | None,
    reference: str | None,
) -> tuple[list[float], Path, str]:
    """Refuse bad :func:`run_protocol` options before anything is read or written.

    Returns:
        The fractions as floats, the classify bundle folder and the reference init (default: the first).
    """
    if not inits:
        raise ValueError("at least one init is needed.")
    bad_modes = [m for m in modes if m not in PROTOCOL_MODES]
    if bad_modes or not modes:
        raise ValueError(f"modes must be a non-empty subset of {PROTOCOL_MODES}, got {list(modes)}.")
    if level not in EVALUATION_LEVELS:
        raise ValueError(f"level must be one of {EVALUATION_LEVELS}, got {level!r}.")
    if aggregation not in EXAM_AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {EXAM_AGGREGATIONS}, got {aggregation!r}.")
    if slice_mode not in ("all", "central"):
        raise ValueError(f"slice_mode must be 'all' or 'central', got {slice_mode!r}.")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    if task != "binary" and level == "exam":
        _refuse_exam_level(task, level, manifest, False)
    if ordinal and task != "multiclass":
        raise ValueError(f"ordinal (quadratic-weighted kappa of graded classes) is for task 'multiclass', not "
                         f"{task!r}.")
    if test_split is not None and splits and str(test_split) not in [str(x) for x in splits]:
        raise ValueError(f"test split {test_split!r} is not among the selected splits {list(splits)}.")
    percents = [float(f) for f in fractions]
    if not percents or any(not 0 < f <= 100 for f in percents):
        raise ValueError(f"fractions must be percentages in (0, 100], got {percents}.")
    bundle_dir = classify_bundle_dir(bundle)
    reference = reference if reference is not None else next(iter(inits))
    if reference not in inits:
        raise ValueError(f"reference {reference!r} is not one of the inits {list(inits)}.")
    return percents, bundle_dir, reference


@dataclass(frozen=True, eq=False)
class _Cases:
    """The evaluated manifest rows, labelled and partitioned, with the items (slices) each row expands into.

    Attributes:
        n_rows: manifest rows left after ``splits`` and ``planes``.
        names: the task's class (label) names.
        fold_names: ``names`` for multiclass / multilabel folds; ``None`` for binary ones (messages say 0 / 1).
        labels: per row, its class index (binary, multiclass) or its 1 / 0 / nan label vector (multilabel).
        groups: per row, its case key (folds are grouped by case).
        fold_table: one ``fold_column(r)`` per repeat (``folds.csv``, or fold 0 = the ``test_split`` rows).
        n_folds: folds per repeat (1 with a test split).
        by_position: per row, its items (the slices of a volume, else the row itself).
        n_slices: items over all rows.
        has_volumes: some row is a volume expanded into slices.
        exam_level: the AUC is computed per exam (else per image).
    """

    n_rows: int
    names: list[str]
    fold_names: list[str] | None
    labels: np.ndarray
    groups: np.ndarray
    fold_table: pd.DataFrame
    n_folds: int
    by_position: list[list[dict]]
    n_slices: int
    has_volumes: bool
    exam_level: bool

    @property
    def level(self) -> str:
        """``"exam"`` or ``"image"``: the unit the AUC is computed over."""
        return "exam" if self.exam_level else "image"

    def items(self, positions: np.ndarray) -> list[dict]:
        """The items of the rows at ``positions``."""
        return [item for p in positions for item in self.by_position[int(p)]]

    def count(self, positions: np.ndarray) -> int:
        """Cases (exam level) or rows at ``positions``: ``results.csv``'s ``n_train`` / ``n_val``."""
        return len(np.unique(self.groups[positions])) if self.exam_level else len(positions)


def _read_rows(manifest: str | Path, splits: Sequence[str] | None, planes: Sequence[str] | None) -> pd.DataFrame:
    """The manifest rows in ``splits`` and ``planes`` (index 0..n-1); none left is an error naming the manifest."""
    df = read_manifest(manifest)
    if splits:
        df = df[df["split"].astype(str).isin(list(splits))]
        if df.empty:
            raise ValueError(f"manifest {manifest} has no rows in split(s) {list(splits)}.")
    df = select_planes(df, planes).reset_index(drop=True)
    if df.empty:
        raise ValueError(f"manifest {manifest}: no rows left to evaluate (splits {splits}, planes {planes}).")
    return df


def _expand_rows(datalist: Sequence[dict], slice_mode: str, central_slices: int) -> tuple[list[list[dict]], int, bool]:
    """Each row's items (its slices when a volume), the number of items, and whether some row is a volume."""
    by_position: list[list[dict]] = [[] for _ in datalist]
    expanded = expand_volume_slices(datalist, mode=slice_mode, k=central_slices)
    position_of_row = {int(item["row"]): i for i, item in enumerate(datalist)}
    for item in expanded:
        by_position[position_of_row[int(item["row"])]].append(item)
    return by_position, len(expanded), any("num_slices" in item for item in expanded)


def _load_cases(
    manifest: str | Path,
    out: Path,
    *,
    splits: Sequence[str] | None,
    planes: Sequence[str] | None,
    task: str,
    label_column: str | None,
    positive: Any,
    class_names: Sequence[str] | None,
    label_columns: Sequence[str] | None,
    uncertain_policy: str,
    folds: int,
    repeats: int,
    seed: int,
    test_split: str | None,
    slice_mode: str,
    central_slices: int,
    level: str,
) -> _Cases:
    """Read and label the manifest rows, load or create their folds (``out/folds.csv``) or the test split, and
    expand volumes into slices (see :func:`run_protocol` for the arguments and errors)."""
    df = _read_rows(manifest, splits, planes)
    labelled = task_labels(manifest_to_datalist(df), task, label_column, positive_value=positive,
                           class_names=class_names, label_columns=label_columns, uncertain_policy=uncertain_policy)
    datalist, names = labelled.datalist, list(labelled.class_names)
    multi = task != "binary"
    fold_names = names if multi else None  # binary folds keep their messages (classes 0 / 1)
    labels = np.array([item["label"] for item in datalist], dtype=np.float64 if task == "multilabel" else np.int64)
    groups = group_keys(df)
    if test_split is None:
        fold_table = load_or_create_folds(df, labels, out / "folds.csv", folds, repeats, seed, class_names=fold_names)
        n_folds = folds
    else:
        fold_table = _split_as_folds(df, labels, groups, str(test_split), repeats, manifest, fold_names)
        n_folds = 1
    by_position, n_slices, has_volumes = _expand_rows(datalist, slice_mode, central_slices)
    exam_level = level == "exam" or (level == "auto" and has_volumes)
    if multi and exam_level:
        _refuse_exam_level(task, level, manifest, has_volumes)
    return _Cases(len(df), names, fold_names, labels, groups, fold_table, n_folds, by_position, n_slices, has_volumes,
                  exam_level)


def _settings(
    manifest: str | Path,
    label_column: str | None,
    positive: Any,
    inits: Mapping[str, str],
    cases: _Cases,
    *,
    modes: Sequence[str],
    fractions: Sequence[float],
    repeats: int,
    folds: int,
    seed: int,
    reference: str,
    training: Mapping[str, Any],
    val_fraction: float,
    splits: Sequence[str] | None,
    aggregation: str,
    planes: Sequence[str] | None,
    slice_mode: str,
    central_slices: int,
    task: str,
    label_columns: Sequence[str] | None,
    uncertain_policy: str,
    ordinal: bool,
    test_split: str | None,
) -> dict[str, Any]:
    """The ``settings.json`` of a run (``training``: the bundle overrides ``epochs`` ... ``stem``, in that order)."""
    settings = {
        "manifest": str(Path(manifest).resolve()), "label_column": label_column, "positive": positive,
        "inits": inits, "modes": list(modes), "fractions": fractions, "repeats": repeats, "folds": folds,
        "seed": seed, "reference": reference, **training, "val_fraction": val_fraction,
        "splits": list(splits) if splits else None, "level": cases.level, "aggregation": aggregation,
        "planes": list(planes) if planes else None, "slice_mode": slice_mode, "central_slices": central_slices,
        "rows": cases.n_rows, "slices": cases.n_slices,
    }
    if task != "binary" or test_split is not None:  # binary K-fold settings stay as they were
        settings.update(task=task, class_names=cases.names,
                        label_columns=list(label_columns) if label_columns else None,
                        uncertain_policy=uncertain_policy, ordinal=bool(ordinal), test_split=test_split)
        if test_split is not None:
            settings["folds"] = None
    return settings


def _unit_text(init: str, mode: str, fraction: float, r: int, k: int) -> str:
    """How messages name one (init, mode, fraction, repeat, fold) unit."""
    return f"init {init} mode {mode} fraction {fraction:g}% repeat {r} fold {k}: "


def _score_unit(
    task: str,
    ordinal: bool,
    cases: _Cases,
    aggregation: str,
    test_items: Sequence[Mapping[str, Any]],
    probs: np.ndarray,
    base: Mapping[str, Any],
    where: str,
) -> tuple[float, dict[str, Any], pd.DataFrame, int]:
    """The (macro) AUC of a test fold, its further ``results.csv`` columns, its ``predictions.csv`` rows and its
    ``n_test`` (exams at exam level, else images)."""
    if task != "binary":
        value, extra, preds = _score_classes(task, cases.names, ordinal, test_items, probs, base, where)
        return value, extra, preds, len(test_items)
    y_test = np.array([item["label"] for item in test_items], dtype=np.int64)
    if cases.exam_level:
        exams = np.array([f"{item['dataset']}/{item['case_id']}" for item in test_items])
        value, table = exam_level_auc(exams, y_test, probs, aggregation, context=where)
        preds = pd.DataFrame({**base, "row": None, "index": None, "case_id": table["case_id"],
                              "label": table["label"], "score": table["score"]})
        return value, {}, preds, len(table)
    value = auc(y_test, probs, context=where)
    preds = pd.DataFrame({**base, "row": [item["row"] for item in test_items],
                          "index": [item.get("index") for item in test_items],
                          "case_id": [f"{item['dataset']}/{item['case_id']}" for item in test_items],
                          "label": y_test, "score": probs})
    return value, {}, preds, len(test_items)


def _run_unit(
    init: str,
    mode: str,
    fraction: float,
    r: int,
    k: int,
    *,
    spec: str,
    cases: _Cases,
    out: Path,
    bundle: Path,
    seed: int,
    test_split: str | None,
    val_fraction: float,
    training: Mapping[str, Any],
    aggregation: str,
    device: str | torch.device,
    num_workers: int,
    task: str,
    ordinal: bool,
) -> tuple[dict[str, Any], pd.DataFrame, float]:
    """Train and score one (init, mode, fraction, repeat, fold) unit.

    Returns:
        Its ``results.csv`` row, its ``predictions.csv`` rows and the seconds it took.
    """
    t0 = time.perf_counter()
    where = _unit_text(init, mode, fraction, r, k)
    fold_of_row = cases.fold_table[fold_column(r)].to_numpy()
    unit_seed = int(seed) + (int(r) if test_split is not None else 1000 * int(r) + int(k))
    train_pos = subsample_fraction(np.flatnonzero(fold_of_row != k), cases.labels, cases.groups, fraction, unit_seed,
                                   class_names=cases.fold_names)
    inner_train, inner_val = inner_validation_split(train_pos, cases.labels, cases.groups, val_fraction, unit_seed,
                                                    class_names=cases.fold_names)
    test_pos = np.flatnonzero(fold_of_row == k)
    train_items, val_items, test_items = cases.items(inner_train), cases.items(inner_val), cases.items(test_pos)
    multi = task != "binary"
    run = run_classify_bundle(
        train_items, val_items, out / "runs" / _safe_name(init) / mode / f"fraction{fraction:g}_repeat{r}_fold{k}",
        bundle=bundle, init=spec, linear_probe=mode == "linear_probe", seed=unit_seed, **training,
        val_level=cases.level, aggregation=aggregation, device=device, num_workers=num_workers,
        **(dict(task=task, class_names=cases.names, ordinal=bool(ordinal)) if multi else {}),
    )
    probs = np.asarray(predict_proba(run.network, test_items, run.preprocessing, batch_size=training["batch_size"],
                                     device=run.device, num_workers=num_workers,
                                     **(dict(task=task) if multi else {})))
    base = {"init": init, "mode": mode, "fraction": fraction, "repeat": r, "fold": k, "level": cases.level}
    value, extra, preds, n_test = _score_unit(task, ordinal, cases, aggregation, test_items, probs, base, where)
    seconds = time.perf_counter() - t0
    row = {
        **base, "init_spec": spec, "auc": value, "best_epoch": run.best_epoch, "best_val_auc": run.best_val_auc,
        "n_train": cases.count(inner_train), "n_val": cases.count(inner_val), "n_test": n_test,
        "n_train_slices": len(train_items), "seed": unit_seed, "seconds": round(seconds, 3), **extra,
    }
    return row, preds, seconds


def _log_progress(
    log: logging.Logger, n_done: int, n_todo: int, row: Mapping[str, Any], seconds: float, start: float, multi: bool
) -> None:
    """Log a finished unit (its ``results.csv`` row) with the time elapsed since ``start`` and an estimate left."""
    elapsed = time.perf_counter() - start
    where = _unit_text(row["init"], row["mode"], row["fraction"], row["repeat"], row["fold"])
    val_auc = "none" if row["best_val_auc"] is None else f"{row['best_val_auc']:.4f}"
    log.info("[%d/%d] %s%sAUC %.4f (%s level, best epoch %s, val AUC %s) %.1fs; elapsed %s, ~%s left",
             n_done, n_todo, where, "macro " if multi else "", row["auc"], row["level"], row["best_epoch"], val_auc,
             seconds, _fmt_seconds(elapsed), _fmt_seconds(elapsed / n_done * (n_todo - n_done)))


def _in_units(frame: pd.DataFrame, wanted: set[tuple]) -> list[bool]:
    """Which rows of ``results.csv`` / ``predictions.csv`` belong to the ``wanted`` units (their :func:`_key`)."""
    return [_key(r) in wanted for r in frame[list(RESULT_KEY_COLUMNS)].itertuples(index=False)]


def _class_word(task: str) -> str:
    return "labels" if task == "multilabel" else "classes"


def _write_summary(
    path: Path,
    current: pd.DataFrame,
    reference: str,
    cases: _Cases,
    *,
    manifest: str | Path,
    label_column: str | None,
    task: str,
    columns: Sequence[str],
    repeats: int,
    folds: int,
    test_split: str | None,
    aggregation: str,
    training: Mapping[str, Any],
    val_fraction: float,
) -> None:
    """Write ``summary.md``: :func:`~modan_monai.evaluation.stats.summary_markdown` of the current units' results
    and a closing ``Settings:`` line."""
    multi, names = task != "binary", cases.names
    what = label_column if label_column is not None else f"{len(names)} label columns"
    title = f"Downstream evaluation: {what} ({Path(manifest).name})"
    if multi:
        title += f", {task}: {len(names)} {_class_word(task)}"
    metrics = [c for c in MULTICLASS_METRICS if c in columns]
    summary = summary_markdown(current, reference, title=title, class_names=names if multi else None, metrics=metrics)
    design = (f"{repeats} repeat(s) x {folds} fold(s)" if test_split is None else
              f"{repeats} repeat(s) of training on the rows outside split {test_split!r} and testing on split "
              f"{test_split!r} ({int((cases.fold_table[fold_column(0)] == 0).sum())} rows)")
    summary += (f"\nSettings: {design}, {cases.level}-level "
                + (f"macro AUC (mean one-vs-rest AUC over the {len(names)} {_class_word(task)}: {', '.join(names)})"
                   if multi else "AUC")
                + (f" ({aggregation} of slice probabilities per exam)" if cases.exam_level else "")
                + f", {training['epochs']} epoch(s), batch {training['batch_size']}, Adam lr {training['lr']:g}, "
                f"StepLR({training['step_size']}, {training['gamma']:g}), {training['image_size']} px; best epoch on "
                f"an inner validation split ({val_fraction:g} of the training cases). Full settings: settings.json.\n")
    atomic_write_text(path, summary)


def _write_roc(predictions_path: Path, wanted: set[tuple], path: Path, class_names: Sequence[str] | None) -> None:
    """:func:`plot_roc` of the ``wanted`` units' predictions (a re-run fold's last rows)."""
    predictions = pd.read_csv(predictions_path, dtype={"init": str, "mode": str, "case_id": str})
    predictions = predictions.drop_duplicates(
        subset=[*RESULT_KEY_COLUMNS, "case_id", "row", "index"], keep="last"
    )
    plot_roc(predictions[_in_units(predictions, wanted)], path, class_names=class_names)


def run_protocol(
    manifest: str | Path,
    label_column: str | None,
    inits: Mapping[str, str],
    out_dir: str | Path,
    *,
    positive: Any = None,
    modes: Sequence[str] = PROTOCOL_MODES,
    fractions: Sequence[float] = (100.0,),
    repeats: int = 10,
    folds: int = 5,
    seed: int = 0,
    reference: str | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-4,
    step_size: int = 5,
    gamma: float = 0.1,
    image_size: int = 64,
    stem: str = "3x3",
    val_fraction: float = 0.2,
    splits: Sequence[str] | None = None,
    level: str = "auto",
    aggregation: str = "mean",
    planes: Sequence[str] | None = None,
    slice_mode: str = "all",
    central_slices: int = 1,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    bundle: str | Path | None = None,
    logger: logging.Logger | None = None,
    task: str = "binary",
    class_names: Sequence[str] | None = None,
    label_columns: Sequence[str] | None = None,
    uncertain_policy: str = "error",
    ordinal: bool = False,
    test_split: str | None = None,
) -> pd.DataFrame:
    """Run (or resume) the cross-validation protocol and write its outputs to ``out_dir``.

    Outputs: ``folds.csv`` (the saved partitions, reused), ``results.csv`` (one row per init, mode, fraction,
    repeat, fold), ``predictions.csv`` (test scores per image or exam), ``summary.md`` (Tables 4/5-style mean
    AUC ± sd over repeat means and Wilcoxon p-values vs ``reference``), ``roc.png``, ``settings.json`` and
    ``runs/<init>/<mode>/fraction<f>_repeat<r>_fold<k>/logs`` (each fold's TensorBoard scalars).

    Each fold runs the classify bundle (``bundle``) in process: ``configs/train.json``, plus
    ``configs/linear_probe.json`` in mode ``linear_probe``, with the fold's datalists, ``init``, seed and the
    training settings below as overrides (:func:`~modan_monai.evaluation.training.run_classify_bundle`); the
    test fold is scored with the bundle's ``validate#preprocessing`` and the best epoch's weights.

    Partitions: repeat ``r`` uses a grouped stratified ``folds``-fold partition drawn with seed ``seed + r``.
    Within a training fold, ``fraction`` percent of the cases of each class are kept (nested across fractions),
    then an inner validation split (``val_fraction`` of the cases, grouped, stratified) picks the best epoch,
    whose weights (a copy) score the test fold. The training seed of (repeat, fold) is shared by all inits and
    modes, so the comparisons are paired.

    Volumes (MRNet ``.npy``, 3D NIfTI without ``index``) are expanded into slices (``slice_mode``: ``"all"`` or
    ``"central"`` with ``central_slices``); with ``level="auto"`` the AUC is then computed per exam (``case_id``)
    on the ``aggregation`` of its slice probabilities, else per image. The inner validation AUC that picks the
    best epoch is computed at the same level, with the same aggregation (the bundle's ``val_level``).

    Tasks (``task``): ``binary`` as above. ``multiclass`` (one class per row in ``label_column``) and ``multilabel``
    (``label_columns`` of 1 / 0 / -1 / blank, or ``label_column`` of ``|``-separated findings) read their labels with
    :func:`~modan_monai.evaluation.training.task_labels` and train the bundle with that ``task``; the folds are
    stratified per class, or by iterative stratification of the cases' label vectors (multilabel), grouped by
    case, and every class / label must have at least ``folds`` cases; label fractions keep at least 2 cases of every
    class (with and without every label). ``results.csv``'s ``auc`` is the macro AUC (the mean one-vs-rest AUC over
    the classes with one in the test fold), the Wilcoxon tests run on it, and :func:`result_columns` adds one
    ``auc_<class>`` column per class (and ``accuracy``, ``balanced_accuracy``, ``kappa`` for multiclass);
    ``predictions.csv`` holds ``label_<class>`` and ``score_<class>`` per class; ``summary.md`` adds per-class
    tables and ``roc.png`` one panel per class. Multi-class and multi-label tasks are evaluated per image.

    ``test_split`` (e.g. ``"test"``: ChestX-ray14's official test list, the MLVICX Table I protocol): no folds; each
    repeat ``r`` (seed ``seed + r``) trains on ``fraction`` percent of the rows outside that split (nested
    fractions, at least 2 cases of each class / label kept, inner validation split by case) and tests on the rows
    of that split (``fold`` 0 in the results). A case with rows on both sides is refused.

    Args:
        manifest: manifest CSV.
        label_column: binary or multi-class label column, or the ``|``-separated findings column of a multi-label
            task (``None`` with ``label_columns``).
        inits: ``{name: spec}`` with spec ``scratch`` | ``imagenet:<path>`` | encoder/training checkpoint path.
        out_dir: output folder (created; reused on re-runs).
        positive: value of ``label_column`` mapped to 1 (others 0); default: the column must be 0/1.
        modes: subset of :data:`PROTOCOL_MODES`.
        fractions: label fractions in percent of each training fold.
        repeats: number of repeats ``R``.
        folds: number of folds ``K``.
        seed: base seed.
        reference: init compared against in ``summary.md`` (default: the first init).
        epochs: training epochs.
        batch_size: batch size.
        lr: Adam learning rate.
        step_size: StepLR step (epochs).
        gamma: StepLR factor.
        image_size: side of the resized images.
        stem: encoder stem, ``"3x3"`` or ``"7x7"``.
        val_fraction: share of training cases for the inner validation split.
        splits: manifest splits to use (default: all rows).
        level: ``"auto"``, ``"image"`` or ``"exam"``.
        aggregation: exam score from slice probabilities, one of :data:`~modan_monai.evaluation.EXAM_AGGREGATIONS`.
        planes: MRNet planes to keep (``plane`` column); default all rows.
        slice_mode: ``"all"`` or ``"central"``.
        central_slices: slices kept per volume with ``slice_mode="central"``.
        device: torch device.
        num_workers: data loader workers.
        bundle: the classify bundle folder (default: ``bundles/classify`` of this repository).
        logger: progress logger (default ``modan_monai.evaluation``).
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        class_names: the classes (labels) and their order; ``None``: from the manifest (see
            :func:`~modan_monai.evaluation.training.task_labels`).
        label_columns: the 1 / 0 / -1 / blank columns of a multi-label task (the labels are their names).
        uncertain_policy: what -1 and blank cells of ``label_columns`` become: ``ones``, ``zeros``, ``ignore``
            (left out of the loss and the AUC) or ``error``.
        ordinal: multiclass grades: add the quadratic-weighted kappa.
        test_split: the manifest ``split`` value of the test rows (no folds), or ``None`` for K-fold CV.

    Returns:
        All rows of ``results.csv``.

    Raises:
        ValueError: bad options, a missing or non-binary label column (labels that do not fit ``task``, naming the
            rows), a class or label with fewer cases than folds, a fold with a single class, or an output
            folder made with another manifest/partition.
        FileNotFoundError: no classify bundle at ``bundle``.
    """
    log = logger or logging.getLogger("modan_monai.evaluation")
    inits = dict(inits)
    fractions, bundle, reference = _check_options(
        inits, modes, fractions, level=level, aggregation=aggregation, slice_mode=slice_mode, task=task,
        ordinal=ordinal, splits=splits, test_split=test_split, manifest=manifest, bundle=bundle, reference=reference,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = _load_cases(
        manifest, out, splits=splits, planes=planes, task=task, label_column=label_column, positive=positive,
        class_names=class_names, label_columns=label_columns, uncertain_policy=uncertain_policy, folds=folds,
        repeats=repeats, seed=seed, test_split=test_split, slice_mode=slice_mode, central_slices=central_slices,
        level=level,
    )
    training = dict(epochs=epochs, batch_size=batch_size, lr=lr, step_size=step_size, gamma=gamma,
                    image_size=image_size, stem=stem)
    settings = _settings(
        manifest, label_column, positive, inits, cases, modes=modes, fractions=fractions, repeats=repeats,
        folds=folds, seed=seed, reference=reference, training=training, val_fraction=val_fraction, splits=splits,
        aggregation=aggregation, planes=planes, slice_mode=slice_mode, central_slices=central_slices, task=task,
        label_columns=label_columns, uncertain_policy=uncertain_policy, ordinal=ordinal, test_split=test_split,
    )
    _check_settings(out / "settings.json", settings)
    atomic_write_text(out / "settings.json", json.dumps(settings, indent=2, default=str) + "\n")

    results_path, predictions_path = out / "results.csv", out / "predictions.csv"
    columns = result_columns(task, cases.names, ordinal)
    prediction_columns = _prediction_columns(task, cases.names)
    _, done = _read_done(results_path, inits, columns)
    units = [
        (init, mode, fraction, r, k)
        for r in range(repeats) for k in range(cases.n_folds) for fraction in fractions for mode in modes
        for init in inits
    ]
    todo = [u for u in units if _key(u) not in done]
    log.info("CV protocol: %d rows (%d %s), %d init(s) x %d mode(s) x %d fraction(s) x %d repeat(s) x %d fold(s) = "
             "%d fold runs, %d already done -> %s", cases.n_rows, cases.n_slices,
             "slices" if cases.has_volumes else "images", len(inits), len(modes), len(fractions), repeats,
             cases.n_folds, len(units), len(units) - len(todo), out)
    start = time.perf_counter()
    for n_done, (init, mode, fraction, r, k) in enumerate(todo, start=1):
        row, preds, seconds = _run_unit(
            init, mode, fraction, r, k, spec=inits[init], cases=cases, out=out, bundle=bundle, seed=seed,
            test_split=test_split, val_fraction=val_fraction, training=training, aggregation=aggregation,
            device=device, num_workers=num_workers, task=task, ordinal=ordinal,
        )
        # Predictions first, then the results row: a results row marks a finished fold (resume key).
        _append_csv(preds[list(prediction_columns)], predictions_path, atomic=False)
        _append_csv(pd.DataFrame([row])[list(columns)], results_path)
        _log_progress(log, n_done, len(todo), row, seconds, start, multi=task != "binary")

    results = pd.read_csv(results_path, dtype={"init": str, "mode": str, "init_spec": str})
    wanted = {_key(u) for u in units}
    current = results[_in_units(results, wanted)]
    _write_summary(
        out / "summary.md", current, reference, cases, manifest=manifest, label_column=label_column, task=task,
        columns=columns, repeats=repeats, folds=folds, test_split=test_split, aggregation=aggregation,
        training=training, val_fraction=val_fraction,
    )
    _write_roc(predictions_path, wanted, out / "roc.png", cases.names if task != "binary" else None)
    log.info("wrote %s, %s and %s", results_path, out / "summary.md", out / "roc.png")
    return current.reset_index(drop=True)
