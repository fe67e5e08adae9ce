"""Multi-class and multi-label targets from manifest rows, with a policy for uncertain labels.

The building blocks of multi-class and multi-label classification (issue 21): they read the rows of
:func:`modan_monai.data.manifest_to_datalist` (each carries its manifest and ``row``) and return numpy targets. Bad
input is refused with a ``ValueError`` naming the manifest, the rows, the column and the value; nothing is dropped.

- :func:`multiclass_labels`: one column -> class indices ``(N,)``; the class names and their order come from a given
  list or from the column's distinct values (numerically sorted when all are integers, so grades 0-4 keep their
  order).
- :func:`multilabel_from_columns`: several 1 / 0 / -1 / blank columns (CheXpert's observations, ChestX-ray14's 0/1
  finding columns) -> ``(N, L)`` targets and an ``(N, L)`` mask. -1 (uncertain) and blank (not mentioned) follow a
  policy: ``ones`` (positive), ``zeros`` (negative), ``ignore`` (masked out of the loss and the metrics) or ``error``
  (the default: refused, naming the row).
- :func:`multilabel_from_findings`: one ``|``-separated findings column with a declared label list (ChestX-ray14's
  ``Finding Labels``; ``No Finding`` is all zero) -> ``(N, L)`` targets and an all-true mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .training import _as_number, _is_empty, _where

__all__ = [
    "UNCERTAIN_POLICIES",
    "class_name",
    "multiclass_labels",
    "multilabel_from_columns",
    "multilabel_from_findings",
]

#: what an uncertain (-1) or blank label cell becomes: positive, negative, masked out, or an error naming the row.
UNCERTAIN_POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore", "error")
_SHOWN = 20


def _rows(rows: Sequence[Any]) -> str:
    more = f" (+{len(rows) - _SHOWN} more)" if len(rows) > _SHOWN else ""
    return f"{list(rows[:_SHOWN])}{more}"


def _row_ids(datalist: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [d.get("row", i) for i, d in enumerate(datalist)]


def _require_column(datalist: Sequence[Mapping[str, Any]], column: str) -> None:
    if not datalist:
        raise ValueError(f"no rows to read label column {column!r} from ({_where(datalist)}).")
    if not any(column in d for d in datalist):
        found = sorted({k for d in datalist for k in d})
        raise ValueError(f"label column {column!r} not found in {_where(datalist)}; columns: {found}.")


def class_name(value: Any) -> str:
    """The class name of a label cell: an integral number -> its integer text (``2.0`` -> ``"2"``), else the text.

    Manifests read back give ``"2"``, ``2`` or ``2.0`` for one grade; all name the class ``"2"``.

    Args:
        value: a label cell (or an entry of a given class list).

    Returns:
        The class name.
    """
    number = _as_number(value)
    if number is not None and np.isfinite(number) and number == int(number) and not isinstance(value, bool):
        return str(int(number))
    return str(value).strip()


def _ordered(names: set[str]) -> list[str]:
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def multiclass_labels(
    datalist: Sequence[Mapping[str, Any]], label_key: str = "label", class_names: Sequence[Any] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Class indices of a multi-class label column.

    Args:
        datalist: manifest rows (:func:`modan_monai.data.manifest_to_datalist`).
        label_key: the column holding one class per row (``label``, ``kl_grade``, ``dx``).
        class_names: the classes in their order (index ``i`` is ``class_names[i]``; ``[0, 1, 2]`` and
            ``["0", "1", "2"]`` name the same classes, see :func:`class_name`); ``None``: the column's distinct
            values, sorted (numerically when all are integers).

    Returns:
        ``(indices, names)``: ``(N,)`` int64 class indices and the class names in index order.

    Raises:
        ValueError: naming the manifest and the rows, for a missing column, an empty cell, a value outside
            ``class_names``, duplicated ``class_names``, or fewer than two classes.

    Example:
        >>> rows = [{"row": 0, "dx": "nv"}, {"row": 1, "dx": "mel"}, {"row": 2, "dx": "nv"}]
        >>> multiclass_labels(rows, "dx")
        (array([1, 0, 1]), ['mel', 'nv'])
    """
    _require_column(datalist, label_key)
    where, ids = _where(datalist), _row_ids(datalist)
    empty = [r for r, d in zip(ids, datalist) if _is_empty(d.get(label_key))]
    if empty:
        raise ValueError(f"label column {label_key!r} in {where} is empty in rows {_rows(empty)}: every row of a "
                         "multi-class task needs its class.")
    values = [class_name(d[label_key]) for d in datalist]
    if class_names is None:
        names = _ordered(set(values))
    else:
        names = [class_name(c) for c in class_names]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"class_names {list(class_names)} name the class(es) {duplicated} twice.")
        outside = [r for r, v in zip(ids, values) if v not in names]
        if outside:
            seen = sorted({v for v in values if v not in names})
            raise ValueError(f"label column {label_key!r} in {where} holds {seen}, not among class_names {names}, in "
                             f"rows {_rows(outside)}.")
    if len(names) < 2:
        raise ValueError(f"label column {label_key!r} in {where}: a multi-class task needs at least 2 classes, got "
                         f"{names}.")
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def _check_policy(name: str, policy: str) -> None:
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"{name} policy {policy!r} is not one of {list(UNCERTAIN_POLICIES)}.")


