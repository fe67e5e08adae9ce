"""Train an image classifier (binary, multi-class or multi-label) by running the ``classify`` bundle in process.

There is one classifier recipe: ``bundles/classify/configs/train.json`` (the paper's downstream protocol,
methods.md §1: 10 epochs, batch 32, Adam lr 1e-4, ``StepLR(step_size=5, gamma=0.1)``, cross-entropy on two
logits, a validation AUC after every epoch, the weights of the best epoch kept as a *copy* by the bundle's
``best_weights`` handler, :class:`~modan_monai.handlers.KeepBestWeights`). The command line
(``python -m monai.bundle run``) and the cross-validation protocol (:func:`run_classify_bundle`, a
``monai.bundle.ConfigWorkflow`` per fold with the fold's datalists and settings as overrides) both run it;
linear probing adds the bundle's ``linear_probe.json``.

The label and datalist helpers the bundle's configs call live here too (:func:`task_labels` for the bundle's
``task`` id, :data:`TASKS`, :func:`binary_labels`, :func:`split_datalist`, :func:`image_datalist`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.bundle.utils import ID_SEP_KEY
from monai.data import DataLoader, Dataset
from torch import nn

from modan_monai._excepthook import is_project_raised, project_cause
from modan_monai.transforms import classification_transforms
from modan_monai.utils.interrupt import RunInterrupted

__all__ = [
    "ClassifyRun",
    "LINEAR_PROBE_CONFIG",
    "TASKS",
    "TRAIN_CONFIG",
    "TaskLabels",
    "binary_labels",
    "check_task",
    "check_task_labels",
    "classify_bundle_dir",
    "image_datalist",
    "predict_proba",
    "run_classify_bundle",
    "split_datalist",
    "task_labels",
]

_MAX_SHOWN = 20
#: Messages of the RuntimeError MONAI's config parser wraps an error of a config item in.
_MONAI_WRAPPERS = ("Failed to evaluate", "Failed to instantiate")
#: Config files of the classify bundle the protocol runs (``linear_probe.json`` is added for linear probing).
TRAIN_CONFIG = "train.json"
LINEAR_PROBE_CONFIG = "linear_probe.json"
#: The classify bundle's ``task`` id: one softmax over 2 classes, one softmax over C classes, one sigmoid per label.
TASKS: tuple[str, ...] = ("binary", "multiclass", "multilabel")
_MULTICLASS_HINT = "; for more than two classes set config id 'task' to 'multiclass' (task: multiclass)"


def _where(datalist: Sequence[Mapping[str, Any]]) -> str:
    manifests = sorted({str(d["manifest"]) for d in datalist if d.get("manifest")})
    if not manifests:
        return "datalist"
    return "manifest " + (manifests[0] if len(manifests) == 1 else f"{manifests[0]} (+{len(manifests) - 1} more)")


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _as_number(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _same(value: Any, positive: Any) -> bool:
    a, b = _as_number(value), _as_number(positive)
    if a is not None and b is not None:
        return a == b
    return str(value).strip() == str(positive).strip()


def _seen(values: Sequence[Any]) -> str:
    counts: dict[str, int] = {}
    for v in values:
        counts[repr(v)] = counts.get(repr(v), 0) + 1
    items = sorted(counts.items())
    shown = ", ".join(f"{k} (x{n})" for k, n in items[:_MAX_SHOWN])
    return "{" + shown + (f", +{len(items) - _MAX_SHOWN} more" if len(items) > _MAX_SHOWN else "") + "}"


def binary_labels(
    datalist: Sequence[Mapping[str, Any]],
    label_key: str = "label",
    positive_value: Any = None,
    *,
    target_key: str = "label",
) -> list[dict[str, Any]]:
    """Validate a binary label column and return copies of the rows with ``target_key`` set to 0 / 1.

    Without ``positive_value`` the labels must already be 0/1 (ints, floats, bools or their strings). With it,
    the column may hold at most two distinct values and the rows equal to ``positive_value`` become 1.

    Args:
        datalist: rows from :func:`modan_monai.data.manifest_to_datalist`.
        label_key: the manifest column holding the label.
        positive_value: the value of the positive class, or ``None`` for 0/1 labels.
        target_key: key the integer label is written to.

    Returns:
        New row dicts (the input is not modified) with ``target_key`` an ``int`` in {0, 1}.

    Raises:
        ValueError: naming the column, the manifest and the values seen, when the column is missing, has empty
            cells (the rows are named), is not binary, or ``positive_value`` is not among its values.
    """
    where = _where(datalist)
    if not datalist:
        raise ValueError(f"no rows to read label column {label_key!r} from ({where}).")
    if not any(label_key in d for d in datalist):
        columns = sorted({k for d in datalist for k in d})
        raise ValueError(f"label column {label_key!r} not found in {where}; columns: {columns}.")
    empty = [d.get("row", i) for i, d in enumerate(datalist) if _is_empty(d.get(label_key))]
    if empty:
        shown = empty[:_MAX_SHOWN]
        more = f" (+{len(empty) - _MAX_SHOWN} more)" if len(empty) > _MAX_SHOWN else ""
        raise ValueError(f"label column {label_key!r} in {where} is empty in rows {shown}{more}.")
    values = [d[label_key] for d in datalist]
    distinct = {str(v).strip() if _as_number(v) is None else _as_number(v) for v in values}
    if positive_value is None:
        numbers = [_as_number(v) for v in values]
        if any(n not in (0.0, 1.0) for n in numbers):
            raise ValueError(
                f"label column {label_key!r} in {where} is not binary 0/1: values seen {_seen(values)}; "
                "give positive_value (one of them) to binarise a two-valued column"
                + (_MULTICLASS_HINT if len(distinct) > 2 else "") + "."
            )
        labels = [int(n) for n in numbers]  # type: ignore[arg-type]
    else:
        if len(distinct) > 2:
            raise ValueError(
                f"label column {label_key!r} in {where} is not binary: {len(distinct)} distinct values seen "
                f"{_seen(values)}{_MULTICLASS_HINT}."
            )
        labels = [int(_same(v, positive_value)) for v in values]
        if not any(labels):
            raise ValueError(
                f"positive_value {positive_value!r} not found in label column {label_key!r} of {where}: values "
                f"seen {_seen(values)}."
            )
    return [{**d, target_key: y} for d, y in zip(datalist, labels)]


def check_task(task: str) -> str:
    """``task`` when it is one of :data:`TASKS`.

    Raises:
        ValueError: naming config id ``task``, the value and the choices.
    """
    if task not in TASKS:
        raise ValueError(f"config id 'task' is {task!r}: choose one of {list(TASKS)}.")
    return task


@dataclass
class TaskLabels:
    """Rows labelled for one classification task, and the names of the network's outputs.

    Attributes:
        datalist: copies of the rows with ``label`` set: an ``int`` 0/1 (binary), an ``int`` class index
            (multiclass) or a ``list[float]`` of 1.0 / 0.0 / ``nan`` (multilabel; ``nan`` where the ``ignore``
            policy masks an uncertain label out of the loss and the metrics).
        class_names: one name per output (class or label), in output order.
    """

    datalist: list[dict[str, Any]]
    class_names: list[str]


def _findings(datalist: Sequence[Mapping[str, Any]], column: str, no_finding: str, separator: str) -> list[str]:
    names = {n.strip() for d in datalist if not _is_empty(d.get(column)) for n in str(d[column]).split(separator)}
    return sorted(names - {no_finding, ""})


def task_labels(
    datalist: Sequence[Mapping[str, Any]],
    task: str = "binary",
    label_column: str = "label",
    *,
    positive_value: Any = None,
    class_names: Sequence[Any] | None = None,
    label_columns: Sequence[str] | None = None,
    uncertain_policy: str = "error",
) -> TaskLabels:
    """Read the labels of the classify bundle's ``task`` from manifest rows into ``row["label"]``.

    - ``binary``: exactly :func:`binary_labels` (``label_column``, ``positive_value``); class names
      ``["negative", "positive"]`` unless ``class_names`` (two names) is given.
    - ``multiclass``: :func:`~modan_monai.evaluation.labels.multiclass_labels` of ``label_column``: class indices,
      the classes in the order of ``class_names`` or, without it, the column's sorted values (numerically when all
      are integers).
    - ``multilabel``: with ``label_columns``, one 1 / 0 / -1 / blank column per label
      (:func:`~modan_monai.evaluation.labels.multilabel_from_columns`, -1 and blank following ``uncertain_policy``:
      ``ones``, ``zeros``, ``ignore`` (``nan``: masked) or ``error``); the label names are the columns. Otherwise
      ``label_column`` holds ``|``-separated findings
      (:func:`~modan_monai.evaluation.labels.multilabel_from_findings`, ``No Finding`` = all zero); the labels are
      ``class_names`` or, without it, the sorted distinct findings.

    Args:
        datalist: manifest rows (:func:`modan_monai.data.manifest_to_datalist`).
        task: one of :data:`TASKS`.
        label_column: the label column (binary, multiclass) or the findings column (multilabel).
        positive_value: the positive class of a two-valued binary column (binary only).
        class_names: the declared classes / labels and their order (``None``: from the manifest).
        label_columns: the 0/1/-1/blank columns of a multilabel task.
        uncertain_policy: what -1 and blank cells of ``label_columns`` become (multilabel with ``label_columns``).

    Returns:
        :class:`TaskLabels`.

    Raises:
        ValueError: naming the manifest, the rows, the column and the config id: an unknown ``task``; settings that
            belong to another task (``positive_value``, ``label_columns``, ``uncertain_policy``); a binary column
            with more than two values; an empty cell under ``multiclass``; a value or finding outside the declared
            ``class_names``; a multilabel row whose labels are all uncertain and ignored; ``class_names`` that do not
            match ``label_columns``.

    Example:
        >>> rows = [{"row": 0, "dx": "nv"}, {"row": 1, "dx": "mel"}, {"row": 2, "dx": "bcc"}]
        >>> labelled = task_labels(rows, "multiclass", "dx")
        >>> [d["label"] for d in labelled.datalist], labelled.class_names
        ([2, 1, 0], ['bcc', 'mel', 'nv'])
    """
    from .labels import class_name, multiclass_labels, multilabel_from_columns, multilabel_from_findings

    check_task(task)
    where = _where(datalist)
    if label_columns is not None and task != "multilabel":
        raise ValueError(f"config id 'label_columns' ({list(label_columns)}) is for task 'multilabel', not {task!r} "
                         f"({where}).")
    if uncertain_policy != "error" and (task != "multilabel" or label_columns is None):
        raise ValueError(f"config id 'uncertain_policy' ({uncertain_policy!r}) applies to the 1/0/-1/blank "
                         f"columns of config id 'label_columns' (task 'multilabel'); task {task!r} "
                         + ("reads a findings column without uncertain labels" if task == "multilabel" else "has none")
                         + f" ({where}).")
    if positive_value is not None and task != "binary":
        raise ValueError(f"config id 'positive_value' ({positive_value!r}) is for task 'binary', not {task!r} "
                         f"({where}).")
    if task == "binary":
        rows = binary_labels(datalist, label_column, positive_value)
        names = ["negative", "positive"] if class_names is None else [str(c) for c in class_names]
        if len(names) != 2:
            raise ValueError(f"config id 'class_names' names {len(names)} classes {names}: task 'binary' has two "
                             "(negative, positive); use task 'multiclass' for more.")
        return TaskLabels(rows, names)
    if task == "multiclass":
        indices, names = multiclass_labels(datalist, label_column, class_names)
        return TaskLabels([{**d, "label": int(y)} for d, y in zip(datalist, indices)], names)
    if label_columns is not None:
        columns = [str(c) for c in label_columns]
        if class_names is not None and [class_name(c) for c in class_names] != columns:
            raise ValueError(f"config id 'class_names' {list(class_names)} does not match config id 'label_columns' "
                             f"{columns} (the labels are the columns, in their order); leave class_names null.")
        targets, mask = multilabel_from_columns(datalist, columns, uncertain=uncertain_policy)
    else:
        columns = _findings(datalist, label_column, "No Finding", "|") if class_names is None else \
            [str(c) for c in class_names]
        if not columns and any(label_column in d for d in datalist):
            raise ValueError(f"findings column {label_column!r} in {where} names no finding (only 'No Finding' or "
                             "empty cells): a multilabel task needs at least one label.")
        targets, mask = multilabel_from_findings(datalist, label_column, columns)
    labels = np.where(mask, targets, np.nan).astype(np.float64)
    return TaskLabels([{**d, "label": [float(v) for v in y]} for d, y in zip(datalist, labels)], columns)


def image_datalist(root: str | Path, pattern: str = "**/*") -> list[dict[str, Any]]:
    """Rows ``{"image": path, "filename": path}`` for the files under ``root`` matching ``pattern`` (sorted).

    For inference on a folder of images (DICOM, NIfTI slices need a manifest with ``index``; PNG/JPEG/TIFF).

    Args:
        root: folder to search.
        pattern: glob pattern relative to ``root`` (``**`` recurses).

    Returns:
        One row per file.

    Raises:
        FileNotFoundError: when no file matches (naming the folder and the pattern).
    """
    files = sorted(str(p) for p in Path(root).glob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"no image file matches {pattern!r} under {root}.")
    return [{"image": f, "filename": f} for f in files]


def _check_both_classes(labels: Sequence[int], what: str, where: str, label_key: str) -> None:
    present = sorted(set(int(y) for y in labels))
    if present != [0, 1]:
        raise ValueError(
            f"{what} data ({where}) needs both classes in {label_key!r} for binary classification / AUC, "
            f"has only {present} ({len(labels)} rows)."
        )


def split_datalist(
    datalist: Sequence[Mapping[str, Any]], split: str, label_key: str = "label"
) -> list[dict[str, Any]]:
    """The rows of one ``split``, checked to hold both classes (for :func:`run_classify_bundle`'s data).

    Args:
        datalist: rows with ``split`` and an int 0/1 ``label_key`` (from :func:`binary_labels`).
        split: value of the ``split`` column to keep (``"train"``, ``"val"``, ``"test"``).
        label_key: label key of the rows.

    Returns:
        The rows of that split (the same dicts, in order).

    Raises:
        ValueError: naming the split, the manifest and the splits present when no row has that split, or naming
            the classes present when the split lacks one (training and AUC need both).
    """
    rows = [dict(d) for d in datalist if str(d.get("split")) == split]
    where = _where(datalist)
    if not rows:
        present = sorted({str(d.get("split")) for d in datalist})
        raise ValueError(f"no row of {where} has split {split!r}; splits present: {present}.")
    _check_both_classes([int(d[label_key]) for d in rows], f"split {split!r}", where, label_key)
    return rows


def classify_bundle_dir(bundle: str | Path | None = None) -> Path:
    """The folder of the ``classify`` bundle: ``bundle``, or ``bundles/classify`` of this repository.

    Raises:
        FileNotFoundError: when the folder has no ``configs/train.json`` (names the path looked at).
    """
    root = Path(bundle) if bundle is not None else Path(__file__).resolve().parents[2] / "bundles" / "classify"
    if not (root / "configs" / TRAIN_CONFIG).is_file():
        raise FileNotFoundError(f"classify bundle not found: {root / 'configs' / TRAIN_CONFIG} does not exist; pass "
                                "the bundle folder (run_protocol(bundle=...), run_cv.py --bundle).")
    return root


@dataclass
class ClassifyRun:
    """Outcome of :func:`run_classify_bundle`.

    Attributes:
        network: the bundle's ``network`` with the best validation epoch's weights restored (the final weights
            when no epoch improved), in eval mode.
        preprocessing: the bundle's ``validate#preprocessing`` (the evaluation transform, for the test rows).
        best_epoch: epoch (1-based) of the best validation AUC, ``None`` when no epoch improved (NaN AUCs).
        best_val_auc: that AUC (multiclass / multilabel: the macro AUC over the classes / labels), ``None`` when
            no epoch improved.
        device: the device the network is on.
    """

    network: nn.Module
    preprocessing: Callable
    best_epoch: int | None
    best_val_auc: float | None
    device: torch.device


def _check_labels(data: Sequence[Mapping[str, Any]], what: str, label_key: str) -> None:
    labels = [d.get(label_key) for d in data]
    if any(not isinstance(y, (int, np.integer)) or isinstance(y, bool) or y not in (0, 1) for y in labels):
        raise ValueError(f"{what} data ({_where(data)}) must have int 0/1 labels under {label_key!r} (see "
                         f"binary_labels), values seen {_seen(labels)}.")
    _check_both_classes(labels, what, _where(data), label_key)  # type: ignore[arg-type]


def check_task_labels(
    data: Sequence[Mapping[str, Any]],
    what: str,
    task: str,
    class_names: Sequence[str],
    *,
    training: bool,
    label_key: str = "label",
) -> None:
    """Refuse rows whose labels do not fit ``task`` (the form :func:`task_labels` gives) or cannot train / score.

    Binary: int 0/1 labels with both classes. Multiclass: int class indices in ``[0, C)``; training rows hold every
    class, validation rows at least two (so a one-vs-rest AUC exists). Multilabel: lists of ``L`` values 1 / 0 /
    ``nan`` (masked); training rows hold a positive of every label, validation rows a positive and a negative of at
    least one label.

    Args:
        data: the rows.
        what: the set named in errors (``"output_dir .../fold0: training"``).
        task: one of :data:`TASKS`.
        class_names: the classes / labels (their number is ``C`` / ``L``).
        training: the rows train (every class needed) rather than validate.
        label_key: the label key.

    Raises:
        ValueError: naming the set, its manifest, the values seen and the missing classes / labels.
    """
    check_task(task)
    if task == "binary":
        _check_labels(data, what, label_key)
        return
    names = [str(n) for n in class_names]
    where, labels = _where(data), [d.get(label_key) for d in data]
    if not data:
        raise ValueError(f"{what} data ({where}) has no rows.")
    if task == "multiclass":
        bad = [y for y in labels if not isinstance(y, (int, np.integer)) or isinstance(y, bool)
               or not 0 <= int(y) < len(names)]
        if bad:
            raise ValueError(f"{what} data ({where}) must have int class indices in [0, {len(names)}) under "
                             f"{label_key!r} for classes {names} (see task_labels), values seen {_seen(bad)}.")
        present = {int(y) for y in labels}  # type: ignore[arg-type]
        missing = [names[c] for c in range(len(names)) if c not in present]
        if (training and missing) or len(present) < 2:
            raise ValueError(f"{what} data ({where}) lacks the class(es) {missing} of {names} in its {len(labels)} "
                             "rows: " + ("training needs every class." if training else
                                         "a one-vs-rest AUC needs at least two classes."))
        return
    if any(not isinstance(y, (list, tuple, np.ndarray)) or len(y) != len(names) for y in labels):
        shapes = _seen([len(y) if isinstance(y, (list, tuple, np.ndarray)) else type(y).__name__ for y in labels])
        raise ValueError(f"{what} data ({where}) must have a list of {len(names)} values (one per label of {names}) "
                         f"under {label_key!r} (see task_labels); lengths / types seen {shapes}.")
    y = np.asarray(labels, dtype=np.float64)
    known = ~np.isnan(y)
    if not np.isin(y[known], (0.0, 1.0)).all():
        raise ValueError(f"{what} data ({where}): multilabel values must be 1, 0 or nan (masked), found "
                         f"{sorted(set(y[known].tolist()) - {0.0, 1.0})}.")
    positives = np.where(known, y, 0.0).sum(axis=0)
    negatives = known.sum(axis=0) - positives
    if training:
        missing = [n for n, p in zip(names, positives) if p == 0]
        if missing:
            raise ValueError(f"{what} data ({where}) has no positive of the label(s) {missing} in its {len(labels)} "
                             "rows: training needs a positive of every label.")
    elif not ((positives > 0) & (negatives > 0)).any():
        counts = {n: f"{int(p)} of {int(p + q)}" for n, p, q in zip(names, positives, negatives)}
        raise ValueError(f"{what} data ({where}): no label has both a positive and a negative (positives per label "
                         f"{counts}): the mean AUC is undefined.")


@contextlib.contextmanager
def _quiet_bundle_logger() -> Iterator[None]:
    """Silence ``monai.bundle.workflows`` while a workflow is built: with ``logging_file=False`` it warns on stdout
    once per fold (the protocol must not load the bundle's logging.conf, which would reset the caller's logging)."""
    bundle_logger = logging.getLogger("monai.bundle.workflows")
    level = bundle_logger.level
    bundle_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bundle_logger.setLevel(level)


def _check_override_ids(files: Sequence[str], overrides: Mapping[str, Any]) -> None:
    """Raise when an override names an id the bundle lacks (a typo would otherwise add an unused key).

    An override ``a#b#c`` may add a new key ``c`` to an existing ``a#b``; a top-level id must exist.
    """
    parser = ConfigParser()
    parser.read_config(f=list(files))
    unknown = []
    for key in overrides:
        parent, _, _ = str(key).rpartition(ID_SEP_KEY)
        if (str(key) if not parent else parent) not in parser:
            unknown.append(str(key))
    if unknown:
        raise ValueError(f"override id(s) {unknown} not in the classify bundle config {list(files)}; top-level ids: "
                         f"{sorted(parser.get())}.")


def run_classify_bundle(
    train_data: Sequence[Mapping[str, Any]],
    val_data: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    *,
    bundle: str | Path | None = None,
    init: str = "scratch",
    linear_probe: bool = False,
    seed: int = 0,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-4,
    step_size: int = 5,
    gamma: float = 0.1,
    image_size: int = 64,
    stem: str = "3x3",
    val_level: str = "image",
    aggregation: str = "mean",
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    save_models: bool = False,
    overrides: Mapping[str, Any] | None = None,
    task: str = "binary",
    class_names: Sequence[str] | None = None,
    pos_weight: str | Sequence[float] | None = None,
    ordinal: bool = False,
) -> ClassifyRun:
    """Train on ``train_data``, pick the best epoch on ``val_data``: the classify bundle's ``train.json`` in process.

    One ``monai.bundle.ConfigWorkflow`` of ``configs/train.json`` (+ ``configs/linear_probe.json`` when
    ``linear_probe``) with these bundle ids overridden: ``train_datalist``, ``val_datalist``, ``output_dir``,
    ``seed``, ``init``, ``stem``, ``epochs``, ``batch_size``, ``learning_rate``, ``lr_step_size``, ``lr_gamma``,
    ``image_size``, ``val_level``, ``exam_aggregation``, ``device``, ``num_workers``, ``save_models`` and the
    caching progress bars off, ``task``, ``class_names`` / ``output_classes`` (the given classes, or binary's
    ``["negative", "positive"]``: the bundle then reads no manifest), ``pos_weight`` and ``ordinal``; then
    ``overrides``. The bundle's ``initialize`` seeds everything
    (``set_determinism(seed)``) before the network is built, so a seed gives the same initial head, shuffling
    and augmentation to every init. Its ``best_weights`` handler holds a copy of the best epoch's weights,
    loaded back here. ``output_dir`` is emptied first (a fold interrupted earlier leaves no stale TensorBoard
    file) and receives ``logs/`` (and ``model.pt`` / ``model_final.pt`` with ``save_models``).

    Args:
        train_data: rows (manifest datalist items, volume slices expanded) labelled as :func:`task_labels` does:
            an int 0/1 ``label`` (binary), an int class index (multiclass), a list of 1.0 / 0.0 / ``nan`` per label
            (multilabel); every class present.
        val_data: validation rows (binary: both classes; multiclass: two classes or more; multilabel: a positive and
            a negative of one label or more).
        output_dir: the run's ``output_dir``.
        bundle: the classify bundle folder (default: :func:`classify_bundle_dir`).
        init: ``scratch``, ``imagenet:<file>`` or an encoder / training checkpoint path.
        linear_probe: add ``linear_probe.json`` (encoder frozen, BatchNorm in eval mode).
        seed: the bundle's ``seed``.
        epochs: training epochs (>= 1).
        batch_size: batch size.
        lr: Adam learning rate (``learning_rate``).
        step_size: StepLR step in epochs (``lr_step_size``).
        gamma: StepLR factor (``lr_gamma``).
        image_size: image side.
        stem: encoder stem, ``"3x3"`` or ``"7x7"``.
        val_level: ``"image"`` or ``"exam"``: the validation AUC per item or per exam (``dataset/case_id``).
        aggregation: exam score from slice probabilities with ``val_level="exam"`` (``mean``, ``max``, ``lse``).
        device: training device.
        num_workers: data loader / cache workers.
        save_models: let the bundle write ``model.pt`` (best) and ``model_final.pt``.
        overrides: further bundle ids, applied last (e.g. ``{"dropout": 0.2}``).
        task: the bundle's ``task``, one of :data:`TASKS`.
        class_names: the classes / labels in output order (required for multiclass and multilabel; binary:
            ``["negative", "positive"]`` when not given).
        pos_weight: multilabel only: ``"balanced"`` (negatives / positives per label in ``train_data``) or one
            weight per label for the positives of the BCE loss.
        ordinal: multiclass: the classes are grades; the validation also logs the quadratic-weighted kappa.

    Returns:
        :class:`ClassifyRun`.

    Raises:
        ValueError: ``epochs < 1``, an unknown ``task``, no ``class_names`` for multiclass / multilabel, labels
            that do not fit ``task`` or a set without every class (see :func:`check_task_labels`, naming the set and
            its manifest), or an ``overrides`` id the bundle lacks (naming it and the config files).
        FileNotFoundError: no bundle at ``bundle``.
        Exception: what a config item raised while the bundle ran (e.g. a checkpoint that does not match the
            encoder, a non-finite loss naming the files of its batch): the project's own explanation in the chain
            (:func:`modan_monai._excepthook.project_cause`), unwrapped from MONAI's ``RuntimeError`` and from the
            library error it explains.
        RunInterrupted: Ctrl-C or SIGTERM stopped the training (naming the folder, the epoch and the iteration).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    # named by output_dir: run_protocol's fold folders (".../fraction1_repeat0_fold2") say which fold it is
    check_task(task)
    if class_names is None and task != "binary":
        raise ValueError(f"run_classify_bundle(task={task!r}) needs class_names (the classes / labels in output order, "
                         "TaskLabels.class_names of task_labels).")
    names = ["negative", "positive"] if class_names is None else [str(c) for c in class_names]
    check_task_labels(train_data, f"output_dir {output_dir}: training", task, names, training=True)
    check_task_labels(val_data, f"output_dir {output_dir}: validation", task, names, training=False)
    configs = classify_bundle_dir(bundle) / "configs"
    files = [str(configs / TRAIN_CONFIG)] + ([str(configs / LINEAR_PROBE_CONFIG)] if linear_probe else [])
    out = Path(output_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings: dict[str, Any] = {
        # a tuple is kept by the config parser as one value; a list would be parsed row by row into config
        # items (10 s for 20,000 slice rows)
        "train_datalist": tuple(train_data),
        "val_datalist": tuple(val_data),
        "output_dir": str(out),
        "seed": int(seed),
        "init": init,
        "stem": stem,
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "learning_rate": float(lr),
        "lr_step_size": int(step_size),
        "lr_gamma": float(gamma),
        "image_size": int(image_size),
        "val_level": val_level,
        "exam_aggregation": aggregation,
        "device": torch.device(device),
        "num_workers": int(num_workers),
        "save_models": bool(save_models),
        "train#dataset#progress": False,
        "validate#dataset#progress": False,
        "task": task,
        # tuples: kept by the config parser as one value (a name starting with '$' or '@' is not parsed)
        "class_names": tuple(names),
        "output_classes": tuple(names),
        "pos_weight": tuple(float(w) for w in pos_weight) if isinstance(pos_weight, (list, tuple)) else pos_weight,
        "ordinal": bool(ordinal),
        **dict(overrides or {}),
    }
    _check_override_ids(files, overrides or {})
    with _quiet_bundle_logger():
        workflow = ConfigWorkflow(config_file=files, workflow_type="train", logging_file=False,
                                  bundle_root=str(configs.parent), **settings)
    path = list(sys.path)
    explained: BaseException | None = None
    try:
        workflow.initialize()
        workflow.run()  # ConfigWorkflow.run puts the bundle root on sys.path; restored below
        keep = workflow.parser.get_parsed_content("best_weights")
        network: nn.Module = workflow.parser.get_parsed_content("network")
        preprocessing = workflow.parser.get_parsed_content("validate#preprocessing")
    except RunInterrupted as err:  # Ctrl-C / SIGTERM: this fold's folder is emptied when the same command resumes
        raise RunInterrupted(
            f"interrupted while training {out} at epoch {err.epoch}, iteration {err.iteration}; run the same command "
            "to resume (finished folds are kept, this one starts again)", epoch=err.epoch, iteration=err.iteration,
        ) from None
    except Exception as err:
        # the project's own explanation (naming the row, file or config id): the outermost exception of the chain
        # the project raised, not MONAI's "Failed to evaluate" wrapper nor the library error it explains
        cause = project_cause(err)
        wrapped = isinstance(err, RuntimeError) and str(err).lstrip().startswith(_MONAI_WRAPPERS)
        if cause is err or not (wrapped or is_project_raised(cause)):
            raise
        if hasattr(cause, "add_note"):
            cause.add_note(f"(raised while running the classify bundle {files}: {str(err).splitlines()[0]})")
        explained = cause
    finally:
        sys.path[:] = path
        workflow.finalize()
    if explained is not None:
        # raised outside the except block: the explanation keeps its own chain (the library error it explains)
        raise explained
    restored = keep.restore()
    return ClassifyRun(
        network=network.eval(),
        preprocessing=preprocessing,
        best_epoch=keep.best_epoch if restored else None,
        best_val_auc=keep.best_metric if restored else None,
        device=torch.device(device),
    )


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    data: Sequence[Mapping[str, Any]],
    transform: Callable | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    *,
    image_size: int = 64,
    num_workers: int = 0,
    task: str = "binary",
) -> np.ndarray:
    """Probabilities of ``data`` in its order: binary ``softmax(logits)[:, 1]``, multiclass ``softmax(logits)``,
    multilabel ``sigmoid(logits)``.

    Args:
        model: the classifier (2 logits for binary; put in eval mode here).
        data: rows with ``image`` (labels are not needed).
        transform: eval transform; default ``classification_transforms(image_size, augment=False)``.
        batch_size: inference batch size.
        device: inference device.
        image_size: image side for the default transform.
        num_workers: data loader workers.
        task: one of :data:`TASKS`.

    Returns:
        float64 array: ``(N,)`` positive-class probabilities (binary), ``(N, C)`` class probabilities (multiclass),
        ``(N, L)`` label probabilities (multilabel).

    Raises:
        ValueError: an unknown ``task``.
    """
    check_task(task)
    transform = transform or classification_transforms(image_size, augment=False)
    device = torch.device(device)
    model = model.to(device).eval()
    loader = DataLoader(Dataset(list(data), transform=transform), batch_size=batch_size, num_workers=num_workers)
    activation: Callable[[torch.Tensor], torch.Tensor] = {
        "binary": lambda logits: torch.softmax(logits, dim=1)[:, 1],
        "multiclass": lambda logits: torch.softmax(logits, dim=1),
        "multilabel": torch.sigmoid,
    }[task]
    probs = [activation(model(batch["image"].to(device))).cpu() for batch in loader]
    if not probs:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(probs).double().numpy()
