"""Grouped, stratified cross-validation partitions for the downstream protocol.

A partition assigns every manifest row to one of ``K`` test folds so that all rows of a group
(``dataset`` + ``case_id``: a patient or an exam) land in the same fold and each fold keeps the
class balance (:class:`sklearn.model_selection.StratifiedGroupKFold`). One partition is drawn per
repeat (seed ``seed + repeat``); all partitions are saved to a CSV next to the results and reused
by later runs, so that an interrupted or extended run evaluates exactly the same folds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from modan_monai.utils import atomic_path

__all__ = [
    "FOLD_KEY_COLUMNS",
    "check_fold_classes",
    "fold_column",
    "group_keys",
    "inner_validation_split",
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


def _class_group_counts(labels: np.ndarray, groups: np.ndarray) -> dict[int, int]:
    """Number of groups containing at least one row of each class."""
    frame = pd.DataFrame({"y": labels, "g": groups}).drop_duplicates()
    return {int(c): int((frame["y"] == c).sum()) for c in (0, 1)}


def make_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Test-fold index per row from a shuffled :class:`~sklearn.model_selection.StratifiedGroupKFold`.

    Args:
        labels: ``(N,)`` 0/1 labels.
        groups: ``(N,)`` group keys; rows of a group always share a fold.
        n_folds: number of folds ``K`` (>= 2).
        seed: shuffling seed (one per repeat).

    Returns:
        ``(N,)`` int64 array with values in ``0..K-1``.

    Raises:
        ValueError: ``K < 2``, or fewer than ``K`` groups of a class (some test fold would hold a single class).
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if int(n_folds) < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}.")
    counts = _class_group_counts(labels, groups)
    short = {c: n for c, n in counts.items() if n < n_folds}
    if short:
        raise ValueError(
            f"cannot stratify {n_folds} folds: class(es) {sorted(short)} occur in only {short} case(s) "
            f"(cases per class: {counts}); a stratified grouped partition needs at least {n_folds} cases of each "
            "class so that every test fold contains both classes. Use fewer folds or more data."
        )
    splitter = StratifiedGroupKFold(n_splits=int(n_folds), shuffle=True, random_state=int(seed))
    folds = np.full(len(labels), -1, dtype=np.int64)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[test] = k
    return folds


def check_fold_classes(labels: np.ndarray, folds: np.ndarray, n_folds: int, where: str = "") -> None:
    """Raise if a test fold or its training complement holds a single class (AUC undefined).

    Raises:
        ValueError: naming the repeat/fold (``where``), the class counts and the stratification problem.
    """
    labels = np.asarray(labels)
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


def load_or_create_folds(
    df: pd.DataFrame,
    labels: np.ndarray,
    path: str | Path,
    n_folds: int,
    repeats: int,
    seed: int = 0,
) -> pd.DataFrame:
    """Load the saved partitions at ``path``, adding missing repeats, or create and save them.

    The file has one line per manifest row: :data:`FOLD_KEY_COLUMNS` then ``fold_r0 .. fold_r{R-1}``.
    Repeat ``r`` is drawn with seed ``seed + r``.

    Args:
        df: manifest frame (from :func:`modan_monai.data.read_manifest`, with ``row``), already filtered to the
            rows being evaluated.
        labels: ``(N,)`` 0/1 labels of those rows.
        path: fold CSV file.
        n_folds: number of folds ``K``.
        repeats: number of repeats ``R``.
        seed: base seed.

    Returns:
        The fold table (rows in the order of ``df``).

    Raises:
        ValueError: the saved file does not match the manifest rows/labels (the manifest or selection changed)
            or was made with another number of folds; or a fold holds a single class.
    """
    path = Path(path)
    groups = group_keys(df)
    current = pd.DataFrame(
        {
            "row": df["row"].to_numpy().astype(np.int64) if "row" in df.columns else np.arange(len(df)),
            "dataset": df["dataset"].astype(str).to_numpy(),
            "case_id": df["case_id"].astype(str).to_numpy(),
            "label": np.asarray(labels, dtype=np.int64),
        }
    )
    if path.is_file():
        saved = pd.read_csv(path, dtype={"dataset": str, "case_id": str})
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
            table[column] = make_folds(current["label"].to_numpy(), groups, n_folds, seed + r)
            changed = True
        check_fold_classes(current["label"].to_numpy(), table[column].to_numpy(), n_folds, where=f"repeat {r} ")
    if changed:
        with atomic_path(path) as tmp:  # a later run reads it back: never half-written
            table.to_csv(tmp, index=False)
    return table


def _group_strata(labels: np.ndarray, groups: np.ndarray) -> pd.Series:
    """One class per group for stratified group sampling: the group's majority label (ties count as positive)."""
    frame = pd.DataFrame({"y": labels, "g": groups})
    return (frame.groupby("g", sort=True)["y"].mean() >= 0.5).astype(np.int64)


