"""Grouped, stratified cross-validation partitions for the downstream protocol.

A partition assigns every manifest row to one of ``K`` test folds so that all rows of a group
(``dataset`` + ``case_id``: a patient or an exam) land in the same fold and each fold keeps the
class balance (:class:`sklearn.model_selection.StratifiedGroupKFold`). One partition is drawn per
repeat (seed ``seed + repeat``); all partitions are saved to a CSV next to the results and reused
by later runs, so that an interrupted or extended run evaluates exactly the same folds.

Labels come in three shapes (issue 21), and every function here takes each of them:

- binary: ``(N,)`` 0/1 ints (the paper's protocol; unchanged);
- multi-class: ``(N,)`` class indices with ``class_names`` (index ``i`` is ``class_names[i]``), stratified as above;
- multi-label: ``(N, L)`` floats 1 / 0, ``NaN`` where a label is ignored (uncertain under the ``ignore`` policy),
  with ``class_names`` the ``L`` label names. Folds are drawn by iterative stratification (Sechidis et al. 2011,
  ``iterstrat``'s ``MultilabelStratifiedKFold``) over the cases: a case's label vector is the OR of its rows
  (ignored entries count as 0), its fold is given to all its rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from monai.utils import optional_import
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from modan_monai.utils import atomic_path

_ml_stratifiers, _HAS_ITERSTRAT = optional_import("iterstrat.ml_stratifiers")

__all__ = [
    "FOLD_KEY_COLUMNS",
    "check_fold_classes",
    "fold_column",
    "group_keys",
    "inner_validation_split",
    "fold_label_text",
    "load_or_create_folds",
    "make_folds",
    "subsample_fraction",
]

#: Columns of the fold file that identify a manifest row; they must match the manifest on reload.
FOLD_KEY_COLUMNS: tuple[str, ...] = ("row", "dataset", "case_id", "label")


def fold_column(repeat: int) -> str:
    """Name of the fold-file column holding the test fold of every row in ``repeat``."""
    return f"fold_r{int(repeat)}"


def group_keys(df: pd.DataFrame) -> np.ndarray:
    """Group key ``"<dataset>/<case_id>"`` per manifest row (case ids are only unique within a dataset).

    Raises:
        ValueError: if ``dataset`` or ``case_id`` is missing.
    """
    missing = [c for c in ("dataset", "case_id") if c not in df.columns]
    if missing:
        raise ValueError(f"manifest is missing column(s) {missing} needed to group rows into cases.")
    return (df["dataset"].astype(str) + "/" + df["case_id"].astype(str)).to_numpy()


def _is_multilabel(labels: np.ndarray) -> bool:
    return np.asarray(labels).ndim == 2


def _class_indices(labels: np.ndarray, class_names: Sequence[str] | None) -> tuple[int, ...]:
    """The classes of ``(N,)`` labels: ``0..C-1`` for ``C`` given names, else (0, 1), or ``0..max`` beyond 0/1."""
    if class_names is not None:
        return tuple(range(len(class_names)))
    top = int(np.max(labels)) if len(labels) else 1
    return tuple(range(max(2, top + 1)))


def _class_label(cls: int, class_names: Sequence[str] | None) -> int | str:
    """How a class is named in messages: its index (binary, no names), else its name."""
    return int(cls) if class_names is None else str(class_names[int(cls)])


def _class_group_counts(
    labels: np.ndarray, groups: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[int | str, int]:
    """Number of groups containing at least one row of each class (keyed by index, or name when named)."""
    frame = pd.DataFrame({"y": labels, "g": groups}).drop_duplicates()
    return {_class_label(c, class_names): int((frame["y"] == c).sum()) for c in _class_indices(labels, class_names)}


def _label_names(labels: np.ndarray, class_names: Sequence[str] | None) -> list[str]:
    """The ``L`` label names of ``(N, L)`` multi-label targets (``label0``... when not given)."""
    n = np.asarray(labels).shape[1]
    names = [str(c) for c in class_names] if class_names is not None else [f"label{j}" for j in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class_names {names} for multi-label targets with {n} labels.")
    return names


def _case_table(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per group of ``(N, L)`` multi-label targets: ``(names, positive, negative, row_group)``.

    ``positive[g, j]``: some row of group ``g`` has label ``j`` = 1 (the OR of its rows, ignored entries as 0);
    ``negative[g, j]``: some row has it 0 (not ignored); ``row_group[i]``: the group index of row ``i``.
    """
    y = np.asarray(labels, dtype=np.float64)
    names, row_group = np.unique(np.asarray(groups), return_inverse=True)
    positive = np.zeros((len(names), y.shape[1]), dtype=bool)
    negative = np.zeros_like(positive)
    np.logical_or.at(positive, row_group, y == 1)
    np.logical_or.at(negative, row_group, y == 0)
    return names, positive, negative, row_group


