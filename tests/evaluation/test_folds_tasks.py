"""Folds, label fractions and inner validation splits of multi-class and multi-label tasks (issue 21)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modan_monai.evaluation import (
    check_fold_classes,
    fold_label_text,
    group_keys,
    inner_validation_split,
    load_or_create_folds,
    make_folds,
    subsample_fraction,
)

CLASSES = ["benign", "malignant", "normal"]
LABELS = ["Cardiomegaly", "Effusion", "Mass"]


def multiclass_cases(n_cases: int = 30, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Cases of 1-3 rows of one class (a third each), two datasets sharing case ids."""
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(n_cases):
        for _ in range(int(rng.integers(1, 4))):
            rows.append({"dataset": f"d{case % 2}", "case_id": f"c{case // 2}", "label": (case // 2) % 3})
    df = pd.DataFrame(rows)
    df["row"] = np.arange(len(df))
    return df, df["label"].to_numpy(), group_keys(df)


def multilabel_cases(n_cases: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Cases of 1-3 rows; label j positive in every 2nd / 3rd / 5th case; some entries ignored (NaN)."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for case in range(n_cases):
        vector = [float(case % 2 == 0), float(case % 3 == 0), float(case % 5 == 0)]
        for i in range(int(rng.integers(1, 4))):
            row = list(vector)
            if i == 1:  # a second image with an uncertain, ignored label
                row[1] = math.nan
            rows.append({"dataset": "cxr", "case_id": f"p{case}"})
            labels.append(row)
    df = pd.DataFrame(rows)
    df["row"] = np.arange(len(df))
    return df, np.array(labels), group_keys(df)


def case_positives(labels: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Per case, 1 where one of its rows has the label (the OR of its rows, ignored entries as 0)."""
    return pd.DataFrame(np.nan_to_num(labels) == 1).groupby(groups).max()


@pytest.mark.parametrize("n_folds", [2, 3])
@pytest.mark.parametrize("seed", [0, 5])
def test_multiclass_folds_grouped_with_every_class(n_folds: int, seed: int) -> None:
    df, labels, groups = multiclass_cases()
    folds = make_folds(labels, groups, n_folds, seed, CLASSES)
    assert sorted(np.unique(folds)) == list(range(n_folds))
    assert (pd.Series(folds).groupby(groups).nunique() == 1).all()  # no case in two folds
    for k in range(n_folds):
        assert set(labels[folds == k]) == {0, 1, 2} and set(labels[folds != k]) == {0, 1, 2}
    check_fold_classes(labels, folds, n_folds, class_names=CLASSES)
    np.testing.assert_array_equal(folds, make_folds(labels, groups, n_folds, seed, CLASSES))


@pytest.mark.parametrize("n_folds", [2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_multilabel_folds_grouped_and_labels_spread(n_folds: int, seed: int) -> None:
    _, labels, groups = multilabel_cases()
    folds = make_folds(labels, groups, n_folds, seed, LABELS)
    assert sorted(np.unique(folds)) == list(range(n_folds))
    assert (pd.Series(folds).groupby(groups).nunique() == 1).all()  # no case in two folds
    positives = case_positives(labels, groups)
    case_fold = pd.Series(folds, index=groups).groupby(level=0).first().loc[positives.index]
    for j in range(len(LABELS)):
        total = int(positives[j].sum())
        per_fold = positives[j].groupby(case_fold.to_numpy()).sum().reindex(range(n_folds), fill_value=0)
        # iterative stratification: the cases with each label spread evenly over the folds
        assert set(per_fold.tolist()) <= {total // n_folds, -(-total // n_folds)}, (LABELS[j], per_fold.tolist())
    check_fold_classes(labels, folds, n_folds, class_names=LABELS)
    np.testing.assert_array_equal(folds, make_folds(labels, groups, n_folds, seed, LABELS))
    assert not np.array_equal(folds, make_folds(labels, groups, n_folds, seed + 10, LABELS))


def test_fewer_cases_than_folds_names_the_class_or_label() -> None:
    _, labels, groups = multiclass_cases(n_cases=12)  # 4 cases of each class
    with pytest.raises(ValueError, match=r"cannot stratify 5 folds: class\(es\) \['benign', 'malignant', 'normal'\] "
                                         r"occur in only \{'benign': 4, 'malignant': 4, 'normal': 4\} case"):
        make_folds(labels, groups, 5, 0, CLASSES)
    _, ml, ml_groups = multilabel_cases(n_cases=20)  # Mass in cases 0, 5, 10, 15
    with pytest.raises(ValueError, match=r"cannot stratify 5 folds: label\(s\) \['Mass'\] .*'Mass' in 4 case\(s\), "
                                         r"absent from 16.*With --folds 5"):
        make_folds(ml, ml_groups, 5, 0, LABELS)


def test_check_fold_classes_names_missing_classes_and_labels() -> None:
    with pytest.raises(ValueError, match=r"repeat 1 fold 0: its training part \(2 rows\) lacks class\(es\) "
                                         r"\['normal'\] \(rows per class overall \{'benign': 2, 'malignant': 2, 'normal': 1\}\)"):
        check_fold_classes(np.array([0, 1, 2, 0, 1]), np.array([0, 0, 0, 1, 1]), 2, "repeat 1 ", CLASSES)
    labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=float)
    with pytest.raises(ValueError, match=r"fold 0: its test part \(2 rows\) cannot score label\(s\) 'Effusion' "
                                         r"\(no positive row\), 'Mass' \(no negative row\)"):
        check_fold_classes(labels, np.array([0, 1, 1, 0]), 2, class_names=LABELS)


def test_multilabel_fold_file_saved_reused_and_checked(tmp_path: Path) -> None:
    df, labels, groups = multilabel_cases()
    path = tmp_path / "folds.csv"
    first = load_or_create_folds(df, labels, path, n_folds=3, repeats=2, seed=4, class_names=LABELS)
    saved = pd.read_csv(path, dtype={"label": str})
    assert saved["label"].tolist() == fold_label_text(labels).tolist()
    assert set(saved["label"].str.len()) == {3}  # one character per label, "?" where ignored
    assert [("?" in text) for text in saved["label"]] == np.isnan(labels).any(axis=1).tolist()
    assert saved.loc[0, "label"] == "111"  # case p0 has every label
    np.testing.assert_array_equal(first["fold_r1"], make_folds(labels, groups, 3, 5, LABELS))
    again = load_or_create_folds(df, labels, path, n_folds=3, repeats=2, seed=4, class_names=LABELS)
    pd.testing.assert_frame_equal(again.astype(str), first.astype(str))
    ones = np.nan_to_num(labels, nan=1.0)  # uncertain labels read as positive now: another labelling
    with pytest.raises(ValueError, match="other manifest rows or labels"):
        load_or_create_folds(df, ones, path, n_folds=3, repeats=2, class_names=LABELS)


@pytest.mark.parametrize("seed", [0, 3])
def test_multiclass_fractions_keep_two_cases_per_class(seed: int) -> None:
    _, labels, groups = multiclass_cases(60)
    train = np.flatnonzero(make_folds(labels, groups, 3, 0, CLASSES) != 0)
    kept = {f: subsample_fraction(train, labels, groups, f, seed, class_names=CLASSES) for f in (1, 10, 30, 100)}
    for small, large in ((1, 10), (10, 30), (30, 100)):
        assert set(kept[small]) <= set(kept[large])  # nested
    for rows in kept.values():
        assert pd.Series(groups[train]).isin(set(groups[rows])).sum() == len(rows)  # whole cases only
        per_class = pd.Series(labels[rows]).groupby(labels[rows]).size()
        cases = pd.DataFrame({"y": labels[rows], "g": groups[rows]}).drop_duplicates().groupby("y").size()
        assert per_class.index.tolist() == [0, 1, 2] and (cases >= 2).all()
    assert len(np.unique(groups[kept[1]])) == 6  # 1% of 40 cases: the 2-case floor of each class
    with pytest.raises(ValueError, match=r"class 'normal' has only 1 case\(s\) in the training fold; at least 2"):
        subsample_fraction(train[labels[train] != 2].tolist() + [int(np.flatnonzero(labels == 2)[0])], labels,
                           groups, 10, seed, class_names=CLASSES)


@pytest.mark.parametrize("seed", [0, 2])
def test_multilabel_fractions_keep_two_cases_with_and_without_each_label(seed: int) -> None:
    _, labels, groups = multilabel_cases(80)
    train = np.flatnonzero(make_folds(labels, groups, 4, 0, LABELS) != 0)
    kept = {f: subsample_fraction(train, labels, groups, f, seed, class_names=LABELS) for f in (1, 10, 30, 100)}
    np.testing.assert_array_equal(kept[100], train)
    for small, large in ((1, 10), (10, 30), (30, 100)):
        assert set(kept[small]) <= set(kept[large])  # nested
    n_cases = len(np.unique(groups[train]))
    assert len(np.unique(groups[kept[30]])) >= math.ceil(0.3 * n_cases)
    for rows in kept.values():
        assert pd.Series(groups[train]).isin(set(groups[rows])).sum() == len(rows)  # whole cases only
        positives = case_positives(labels[rows], groups[rows])
        assert (positives.sum() >= 2).all() and ((~positives).sum() >= 2).all()
    assert len(np.unique(groups[kept[1]])) < 0.2 * n_cases  # 1%: only the per-label floor
    np.testing.assert_array_equal(kept[10], subsample_fraction(train, labels, groups, 10, seed, class_names=LABELS))
    one_mass = [i for i in train if not (labels[i, 2] == 1 and groups[i] != groups[train][labels[train, 2] == 1][0])]
    with pytest.raises(ValueError, match=r"label fraction 10%: only 1 case\(s\) of the training part with label "
                                         r"'Mass'.*at least 2 are needed"):
        subsample_fraction(one_mass, labels, groups, 10, seed, class_names=LABELS)


def test_inner_validation_split_every_class_and_label_on_both_sides() -> None:
    _, labels, groups = multiclass_cases(45)
    train = np.flatnonzero(make_folds(labels, groups, 3, 0, CLASSES) != 0)
    few = subsample_fraction(train, labels, groups, 1, 0, class_names=CLASSES)  # 2 cases per class
    inner, val = inner_validation_split(few, labels, groups, 0.2, 0, CLASSES)
    assert set(labels[inner]) == set(labels[val]) == {0, 1, 2} and not set(groups[inner]) & set(groups[val])

    _, ml, ml_groups = multilabel_cases(80)
    train = np.flatnonzero(make_folds(ml, ml_groups, 4, 0, LABELS) != 0)
    for fraction in (1, 100):
        rows = subsample_fraction(train, ml, ml_groups, fraction, 1, class_names=LABELS)
        inner, val = inner_validation_split(rows, ml, ml_groups, 0.2, 1, LABELS)
        assert set(inner) | set(val) == set(rows) and not set(ml_groups[inner]) & set(ml_groups[val])
        for part in (inner, val):
            assert ((ml[part] == 1).any(axis=0) & (ml[part] == 0).any(axis=0)).all()
    single = [i for i in train if ml[i, 2] != 1][:20] + [int(np.flatnonzero(ml[:, 2] == 1)[0])]
    with pytest.raises(ValueError, match=r"inner validation split: label\(s\) \['Mass'\].*'Mass': 1 case\(s\) with "
                                         r"it"):
        inner_validation_split(np.array(single), ml, ml_groups, 0.2, 0, LABELS)