def subsample_fraction(
    indices: Sequence[int] | np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    fraction: float,
    seed: int,
    min_groups_per_class: int = 2,
) -> np.ndarray:
    """Keep ``fraction`` percent of the groups of a training fold, per class, reproducibly.

    Hand-written because scikit-learn has no grouped *and* stratified subsampling of a given size:
    groups of each class (majority label) are shuffled with ``seed`` and the first
    ``ceil(fraction / 100 * n)`` kept, at least ``min_groups_per_class``. With the same seed the kept
    sets are nested (1% within 10% within 30% ...).

    Args:
        indices: row indices of the training fold (into ``labels``/``groups``).
        labels: ``(N,)`` 0/1 labels of all rows.
        groups: ``(N,)`` group keys of all rows.
        fraction: percentage in ``(0, 100]``.
        seed: sampling seed.
        min_groups_per_class: lower bound of kept groups per class (2 leaves one of each class for the inner
            training part and one for the inner validation part).

    Returns:
        Sorted row indices kept.

    Raises:
        ValueError: ``fraction`` outside ``(0, 100]`` or a class with fewer than ``min_groups_per_class`` groups.
    """
    if not 0 < float(fraction) <= 100:
        raise ValueError(f"label fraction must be a percentage in (0, 100], got {fraction}.")
    indices = np.asarray(indices, dtype=np.int64)
    if float(fraction) == 100:
        return np.sort(indices)
    strata = _group_strata(labels[indices], groups[indices])
    rng = np.random.default_rng(int(seed))
    kept: list[str] = []
    for cls in (0, 1):
        names = strata.index[strata.to_numpy() == cls].to_numpy()
        if len(names) < min_groups_per_class:
            raise ValueError(f"label fraction {fraction}%: class {cls} has only {len(names)} case(s) in the training "
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
) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into inner training and validation parts, grouped and stratified.

    Uses the first split of a shuffled ``StratifiedGroupKFold(round(1 / val_fraction))`` whose both
    parts hold both classes (so the validation AUC that picks the best epoch is defined); with too few
    cases for that, fewer splits (a larger validation share) are tried down to 2.

    Args:
        indices: row indices of the (subsampled) training fold.
        labels: ``(N,)`` 0/1 labels of all rows.
        groups: ``(N,)`` group keys of all rows.
        val_fraction: approximate share of groups held out (``0 < f < 1``).
        seed: shuffling seed.

    Returns:
        ``(train_indices, val_indices)``, sorted.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)`` or no split with both classes on both sides
            (a class has a single case).
    """
    if not 0 < float(val_fraction) < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    indices = np.asarray(indices, dtype=np.int64)
    y, g = labels[indices], groups[indices]
    counts = _class_group_counts(y, g)
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
            if len(np.unique(y[train])) == 2 and len(np.unique(y[val])) == 2:
                return np.sort(indices[train]), np.sort(indices[val])
    raise ValueError(f"inner validation split: no grouped split of the training part (cases per class {counts}) "
                     "has both classes on both sides; add data or lower the number of folds.")