def _multilabel_case_counts(labels: np.ndarray, groups: np.ndarray, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{label: (cases with it, cases without it)}``: a case has a label when one of its rows has it (OR)."""
    _, positive, _, _ = _case_table(labels, groups)
    n = len(positive)
    return {name: (int(positive[:, j].sum()), n - int(positive[:, j].sum())) for j, name in enumerate(names)}


def _case_splits(case_labels: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Iterative stratification of cases (``(G, L)`` bool) into ``n_splits`` parts: ``(train, test)`` case indices."""
    x = np.zeros(len(case_labels))
    if case_labels.shape[1] == 1:  # one label: plain stratification (iterstrat wants a multi-label indicator)
        splitter = StratifiedKFold(n_splits=int(n_splits), shuffle=True, random_state=int(seed))
        return list(splitter.split(x, case_labels[:, 0].astype(np.int64)))
    if not _HAS_ITERSTRAT:
        raise ImportError("multi-label folds need the package iterative-stratification (pip install "
                          "iterative-stratification), a dependency of modan_monai.")
    splitter = _ml_stratifiers.MultilabelStratifiedKFold(n_splits=int(n_splits), shuffle=True,
                                                         random_state=int(seed))
    return list(splitter.split(x, case_labels))


def _make_multilabel_folds(
    labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int, class_names: Sequence[str] | None
) -> np.ndarray:
    names = _label_names(labels, class_names)
    counts = _multilabel_case_counts(labels, groups, names)
    short = {name: c for name, c in counts.items() if min(c) < n_folds}
    if short:
        detail = ", ".join(f"{name!r} in {pos} case(s), absent from {neg}" for name, (pos, neg) in short.items())
        raise ValueError(
            f"cannot stratify {n_folds} folds: label(s) {list(short)} are too rare or too common ({detail}; "
            f"{len(np.unique(groups))} cases in all); a stratified grouped partition needs at least {n_folds} cases "
            f"with and {n_folds} without each label so that every test fold can score it. With --folds {n_folds}: "
            "use fewer folds, more data, or leave the label out."
        )
    _, positive, _, row_group = _case_table(labels, groups)
    case_fold = np.full(len(positive), -1, dtype=np.int64)
    for k, (_, test) in enumerate(_case_splits(positive, n_folds, seed)):
        case_fold[test] = k
    return case_fold[row_group]


def make_folds(
    labels: np.ndarray,
    groups: np.ndarray,
    n_folds: int,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Test-fold index per row from a shuffled :class:`~sklearn.model_selection.StratifiedGroupKFold`.

    Multi-label targets (``(N, L)``) are partitioned by iterative stratification of the cases instead
    (``MultilabelStratifiedKFold``; a case's labels are the OR of its rows', ignored entries as 0).

    Args:
        labels: ``(N,)`` 0/1 labels or class indices, or ``(N, L)`` multi-label targets (1 / 0 / ``NaN``).
        groups: ``(N,)`` group keys; rows of a group always share a fold.
        n_folds: number of folds ``K`` (>= 2).
        seed: shuffling seed (one per repeat).
        class_names: the class (or label) names, for multi-class and multi-label targets; they name the classes
            in messages and fix their number (a named class without rows is an error).

    Returns:
        ``(N,)`` int64 array with values in ``0..K-1``.

    Raises:
        ValueError: ``K < 2``, or fewer than ``K`` groups of a class (some test fold would lack it), or a label
            present in (or absent from) fewer than ``K`` cases, naming the classes / labels and their case counts.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if int(n_folds) < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}.")
    if _is_multilabel(labels):
        return _make_multilabel_folds(labels, groups, int(n_folds), int(seed), class_names)
    counts = _class_group_counts(labels, groups, class_names)
    short = {c: n for c, n in counts.items() if n < n_folds}
    if short:
        every = "both classes" if len(counts) == 2 else "every class"
        raise ValueError(
            f"cannot stratify {n_folds} folds: class(es) {list(short) if class_names else sorted(short)} occur in "
            f"only {short} case(s) (cases per class: {counts}); a stratified grouped partition needs at least "
            f"{n_folds} cases of each class so that every test fold contains {every}. Use fewer folds or more data."
        )
    splitter = StratifiedGroupKFold(n_splits=int(n_folds), shuffle=True, random_state=int(seed))
    folds = np.full(len(labels), -1, dtype=np.int64)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[test] = k
    return folds


def check_fold_classes(
    labels: np.ndarray,
    folds: np.ndarray,
    n_folds: int,
    where: str = "",
    class_names: Sequence[str] | None = None,
) -> None:
    """Raise if a test fold or its training complement holds a single class (AUC undefined).

    Multi-class (``class_names`` of more than 2 classes): every class must be in both parts of every fold.
    Multi-label (``(N, L)`` targets): every label must occur (1) and be absent (0) in both parts of every fold.

    Raises:
        ValueError: naming the repeat/fold (``where``), the classes or labels, their counts and the stratification
            problem.
    """
    labels = np.asarray(labels)
    folds = np.asarray(folds)
    if _is_multilabel(labels):
        names = _label_names(labels, class_names)
        for k in range(int(n_folds)):
            for part, mask in (("test", folds == k), ("training", folds != k)):
                y = labels[mask]
                lacking = [f"{name!r} ({'no positive' if not (y[:, j] == 1).any() else 'no negative'} row)"
                           for j, name in enumerate(names) if not ((y[:, j] == 1).any() and (y[:, j] == 0).any())]
                if lacking:
                    raise ValueError(
                        f"{where}fold {k}: its {part} part ({int(mask.sum())} rows) cannot score label(s) "
                        f"{', '.join(lacking)}; the multi-label partition could not spread these labels over every "
                        "fold, usually because they occur in too few cases; use fewer folds."
                    )
        return
    classes = _class_indices(labels, class_names)
    if len(classes) > 2:
        counts = {_class_label(c, class_names): int((labels == c).sum()) for c in classes}
        for k in range(int(n_folds)):
            for part, mask in (("test", folds == k), ("training", folds != k)):
                missing = [_class_label(c, class_names) for c in classes if not (labels[mask] == c).any()]
                if missing:
                    raise ValueError(
                        f"{where}fold {k}: its {part} part ({int(mask.sum())} rows) lacks class(es) {missing} (rows "
                        f"per class overall {counts}). The grouped stratified partition could not place every class in "
                        "every fold, usually because a class has too few cases; use fewer folds."
                    )
        return
    for k in range(int(n_folds)):
        for part, mask in (("test", folds == k), ("training", folds != k)):
            classes = np.unique(labels[mask])
            if len(classes) < 2:
                raise ValueError(
                    f"{where}fold {k}: its {part} part holds a single class {classes.tolist()} "
                    f"({int(mask.sum())} rows; class counts overall {np.bincount(labels, minlength=2).tolist()}). "
                    "The grouped stratified partition could not place both classes in every fold, usually because "
                    "a class has too few cases or its cases are very unequal in size; use fewer folds."
                )


def fold_label_text(labels: np.ndarray) -> np.ndarray:
    """The fold file's ``label`` cell per row: the class index, or for ``(N, L)`` multi-label targets one character
    per label in label order (``1``, ``0``, ``?`` where ignored), e.g. ``01?00``.

    Args:
        labels: ``(N,)`` class indices or ``(N, L)`` multi-label targets.

    Returns:
        ``(N,)`` int64 (class indices) or str array.
    """
    labels = np.asarray(labels)
    if not _is_multilabel(labels):
        return labels.astype(np.int64)
    chars = np.where(labels == 1, "1", np.where(labels == 0, "0", "?"))
    return np.array(["".join(row) for row in chars], dtype=object)


def load_or_create_folds(
    df: pd.DataFrame,
    labels: np.ndarray,
    path: str | Path,
    n_folds: int,
    repeats: int,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Load the saved partitions at ``path``, adding missing repeats, or create and save them.

    The file has one line per manifest row: :data:`FOLD_KEY_COLUMNS` then ``fold_r0 .. fold_r{R-1}``.
    Repeat ``r`` is drawn with seed ``seed + r``. The ``label`` column is :func:`fold_label_text`.

    Args:
        df: manifest frame (from :func:`modan_monai.data.read_manifest`, with ``row``), already filtered to the
            rows being evaluated.
        labels: ``(N,)`` 0/1 labels or class indices, or ``(N, L)`` multi-label targets of those rows.
        path: fold CSV file.
        n_folds: number of folds ``K``.
        repeats: number of repeats ``R``.
        seed: base seed.
        class_names: the class or label names (multi-class, multi-label), see :func:`make_folds`.

    Returns:
        The fold table (rows in the order of ``df``).

    Raises:
        ValueError: the saved file does not match the manifest rows/labels (the manifest or selection changed)
            or was made with another number of folds; or a fold holds a single class.
    """
    path = Path(path)
    labels = np.asarray(labels) if _is_multilabel(labels) else np.asarray(labels, dtype=np.int64)
    groups = group_keys(df)
    current = pd.DataFrame(
        {
            "row": df["row"].to_numpy().astype(np.int64) if "row" in df.columns else np.arange(len(df)),
            "dataset": df["dataset"].astype(str).to_numpy(),
            "case_id": df["case_id"].astype(str).to_numpy(),
            "label": fold_label_text(labels),
        }
    )
    if path.is_file():
        saved = pd.read_csv(path, dtype={"dataset": str, "case_id": str, "label": str})
        missing = [c for c in FOLD_KEY_COLUMNS if c not in saved.columns]
        if missing:
            raise ValueError(f"fold file {path} lacks column(s) {missing}; delete it or choose another output folder.")
        same = len(saved) == len(current) and all(
            (saved[c].astype(str).to_numpy() == current[c].astype(str).to_numpy()).all() for c in FOLD_KEY_COLUMNS
        )
        if not same:
            raise ValueError(
                f"fold file {path} was made for other manifest rows or labels ({len(saved)} saved rows vs "
                f"{len(current)} now); the manifest, label column or row selection changed. Use a new output folder "
                "(or delete the fold file and the results made with it)."
            )
        table = saved
        for column in [c for c in table.columns if c.startswith("fold_r")]:
            found = sorted(int(v) for v in table[column].unique())
            if found != list(range(int(n_folds))):
                raise ValueError(f"fold file {path} column {column} has folds {found}, but {n_folds} folds were "
                                 "requested; use the same --folds or a new output folder.")
    else:
        table = current
    changed = False
    for r in range(int(repeats)):
        column = fold_column(r)
        if column not in table.columns:
            table[column] = make_folds(labels, groups, n_folds, seed + r, class_names)
            changed = True
        check_fold_classes(labels, table[column].to_numpy(), n_folds, where=f"repeat {r} ", class_names=class_names)
    if changed:
        with atomic_path(path) as tmp:  # a later run reads it back: never half-written
            table.to_csv(tmp, index=False)
    return table


def _group_strata(labels: np.ndarray, groups: np.ndarray) -> pd.Series:
    """One class per group for stratified group sampling: the group's majority label (ties count as positive)."""
    frame = pd.DataFrame({"y": labels, "g": groups})
    return (frame.groupby("g", sort=True)["y"].mean() >= 0.5).astype(np.int64)


def _group_majority(labels: np.ndarray, groups: np.ndarray) -> pd.Series:
    """One class per group of multi-class labels: its most frequent class (ties: the highest class index)."""
    counts = pd.crosstab(pd.Series(groups, name="g"), pd.Series(labels, name="y"))
    return pd.Series(counts.columns.to_numpy()[counts.shape[1] - 1 - np.argmax(counts.to_numpy()[:, ::-1], axis=1)],
                     index=counts.index).astype(np.int64)


def _subsample_multilabel(
    indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int, min_groups: int,
    class_names: Sequence[str] | None,
) -> np.ndarray:
    """:func:`subsample_fraction` of multi-label targets: a share of the cases, plus the first cases (in the same
    shuffled order) with and without each label needed to keep ``min_groups`` of each."""
    names = _label_names(labels, class_names)
    cases, positive, negative, _ = _case_table(labels[indices], groups[indices])
    order = np.random.default_rng(int(seed)).permutation(len(cases))
    keep = np.zeros(len(cases), dtype=bool)
    keep[order[: math.ceil(float(fraction) / 100.0 * len(cases))]] = True
    for j, name in enumerate(names):
        for has, what in ((positive[:, j], "with"), (negative[:, j], "without")):
            ranked = order[has[order]]  # the cases with (without) label j, in the shuffled order
            if len(ranked) < min_groups:
                raise ValueError(f"label fraction {fraction:g}%: only {len(ranked)} case(s) of the training part "
                                 f"{what} label {name!r} ({len(cases)} cases); at least {min_groups} are needed to "
                                 "keep it in the inner training and validation parts. Leave the label out or add "
                                 "cases.")
            keep[ranked[:min_groups]] = True  # already kept when the share holds that many: sets stay nested
    return np.sort(indices[np.isin(groups[indices], cases[keep])])


def subsample_fraction(
    indices: Sequence[int] | np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    fraction: float,
    seed: int,
    min_groups_per_class: int = 2,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Keep ``fraction`` percent of the groups of a training fold, per class, reproducibly.

    Hand-written because scikit-learn has no grouped *and* stratified subsampling of a given size:
    groups of each class (majority label) are shuffled with ``seed`` and the first
    ``ceil(fraction / 100 * n)`` kept, at least ``min_groups_per_class``. With the same seed the kept
    sets are nested (1% within 10% within 30% ...).

    Multi-label targets (``(N, L)``): the cases are shuffled with ``seed`` and the first ``ceil(fraction / 100 * n)``
    kept, plus, for every label, the first ``min_groups_per_class`` cases (in the same order) with it and without it
    when the share holds fewer: every label keeps at least that many cases with and without it, and the kept sets
    stay nested.

    Args:
        indices: row indices of the training fold (into ``labels``/``groups``).
        labels: ``(N,)`` 0/1 labels or class indices, or ``(N, L)`` multi-label targets of all rows.
        groups: ``(N,)`` group keys of all rows.
        fraction: percentage in ``(0, 100]``.
        seed: sampling seed.
        min_groups_per_class: lower bound of kept groups per class (2 leaves one of each class for the inner
            training part and one for the inner validation part).
        class_names: the class or label names (multi-class, multi-label), for messages and the number of classes.

    Returns:
        Sorted row indices kept.

    Raises:
        ValueError: ``fraction`` outside ``(0, 100]`` or a class (label) with fewer than ``min_groups_per_class``
            groups (with and without it), naming it and its case count.
    """
    if not 0 < float(fraction) <= 100:
        raise ValueError(f"label fraction must be a percentage in (0, 100], got {fraction}.")
    indices = np.asarray(indices, dtype=np.int64)
    if float(fraction) == 100:
        return np.sort(indices)
    labels = np.asarray(labels)
    if _is_multilabel(labels):
        return _subsample_multilabel(indices, labels, groups, fraction, seed, int(min_groups_per_class), class_names)
    classes = _class_indices(labels, class_names)
    if len(classes) == 2:
        strata = _group_strata(labels[indices], groups[indices])
    else:
        strata = _group_majority(labels[indices], groups[indices])
    rng = np.random.default_rng(int(seed))
    kept: list[str] = []
    for cls in classes:
        names = strata.index[strata.to_numpy() == cls].to_numpy()
        if len(names) < min_groups_per_class:
            what = f"class {_class_label(cls, class_names)!r}" if class_names is not None else f"class {cls}"
            raise ValueError(f"label fraction {fraction}%: {what} has only {len(names)} case(s) in the training "
                             f"fold; at least {min_groups_per_class} are needed.")
        order = names[rng.permutation(len(names))]
        n = max(int(min_groups_per_class), math.ceil(float(fraction) / 100.0 * len(names)))
        kept.extend(order[:n].tolist())
    return np.sort(indices[np.isin(groups[indices], kept)])


def inner_validation_split(
    indices: Sequence[int] | np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    val_fraction: float = 0.2,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into inner training and validation parts, grouped and stratified.

    Uses the first split of a shuffled ``StratifiedGroupKFold(round(1 / val_fraction))`` whose both
    parts hold both classes (so the validation AUC that picks the best epoch is defined); with too few
    cases for that, fewer splits (a larger validation share) are tried down to 2. Multi-class: every class
    on both sides. Multi-label (``(N, L)`` targets): iterative stratification of the cases, every label with
    and without it on both sides.

    Args:
        indices: row indices of the (subsampled) training fold.
        labels: ``(N,)`` 0/1 labels or class indices, or ``(N, L)`` multi-label targets of all rows.
        groups: ``(N,)`` group keys of all rows.
        val_fraction: approximate share of groups held out (``0 < f < 1``).
        seed: shuffling seed.
        class_names: the class or label names (multi-class, multi-label), for messages and the number of classes.

    Returns:
        ``(train_indices, val_indices)``, sorted.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)`` or no split with both classes on both sides
            (a class has a single case), naming the classes or labels and their case counts.
    """
    if not 0 < float(val_fraction) < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels)
    if _is_multilabel(labels):
        return _inner_split_multilabel(indices, labels, groups, float(val_fraction), int(seed), class_names)
    y, g = labels[indices], groups[indices]
    n_classes = len(_class_indices(labels, class_names))
    counts = _class_group_counts(y, g, class_names if n_classes > 2 else None)
    # StratifiedGroupKFold refuses more splits than groups or than rows of the largest class.
    n_splits = min(max(2, round(1.0 / float(val_fraction))), len(np.unique(g)), int(np.bincount(y).max()))
    if min(counts.values()) < 2:
        raise ValueError(f"inner validation split: cases per class in the training part {counts}; each class needs "
                         "at least 2 cases (one for inner training, one for validation).")
    # Few cases (small label fractions) can leave a single class in every 1/n part: fall back to larger parts.
    for n in range(n_splits, 1, -1):
        splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=int(seed))
        with warnings.catch_warnings():  # "least populated class has only k members": expected with few cases
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            splits = list(splitter.split(np.zeros(len(indices)), y, g))
        for train, val in splits:
            if len(np.unique(y[train])) == n_classes and len(np.unique(y[val])) == n_classes:
                return np.sort(indices[train]), np.sort(indices[val])
    every = "both classes" if n_classes == 2 else "every class"
    raise ValueError(f"inner validation split: no grouped split of the training part (cases per class {counts}) "
                     f"has {every} on both sides; add data or lower the number of folds.")


def _inner_split_multilabel(
    indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int,
    class_names: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`inner_validation_split` of multi-label targets, by iterative stratification of the cases."""
    names = _label_names(labels, class_names)
    cases, positive, negative, row_group = _case_table(labels[indices], groups[indices])
    short = {name: (int(positive[:, j].sum()), int(negative[:, j].sum())) for j, name in enumerate(names)
             if min(positive[:, j].sum(), negative[:, j].sum()) < 2}
    if short:
        detail = ", ".join(f"{name!r}: {p} case(s) with it, {n} without" for name, (p, n) in short.items())
        raise ValueError(f"inner validation split: label(s) {list(short)} of the training part ({len(cases)} cases) "
                         f"have fewer than 2 cases with or without them ({detail}); each label needs at least 2 of "
                         "each (one for inner training, one for validation).")
    n_splits = min(max(2, round(1.0 / val_fraction)), len(cases))
    for n in range(n_splits, 1, -1):
        for train, val in _case_splits(positive, n, seed):
            if all(part[rows].any(axis=0).all() for part in (positive, negative) for rows in (train, val)):
                in_val = np.isin(row_group, val)
                return np.sort(indices[~in_val]), np.sort(indices[in_val])
    raise ValueError(f"inner validation split: no grouped split of the training part ({len(cases)} cases) has every "
                     f"label of {names} with and without it on both sides; add data or lower the number of folds.")
