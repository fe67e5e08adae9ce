"""AUC, paired Wilcoxon signed-rank tests and the summary tables of the downstream protocol.

Methods are compared as in the paper (Tables 4/5): per repeat, the mean of the fold AUCs; per
initialisation, the mean ± sd of those repeat means; each initialisation against a reference by the
Wilcoxon signed-rank test over the paired repeat means. The paper states a two-sided test, the
official code ran a one-sided one; both are reported and labelled.

Multi-class and multi-label tasks (issue 21) put their macro AUC in the ``auc`` column, so the tables and tests
above run on it unchanged; :func:`metric_table` and the per-class sections of :func:`summary_markdown` add the
per-class AUCs (``auc_<class>`` columns) and further metrics (accuracy, balanced accuracy, kappa).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "RESULT_KEY_COLUMNS",
    "auc",
    "mean_roc",
    "metric_table",
    "repeat_means",
    "summary_markdown",
    "summary_table",
    "WILCOXON_MIN_PAIRS",
    "wilcoxon_paired",
]

#: Columns identifying one evaluated fold in ``results.csv``.
RESULT_KEY_COLUMNS: tuple[str, ...] = ("init", "mode", "fraction", "repeat", "fold")


def auc(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray, context: str = "") -> float:
    """Area under the ROC curve (:func:`sklearn.metrics.roc_auc_score`) of binary labels.

    Args:
        y_true: ``(N,)`` 0/1 labels.
        y_score: ``(N,)`` scores of the positive class.
        context: prefix of error messages (e.g. ``"repeat 0 fold 1: "``).

    Returns:
        The AUC.

    Raises:
        ValueError: lengths differ, scores are not finite, or ``y_true`` holds a single class (AUC undefined).
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{context}AUC: {len(y)} labels but {len(p)} scores.")
    if not np.isfinite(p).all():
        raise ValueError(f"{context}AUC: {int((~np.isfinite(p)).sum())} score(s) are NaN or infinite.")
    classes = np.unique(y)
    if len(classes) != 2:
        raise ValueError(f"{context}AUC is undefined: the labels hold the single class {classes.tolist()} "
                         f"({len(y)} samples); the evaluated set needs positives and negatives.")
    return float(roc_auc_score(y, p))


