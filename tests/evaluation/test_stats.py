"""AUC, the paired Wilcoxon signed-rank helper and the summary tables."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from modan_monai.evaluation import auc, repeat_means, summary_markdown, summary_table, wilcoxon_paired


def reference_auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC as the probability that a positive outscores a negative (ties count 1/2), by pairs."""
    pos, neg = p[y == 1], p[y == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_pairwise_definition(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    y[:2] = [0, 1]
    p = rng.random(40) + 0.3 * y
    if ties:
        p = np.round(p, 1)
    np.testing.assert_allclose(auc(y, p), reference_auc(y, p), rtol=1e-12)


def test_auc_single_class_and_bad_scores() -> None:
    with pytest.raises(ValueError, match=r"fold 2: AUC is undefined: the labels hold the single class \[1\]"):
        auc([1, 1, 1], [0.1, 0.2, 0.3], context="fold 2: ")
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        auc([0, 1], [0.1, 0.2, 0.3])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_wilcoxon_exact_for_ten_pairs_in_one_direction(sign: float) -> None:
    b = np.linspace(0.70, 0.80, 10)
    a = b + sign * (0.01 + 0.002 * np.arange(10))  # distinct differences: no ties, exact null distribution
    p = wilcoxon_paired(a, b)
    np.testing.assert_allclose(p["two_sided"], 2 / 1024)
    np.testing.assert_allclose(p["greater" if sign > 0 else "less"], 1 / 1024)
    np.testing.assert_allclose(p["less" if sign > 0 else "greater"], 1.0)


def test_wilcoxon_identical_and_errors() -> None:
    assert wilcoxon_paired([0.5, 0.6], [0.5, 0.6]) == {"two_sided": 1.0, "greater": 1.0, "less": 1.0}
    with pytest.raises(ValueError, match="equally long"):
        wilcoxon_paired([0.1, 0.2], [0.1])


def fake_results(n_repeats: int = 10, n_folds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for init, shift in (("scratch", 0.0), ("modan", 0.05)):
        for r in range(n_repeats):
            for k in range(n_folds):
                rows.append({"init": init, "mode": "finetune", "fraction": 100.0, "repeat": r, "fold": k,
                             "auc": 0.7 + shift + 0.01 * r + rng.normal(0, 0.001)})
    return pd.DataFrame(rows)


def test_summary_table_mean_sd_over_repeat_means() -> None:
    results = fake_results()
    means = repeat_means(results)
    assert len(means) == 20 and (means["n_folds"] == 3).all()
    table = summary_table(results, reference="scratch").set_index("init")
    modan = results[results["init"] == "modan"].groupby("repeat")["auc"].mean()
    np.testing.assert_allclose(table.loc["modan", "mean_auc"], modan.mean())
    np.testing.assert_allclose(table.loc["modan", "sd_auc"], modan.std(ddof=1))
    np.testing.assert_allclose(table.loc["modan", ["p_two_sided", "p_greater", "p_less"]].to_numpy(float),
                               [2 / 1024, 1 / 1024, 1.0])
    assert np.isnan(table.loc["scratch", "p_two_sided"])
    with pytest.raises(ValueError, match="reference init 'imagenet' not in the results"):
        summary_table(results, reference="imagenet")


def test_summary_markdown_labels_both_tests() -> None:
    text = summary_markdown(fake_results(), reference="scratch")
    assert "## finetune: AUC" in text and "| modan | 0.795 ± 0.030 (n=10) |" in text
    assert "two-sided" in text and "one-sided (greater)" in text
    assert "| modan | 0.001953 | 0.0009766 |" in text


@pytest.mark.parametrize(("n_repeats", "cell"), [(1, "| n/a (n = 1) | n/a (n = 1) |"), (2, "| 0.5 | 0.25 |")])
def test_too_few_pairs_give_no_wilcoxon_p(n_repeats: int, cell: str) -> None:
    table = summary_table(fake_results(n_repeats), reference="scratch").set_index("init")
    assert table.loc["modan", "n_pairs"] == n_repeats
    assert np.isnan(table.loc["modan", "p_two_sided"]) == (n_repeats == 1)
    text = summary_markdown(fake_results(n_repeats), reference="scratch")
    assert f"| modan {cell}" in text and "fewer than 6 pairs cannot reach 0.05" in text