def multilabel_from_columns(
    datalist: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    uncertain: str = "error",
    blank: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label targets from one column per label holding 1 / 0 / -1 (uncertain) / blank (not mentioned).

    Args:
        datalist: manifest rows (:func:`modan_monai.data.manifest_to_datalist`).
        columns: the label columns, in label order (e.g. CheXpert's ``Cardiomegaly``, ``Edema``, ...).
        uncertain: what a -1 cell becomes: ``ones``, ``zeros``, ``ignore`` (masked out) or ``error``.
        blank: what an empty cell becomes (same choices); ``None``: as ``uncertain``.

    Returns:
        ``(targets, mask)``: ``(N, L)`` float32 0/1 targets and ``(N, L)`` bool mask, false where a cell is ignored
        (its target is 0 there and must not count).

    Raises:
        ValueError: naming the manifest, rows and column, for an unknown policy, no or duplicated columns, a missing
            column, a value other than 1 / 0 / -1 / blank, a -1 or blank cell under ``error``, or a row whose
            labels are all ignored (it would carry no label at all).

    Example:
        >>> rows = [{"row": 0, "Edema": "1", "Fracture": "-1"}, {"row": 1, "Edema": "", "Fracture": "0"}]
        >>> targets, mask = multilabel_from_columns(rows, ["Edema", "Fracture"], uncertain="ignore", blank="zeros")
        >>> targets.tolist(), mask.tolist()
        ([[1.0, 0.0], [0.0, 0.0]], [[True, False], [True, True]])
    """
    _check_policy("uncertain", uncertain)
    blank = uncertain if blank is None else blank
    _check_policy("blank", blank)
    columns = list(columns)
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"multi-label columns {columns}: give at least one column, each once.")
    for column in columns:
        _require_column(datalist, column)
    where, ids = _where(datalist), _row_ids(datalist)
    targets = np.zeros((len(datalist), len(columns)), dtype=np.float32)
    mask = np.ones((len(datalist), len(columns)), dtype=bool)
    for j, column in enumerate(columns):
        cells = [d.get(column) for d in datalist]
        kinds = ["blank" if _is_empty(c) else {1.0: "1", 0.0: "0", -1.0: "-1"}.get(_as_number(c), "bad") for c in cells]
        bad = [r for r, k in zip(ids, kinds) if k == "bad"]
        if bad:
            seen = ", ".join(sorted({repr(c) for c, k in zip(cells, kinds) if k == "bad"}))
            raise ValueError(f"label column {column!r} in {where} holds [{seen}] in rows {_rows(bad)}; expected 1, 0, "
                             "-1 (uncertain) or an empty cell.")
        for kind, policy in (("-1", uncertain), ("blank", blank)):
            rows = [i for i, k in enumerate(kinds) if k == kind]
            if not rows:
                continue
            if policy == "error":
                what = "uncertain (-1)" if kind == "-1" else "empty"
                option = "uncertain" if kind == "-1" else "blank"
                raise ValueError(f"label column {column!r} in {where} is {what} in rows {_rows([ids[i] for i in rows])}"
                                 f"; choose a policy for them ({option}= ones, zeros or ignore).")
            targets[rows, j] = 1.0 if policy == "ones" else 0.0
            mask[rows, j] = policy != "ignore"
        targets[[i for i, k in enumerate(kinds) if k == "1"], j] = 1.0
    unlabelled = [ids[i] for i in np.flatnonzero(~mask.any(axis=1))]
    if unlabelled:
        raise ValueError(f"rows {_rows(unlabelled)} of {where} have every label of {columns} uncertain or empty, all "
                         "ignored: such a row carries no label. Fix the rows, leave them out of the manifest, or "
                         "choose ones / zeros for uncertain or blank cells.")
    return targets, mask


def multilabel_from_findings(
    datalist: Sequence[Mapping[str, Any]],
    column: str,
    labels: Sequence[str],
    no_finding: str = "No Finding",
    separator: str = "|",
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label targets from one column of ``separator``-joined finding names (ChestX-ray14's ``Finding Labels``).

    Args:
        datalist: manifest rows (:func:`modan_monai.data.manifest_to_datalist`).
        column: the findings column.
        labels: the declared label list, in label order (e.g. :data:`data_manifests.chestxray14.CHESTXRAY14_FINDINGS`).
        no_finding: the cell of a row without any finding (all zero); it may not stand beside a finding.
        separator: what joins several findings in a cell.

    Returns:
        ``(targets, mask)``: ``(N, L)`` float32 0/1 targets and an all-true ``(N, L)`` mask (no label is uncertain).

    Raises:
        ValueError: naming the manifest, the rows and the names, for an empty or duplicated label list, a missing
            column, an empty cell, a name outside ``labels``, or ``no_finding`` beside a finding.

    Example:
        >>> rows = [{"row": 0, "f": "Mass|Edema"}, {"row": 1, "f": "No Finding"}]
        >>> multilabel_from_findings(rows, "f", ["Edema", "Mass", "Hernia"])[0].tolist()
        [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    labels = [str(label) for label in labels]
    if not labels or len(set(labels)) != len(labels) or no_finding in labels:
        raise ValueError(f"label list {labels}: give at least one label, each once, and not {no_finding!r} (it means "
                         "all labels are 0).")
    _require_column(datalist, column)
    where, ids = _where(datalist), _row_ids(datalist)
    empty = [r for r, d in zip(ids, datalist) if _is_empty(d.get(column))]
    if empty:
        raise ValueError(f"findings column {column!r} in {where} is empty in rows {_rows(empty)}; a row without "
                         f"findings says {no_finding!r}.")
    index = {label: j for j, label in enumerate(labels)}
    targets = np.zeros((len(datalist), len(labels)), dtype=np.float32)
    for i, (row, d) in enumerate(zip(ids, datalist)):
        names = [name.strip() for name in str(d[column]).split(separator)]
        if names == [no_finding]:
            continue
        unknown = [name for name in names if name not in index]
        if unknown:
            problem = f"{no_finding!r} beside other findings" if no_finding in unknown else f"finding(s) {unknown} " \
                      "not in the label list"
            raise ValueError(f"findings column {column!r} in {where} row {row}: {problem} in {d[column]!r}; labels: "
                             f"{labels} (or {no_finding!r} alone).")
        targets[i, [index[name] for name in names]] = 1.0
    return targets, np.ones_like(targets, dtype=bool)