def mean_roc(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: int = 101
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertical average of ROC curves on a common false-positive-rate grid.

    Args:
        curves: ``(y_true, y_score)`` pairs, one per fold.
        grid: number of FPR points in ``[0, 1]``.

    Returns:
        ``(fpr, mean_tpr, sd_tpr)``.
    """
    fpr_grid = np.linspace(0.0, 1.0, int(grid))
    tprs = []
    for y, p in curves:
        fpr, tpr, _ = roc_curve(np.asarray(y).astype(np.int64), np.asarray(p, dtype=np.float64))
        interp = np.interp(fpr_grid, fpr, tpr)
        interp[0] = 0.0
        tprs.append(interp)
    stack = np.stack(tprs) if tprs else np.zeros((1, len(fpr_grid)))
    mean = stack.mean(axis=0)
    mean[-1] = 1.0
    return fpr_grid, mean, stack.std(axis=0)


#: Fewest pairs a Wilcoxon p is reported for. With one pair the signed-rank test says only the sign of the
#: difference (scipy: two-sided p = 1 always, one-sided 0.5 or 1), so it is "n/a (n = 1)". From two pairs on the
#: exact p is reported with its n; the smallest two-sided p the exact test can give with n pairs is 2 / 2**n
#: (n = 5: 0.0625), so fewer than 6 pairs cannot reach 0.05 two-sided (the summary says so; with tied
#: differences scipy uses the normal approximation instead).
WILCOXON_MIN_PAIRS = 2


def wilcoxon_paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Wilcoxon signed-rank p-values of paired samples ``a`` vs ``b`` (:func:`scipy.stats.wilcoxon`).

    ``scipy`` uses the exact null distribution for small samples without ties or zero differences
    (10 pairs all in one direction: ``1/1024`` one-sided, ``2/1024`` two-sided) and the normal
    approximation otherwise. Zero differences are dropped (``zero_method="wilcox"``, the classic
    test); if every difference is zero the methods are indistinguishable and every p is ``1.0``.

    Args:
        a: ``(n,)`` values of the method under test (e.g. its repeat mean AUCs).
        b: ``(n,)`` paired values of the reference.

    Returns:
        ``{"two_sided": p, "greater": p (a > b), "less": p (a < b)}``.

    Raises:
        ValueError: lengths differ, fewer than one pair, or non-finite values.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 1:
        raise ValueError(f"wilcoxon_paired needs two equally long non-empty samples, got {x.size} and {y.size}.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("wilcoxon_paired: values must be finite.")
    if np.all(x - y == 0):
        return {"two_sided": 1.0, "greater": 1.0, "less": 1.0}
    return {
        key: float(wilcoxon(x, y, zero_method="wilcox", alternative=alternative).pvalue)
        for key, alternative in (("two_sided", "two-sided"), ("greater", "greater"), ("less", "less"))
    }


def repeat_means(results: pd.DataFrame) -> pd.DataFrame:
    """Mean fold AUC per ``(init, mode, fraction, repeat)`` (the unit the paper compares).

    Returns:
        Frame with columns ``init, mode, fraction, repeat, auc, n_folds``.
    """
    grouped = results.groupby(["init", "mode", "fraction", "repeat"], sort=True)["auc"]
    return grouped.agg(auc="mean", n_folds="count").reset_index()


def summary_table(results: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Mean ± sd of the repeat means per ``(mode, fraction, init)`` and Wilcoxon p-values vs ``reference``.

    Only repeats present for both an init and the reference enter its test (paired by repeat index).

    Args:
        results: rows of ``results.csv``.
        reference: init name to compare against (``None``: no tests).

    Returns:
        Frame with columns ``mode, fraction, init, n_repeats, mean_auc, sd_auc, n_pairs, p_two_sided, p_greater,
        p_less`` (``sd`` with ``ddof=1``; ``n_pairs``: repeats shared with the reference, 0 for the reference
        itself; NaN p for the reference itself and below :data:`WILCOXON_MIN_PAIRS` pairs).

    Raises:
        ValueError: ``reference`` is not one of the inits in ``results``.
    """
    if reference is not None and reference not in set(results["init"]):
        raise ValueError(f"reference init {reference!r} not in the results; inits: {sorted(set(results['init']))}.")
    means = repeat_means(results)
    rows = []
    for (mode, fraction), block in means.groupby(["mode", "fraction"], sort=True):
        ref = block[block["init"] == reference].set_index("repeat")["auc"] if reference is not None else None
        for init, part in block.groupby("init", sort=False):
            values = part.set_index("repeat")["auc"]
            row = {
                "mode": mode, "fraction": fraction, "init": init, "n_repeats": int(len(values)),
                "mean_auc": float(values.mean()),
                "sd_auc": float(values.std(ddof=1)) if len(values) > 1 else float("nan"), "n_pairs": 0,
                "p_two_sided": float("nan"), "p_greater": float("nan"), "p_less": float("nan"),
            }
            if ref is not None and init != reference:
                common = values.index.intersection(ref.index)
                row["n_pairs"] = int(len(common))
                if len(common) >= WILCOXON_MIN_PAIRS:
                    p = wilcoxon_paired(values.loc[common].to_numpy(), ref.loc[common].to_numpy())
                    row.update(p_two_sided=p["two_sided"], p_greater=p["greater"], p_less=p["less"])
            rows.append(row)
    return pd.DataFrame(rows)


def metric_table(results: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean ± sd over repeat means of further result columns (per-class AUCs, accuracy, kappa) per ``(mode,
    fraction, init)``.

    Per repeat, the mean of a column over its folds leaving out empty (``NaN``) cells: a class without an AUC in a
    fold (absent from its test part) does not count there; then mean and sd (``ddof=1``) over the repeat means.

    Args:
        results: rows of ``results.csv``.
        columns: the columns to summarise (e.g. ``auc_<class>`` per class).

    Returns:
        Frame with columns ``mode, fraction, init, n_repeats`` and ``<column>_mean``, ``<column>_sd`` and
        ``<column>_n`` (repeats with a value) per column.

    Raises:
        ValueError: a column is not in ``results``.
    """
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise ValueError(f"results lack column(s) {missing}; columns: {list(results.columns)}.")
    data = results[["init", "mode", "fraction", "repeat", *columns]].copy()
    data[list(columns)] = data[list(columns)].astype(np.float64)
    means = data.groupby(["init", "mode", "fraction", "repeat"], sort=True)[list(columns)].mean().reset_index()
    rows = []
    for (mode, fraction, init), block in means.groupby(["mode", "fraction", "init"], sort=True):
        row: dict[str, object] = {"mode": mode, "fraction": fraction, "init": init, "n_repeats": int(len(block))}
        for column in columns:
            values = block[column].dropna()
            row[f"{column}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{column}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            row[f"{column}_n"] = int(len(values))
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt_fraction(fraction: float) -> str:
    return f"{float(fraction):g}%"


def _metric_cell(row: pd.Series, column: str) -> str:
    if row[f"{column}_n"] == 0:
        return "n/a"
    sd = "n/a" if np.isnan(row[f"{column}_sd"]) else f"{row[f'{column}_sd']:.3f}"
    return f"{row[f'{column}_mean']:.3f} ± {sd}"


def _metric_sections(
    results: pd.DataFrame, inits: Sequence[str], headings: Sequence[tuple[str, str]], what: str, note: str
) -> list[str]:
    """Per mode, a table of ``mean ± sd`` of ``headings`` (``(column, header)``) per init and fraction."""
    table = metric_table(results, [c for c, _ in headings])
    lines: list[str] = []
    for mode, block in table.groupby("mode", sort=False):
        lines += [f"## {mode}: {what}", "", note, "",
                  "| init | fraction | " + " | ".join(h for _, h in headings) + " |",
                  "|---|---|" + "---|" * len(headings)]
        for init in inits:
            for _, r in block[block["init"] == init].sort_values("fraction", key=lambda f: f.astype(float)).iterrows():
                cells = [_metric_cell(r, c) for c, _ in headings]
                lines.append(f"| {init} | {_fmt_fraction(r['fraction'])} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def summary_markdown(
    results: pd.DataFrame,
    reference: str | None = None,
    title: str = "Downstream evaluation",
    class_names: Sequence[str] | None = None,
    metrics: Sequence[str] = (),
) -> str:
    """Markdown tables shaped like the paper's Tables 4/5.

    Per mode: one table of ``mean AUC ± sd`` over repeat means (rows: inits, columns: label fractions) and,
    with a ``reference``, one table of Wilcoxon signed-rank p-values over the paired repeat means, two-sided
    and one-sided ("greater": the init's AUC is higher than the reference's). For multi-class and multi-label
    results (``auc`` holds the macro AUC), ``class_names`` adds per mode a per-class AUC table (``auc_<class>``
    columns) and ``metrics`` a table of those columns (e.g. ``accuracy``, ``balanced_accuracy``, ``kappa``).

    Args:
        results: rows of ``results.csv``.
        reference: init compared against.
        title: heading.
        class_names: the classes (labels) with an ``auc_<class>`` column; ``None``: no per-class table.
        metrics: further columns summarised in their own table.

    Returns:
        The markdown text.
    """
    table = summary_table(results, reference)
    inits = list(dict.fromkeys(results["init"]))
    lines = [f"# {title}", ""]
    folds = results.groupby(["init", "mode", "fraction", "repeat"])["fold"].count()
    lines.append(f"AUC per fold; per repeat the mean over its folds (folds per repeat: {int(folds.max())}); "
                 "cells are mean ± sd (ddof=1) over the repeat means, n = number of repeats.")
    lines.append("")
    for mode, block in table.groupby("mode", sort=False):
        fractions = sorted(block["fraction"].unique(), key=float)
        lines += [f"## {mode}: AUC", ""]
        lines.append("| init | " + " | ".join(_fmt_fraction(f) for f in fractions) + " |")
        lines.append("|---|" + "---|" * len(fractions))
        for init in inits:
            cells = []
            for fraction in fractions:
                hit = block[(block["init"] == init) & (block["fraction"] == fraction)]
                if hit.empty:
                    cells.append("—")
                    continue
                r = hit.iloc[0]
                sd = "n/a" if np.isnan(r["sd_auc"]) else f"{r['sd_auc']:.3f}"
                cells.append(f"{r['mean_auc']:.3f} ± {sd} (n={int(r['n_repeats'])})")
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
        lines.append("")
        if reference is None:
            continue
        lines += [
            f"## {mode}: Wilcoxon signed-rank test vs `{reference}` (paired repeat means)", "",
            "two-sided: H1 AUC differs (the paper's test); one-sided: H1 init AUC > reference AUC (the official "
            "code's test). With n paired repeats the exact test's smallest two-sided p is 2/2^n: fewer than 6 pairs "
            "cannot reach 0.05 (ties make scipy use a normal approximation); "
            f"n/a below {WILCOXON_MIN_PAIRS} pairs.", "",
            "| init | " + " | ".join(f"{_fmt_fraction(f)} two-sided | {_fmt_fraction(f)} one-sided (greater)"
                                     for f in fractions) + " |",
            "|---|" + "---|---|" * len(fractions),
        ]
        for init in inits:
            if init == reference:
                continue
            cells = []
            for fraction in fractions:
                hit = block[(block["init"] == init) & (block["fraction"] == fraction)]
                if hit.empty:
                    cells += ["—", "—"]
                elif np.isnan(hit.iloc[0]["p_two_sided"]):
                    cells += [f"n/a (n = {int(hit.iloc[0]['n_pairs'])})"] * 2
                else:
                    cells += [f"{hit.iloc[0]['p_two_sided']:.4g}", f"{hit.iloc[0]['p_greater']:.4g}"]
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
        lines.append("")
    if class_names:
        headings = [("auc", "macro"), *[(f"auc_{c}", str(c)) for c in class_names]]
        lines += _metric_sections(results, inits, headings, "AUC per class",
                                  "One-vs-rest AUC of each class (label) and their macro mean (the `auc` column "
                                  "above); mean ± sd (ddof=1) over the repeat means; a class absent from a fold's "
                                  "test part has no AUC there (n/a where it never has one).")
    if metrics:
        names = [m.replace("_", " ") for m in metrics]
        lines += _metric_sections(results, inits, list(zip(metrics, names)), ", ".join(names),
                                  "Of the arg-max class on the test folds; mean ± sd (ddof=1) over the repeat means.")
    return "\n".join(lines)
