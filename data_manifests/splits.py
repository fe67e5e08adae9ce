"""Assign a seeded, case-grouped random split to a manifest whose dataset has no official split."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["assign_splits"]


def assign_splits(frame: pd.DataFrame, fractions: Mapping[str, float], seed: int = 0) -> pd.DataFrame:
    """Write the ``split`` column from fractions of the cases, all images of a case in one split.

    Cases (``case_id``, else ``path``) are sorted, shuffled with ``numpy.random.default_rng(seed)`` and cut in
    the order of ``fractions``; the counts are rounded down and the remainder goes to the first split. The same
    seed gives the same split on every machine and in any row order.

    Args:
        frame: manifest frame.
        fractions: split name -> fraction of the cases, e.g. ``{"train": 0.6, "val": 0.1, "test": 0.3}``;
            positive and summing to 1.
        seed: shuffling seed.

    Returns:
        A copy of ``frame`` with the ``split`` column replaced.

    Raises:
        ValueError: if the fractions are not positive, do not sum to 1, or leave a split without a case.
    """
    if not fractions or any(f <= 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be positive and sum to 1, got {dict(fractions)}.")
    groups = frame["case_id"] if "case_id" in frame.columns else frame["path"]
    groups = groups.where(groups.notna(), frame["path"]).astype(str)
    cases = np.array(sorted(groups.unique()))
    order = np.random.default_rng(seed).permutation(len(cases))
    counts = {name: int(np.floor(f * len(cases))) for name, f in fractions.items()}
    first = next(iter(fractions))
    counts[first] += len(cases) - sum(counts.values())
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"split(s) {empty} get no case out of {len(cases)} with fractions {dict(fractions)}.")
    assignment: dict[str, str] = {}
    start = 0
    for name, n in counts.items():
        for case in cases[order[start : start + n]]:
            assignment[case] = name
        start += n
    out = frame.copy()
    out["split"] = groups.map(assignment).to_numpy()
    return out
