"""Assign a seeded, case-grouped random split to a manifest whose dataset has no official split.

Builders of layouts without an official split take the options ``split`` (one value for every row, default
``train``) or ``split_fractions`` with ``seed`` (:func:`assign_splits` on the built frame; the same options as
``build_manifest.py --split-fractions`` / ``--seed``), resolved by :func:`apply_split_options`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["apply_split_options", "assign_splits", "parse_fractions"]


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


def parse_fractions(
    value: Mapping[str, float] | Sequence[str] | str, option: str = "split_fractions"
) -> dict[str, float]:
    """Split fractions from a mapping, ``"train=0.6,val=0.1,test=0.3"`` or ``("train=0.6", "val=0.1", ...)``.

    The text forms are what ``build_manifest.py --opt split_fractions=...`` passes (``a,b`` becomes a tuple there).

    Args:
        value: the option value.
        option: option name for messages.

    Returns:
        ``{split: fraction}`` in the given order (not yet checked to sum to 1: :func:`assign_splits` does).

    Raises:
        ValueError: naming the option when an item is not ``name=fraction`` with a number.

    Example:
        >>> parse_fractions("train=0.8,test=0.2")
        {'train': 0.8, 'test': 0.2}
    """
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
        items = []
        for part in parts:
            name, sep, number = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"option {option}: expected name=fraction[,name=fraction...], got {value!r}.")
            items.append((name.strip(), number))
    fractions: dict[str, float] = {}
    for name, number in items:
        try:
            fractions[name] = float(number)
        except (TypeError, ValueError):
            raise ValueError(f"option {option}: fraction of {name!r} is not a number: {number!r}.") from None
    return fractions


def apply_split_options(
    frame: pd.DataFrame,
    split: str | None,
    split_fractions: Mapping[str, float] | Sequence[str] | str | None,
    seed: int,
    what: str,
) -> pd.DataFrame:
    """Write the ``split`` column from a builder's ``split`` or ``split_fractions`` + ``seed`` options.

    Args:
        frame: the built manifest frame.
        split: one split for every row (``None``: ``train`` unless ``split_fractions`` is given).
        split_fractions: fractions of the cases per split (see :func:`parse_fractions`), assigned by
            :func:`assign_splits` with ``seed``: the same seed gives the same split.
        seed: shuffling seed of ``split_fractions``.
        what: builder / root for messages.

    Returns:
        ``frame`` with its ``split`` column set.

    Raises:
        ValueError: when both ``split`` and ``split_fractions`` are given, or the fractions are invalid.
    """
    if split_fractions is None:
        out = frame.copy()
        out["split"] = "train" if split is None else str(split)
        return out
    if split is not None:
        raise ValueError(f"{what}: pass either option split (one value for every row) or split_fractions (a seeded "
                         f"random split), not both; got split={split!r}, split_fractions={split_fractions!r}.")
    try:
        fractions = parse_fractions(split_fractions)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from err
    try:
        return assign_splits(frame, fractions, seed=int(seed))
    except ValueError as err:
        raise ValueError(f"{what}: option split_fractions: {err}") from err
