"""Grouped stratified folds, label fractions, inner validation split and the fold file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modan_monai.evaluation import (
    check_fold_classes,
    group_keys,
    inner_validation_split,
    load_or_create_folds,
    make_folds,
    subsample_fraction,
)


def toy_cases(n_cases: int = 30, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Cases with 1-4 rows each, about a third positive, two datasets sharing case ids."""
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(n_cases):
        label = int(case % 3 == 0)
        for _ in range(int(rng.integers(1, 5))):
            rows.append({"dataset": f"d{case % 2}", "case_id": f"c{case // 2}", "label": label})
    df = pd.DataFrame(rows)
    df["row"] = np.arange(len(df))
    return df, df["label"].to_numpy(), group_keys(df)


@pytest.mark.parametrize("n_folds", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 7])
def test_grouped_stratified_folds(n_folds: int, seed: int) -> None:
    df, labels, groups = toy_cases()
    folds = make_folds(labels, groups, n_folds, seed)
    assert sorted(np.unique(folds)) == list(range(n_folds))
    # one case never straddles two folds
    assert (pd.Series(folds).groupby(groups).nunique() == 1).all()
    # case ids repeat across datasets, yet the groups are (dataset, case_id)
    assert len(np.unique(groups)) == 30 and df["case_id"].nunique() == 15
    for k in range(n_folds):
        assert set(labels[folds == k]) == {0, 1}
    np.testing.assert_array_equal(folds, make_folds(labels, groups, n_folds, seed))


def test_repeats_differ() -> None:
    _, labels, groups = toy_cases()
    assert not np.array_equal(make_folds(labels, groups, 5, 0), make_folds(labels, groups, 5, 1))


def test_too_few_cases_of_a_class_explains_stratification() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    groups = np.array(["a", "b", "c", "d", "e", "e"])  # the positives are a single case
    with pytest.raises(ValueError, match=r"cannot stratify 2 folds.*class\(es\) \[1\].*at least 2 cases"):
        make_folds(labels, groups, 2, 0)
    with pytest.raises(ValueError, match=r"repeat 3 fold 0: its training part holds a single class \[0\]"):
        check_fold_classes(np.array([0, 1, 0, 0]), np.array([0, 0, 1, 1]), 2, where="repeat 3 ")


def test_fold_file_saved_reused_and_checked(tmp_path: Path) -> None:
    df, labels, groups = toy_cases()
    path = tmp_path / "folds.csv"
    first = load_or_create_folds(df, labels, path, n_folds=3, repeats=2, seed=5)
    assert path.is_file() and [c for c in first.columns if c.startswith("fold_r")] == ["fold_r0", "fold_r1"]
    np.testing.assert_array_equal(first["fold_r1"], make_folds(labels, groups, 3, 6))
    # the saved file is the authority: edit it and it is what comes back
    saved = pd.read_csv(path)
    saved.loc[:, "fold_r0"] = make_folds(labels, groups, 3, 99)
    saved.to_csv(path, index=False)
    again = load_or_create_folds(df, labels, path, n_folds=3, repeats=3, seed=5)
    np.testing.assert_array_equal(again["fold_r0"], make_folds(labels, groups, 3, 99))
    np.testing.assert_array_equal(again["fold_r2"], make_folds(labels, groups, 3, 7))  # repeat added
    assert "fold_r2" in pd.read_csv(path).columns
    with pytest.raises(ValueError, match="other manifest rows or labels"):
        load_or_create_folds(df, 1 - labels, path, n_folds=3, repeats=3)
    with pytest.raises(ValueError, match="has folds \\[0, 1, 2\\], but 5 folds were requested"):
        load_or_create_folds(df, labels, path, n_folds=5, repeats=3)


@pytest.mark.parametrize("seed", [0, 3])
def test_label_fraction_subsampling(seed: int) -> None:
    _, labels, groups = toy_cases(60)
    train = np.flatnonzero(make_folds(labels, groups, 5, 0) != 0)
    kept = {f: subsample_fraction(train, labels, groups, f, seed) for f in (1, 10, 30, 100)}
    np.testing.assert_array_equal(kept[100], train)
    for small, large in ((1, 10), (10, 30), (30, 100)):
        assert set(kept[small]) <= set(kept[large])  # nested
    for f, rows in kept.items():
        assert set(labels[rows]) == {0, 1}
        whole = pd.Series(groups[train]).isin(set(groups[rows]))
        assert whole.sum() == len(rows)  # whole cases only
    n_cases = len(np.unique(groups[train]))
    assert len(np.unique(groups[kept[30]])) == pytest.approx(0.3 * n_cases, abs=2)
    assert len(np.unique(groups[kept[1]])) == 4  # at least 2 cases of each class
    np.testing.assert_array_equal(kept[10], subsample_fraction(train, labels, groups, 10, seed))
    with pytest.raises(ValueError, match="percentage"):
        subsample_fraction(train, labels, groups, 0, seed)


def test_inner_validation_split_grouped_and_stratified() -> None:
    _, labels, groups = toy_cases(40)
    train = np.flatnonzero(make_folds(labels, groups, 5, 0) != 0)
    inner, val = inner_validation_split(train, labels, groups, 0.2, seed=1)
    assert set(inner) | set(val) == set(train) and not set(inner) & set(val)
    assert not set(groups[inner]) & set(groups[val])
    assert set(labels[val]) == {0, 1} and set(labels[inner]) == {0, 1}
    assert 0.1 < len(np.unique(groups[val])) / len(np.unique(groups[train])) < 0.35
    few = subsample_fraction(train, labels, groups, 1, seed=0)  # 2 cases per class
    inner, val = inner_validation_split(few, labels, groups, 0.2, seed=0)
    assert set(labels[val]) == {0, 1} and set(labels[inner]) == {0, 1}
    with pytest.raises(ValueError, match="at least 2 cases"):
        inner_validation_split(np.array([0, 1]), np.array([0, 1]), np.array(["a", "b"]))
