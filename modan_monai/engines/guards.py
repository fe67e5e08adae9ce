"""Checks a training bundle runs in ``initialize``, before anything trains or writes, naming the config ids to change.

A run that would train on nothing (an empty training split, or a ``batch_size`` larger than it with
``drop_last``), validate on nothing or on one class (an AUC of NaN, "new best metric nan", no ``model.pt``), or
run as N independent copies under ``torchrun`` would otherwise fail late with a message of PyTorch or MONAI
(``num_samples should be a positive integer``), or finish with exit 0 and without its model:

- :func:`check_datalist`: the rows of one role (training, validation, k-NN query) are there, give at least one
  batch, and hold enough classes;
- :func:`check_world_size`: a process started by ``torchrun`` (env ``WORLD_SIZE`` > 1) is refused unless the
  bundle's multi-GPU config (``configs/multi_gpu_train.json``, setting the ``multi_gpu`` id) is merged.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MULTI_GPU_CONFIG", "check_datalist", "check_world_size", "datalist_batches"]

#: the multi-GPU override file of a training bundle, merged after ``configs/train.json``
MULTI_GPU_CONFIG = "configs/multi_gpu_train.json"
_MAX_SHOWN = 8


def datalist_batches(rows: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches per epoch of a DataLoader over ``rows`` items: ``rows // batch_size`` with ``drop_last``, else ceil.

    Example:
        >>> datalist_batches(10, 4), datalist_batches(10, 4, drop_last=True), datalist_batches(3, 4, True)
        (3, 2, 0)
    """
    return rows // batch_size if drop_last else math.ceil(rows / batch_size)


def _quote(ids: Sequence[str]) -> str:
    return ", ".join(f"'{i}'" for i in ids)


def _names(split: str | Sequence[str] | None) -> str:
    if split is None:
        return ""
    return repr(split) if isinstance(split, str) else repr([str(s) for s in split])


def _where(rows: Sequence[Mapping[str, Any]], manifest: Any) -> str:
    if manifest is not None and not hasattr(manifest, "columns"):  # a path, not a frame
        return f"manifest {manifest}"
    found = sorted({str(r["manifest"]) for r in rows if isinstance(r, Mapping) and r.get("manifest")})
    return f"manifest {found[0]}" + (f" (+{len(found) - 1} more)" if len(found) > 1 else "") if found else ""


def _split_counts(rows: Sequence[Mapping[str, Any]] | None) -> str:
    if not rows:
        return ""
    counts = Counter(str(r.get("split")) for r in rows)
    return "; rows per split: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _classes(
    rows: Sequence[Mapping[str, Any]], label_key: str, label_transform: Callable[[dict], Mapping] | None
) -> Counter | None:
    """Class counts of the rows (``label_transform(row)[label_key]`` or ``row[label_key]``); None when unknown."""
    counts: Counter = Counter()
    for row in rows:
        try:
            value = label_transform(dict(row))[label_key] if label_transform is not None else row[label_key]
        except Exception:  # e.g. a value read from the image's DICOM tags: left to the run's own check
            return None
        if hasattr(value, "reshape") and hasattr(value, "tolist"):
            value = value.reshape(-1).tolist()
            value = value[0] if len(value) == 1 else tuple(value)
        counts[value if isinstance(value, Hashable) else repr(value)] += 1
    return counts


def check_datalist(
    rows: Sequence[Mapping[str, Any]] | None,
    role: str,
    ids: Sequence[str],
    *,
    split: str | Sequence[str] | None = None,
    manifest: Any = None,
    all_rows: Sequence[Mapping[str, Any]] | None = None,
    batch_size: int | None = None,
    drop_last: bool = False,
    samples: int | None = None,
    label_key: str | None = None,
    label_transform: Callable[[dict], Mapping] | None = None,
    min_classes: int = 2,
    class_names: Sequence[str] | None = None,
    batch_size_id: str = "batch_size",
    context: str = "",
) -> int:
    """Raise a ``ValueError`` before training when the rows of one role cannot give a meaningful run.

    Args:
        rows: the datalist of this role (dicts with ``split``, ``manifest``, ``row``...), after every filter.
        role: ``"training"``, ``"validation"``, ``"k-NN query"``... (named in the message).
        ids: the config ids that select these rows (e.g. ``["splits", "manifest"]``), named as what to change.
        split: the split value(s) the rows were taken from.
        manifest: the manifest (path) the rows come from; default: their ``manifest`` entries.
        all_rows: every row of the manifest, to report the rows per split when ``rows`` is empty.
        batch_size: the DataLoader's batch size; with it at least one batch per epoch is required.
        drop_last: the DataLoader's ``drop_last``.
        samples: items drawn per epoch by the sampler when it is not ``len(rows)`` (``samples_per_epoch``).
        label_key: key of the class; with it the rows must hold at least ``min_classes`` classes.
        label_transform: computes ``label_key`` from a row without loading its image (e.g.
            ``CombinedClassd``); when it raises for a row the class check is skipped (left to the run).
        min_classes: classes required with ``label_key``.
        class_names: names of integer classes, for the message.
        batch_size_id: the config id of the batch size.
        context: text put in front of the message (e.g. ``"fold 3 of repeat 0: "``).

    Returns:
        The number of batches per epoch (the number of rows when ``batch_size`` is not given).

    Raises:
        ValueError: naming the role, the split, the manifest, the counts and the config ids to change; the run
            has not trained or written anything.

    Example:
        >>> rows = [{"split": "train", "label": 0}, {"split": "train", "label": 1}] * 5
        >>> check_datalist(rows, "training", ["splits"], split="train", batch_size=4, label_key="label")
        3
    """
    rows = list(rows or [])
    parts = [f"split {_names(split)}" if split is not None else "", _where(rows or list(all_rows or []), manifest)]
    where = ", ".join(p for p in parts if p) or "datalist"
    change = f"change config id(s) {_quote(ids)}"
    tail = " Nothing has been trained or written."
    if not rows:
        raise ValueError(
            f"{context}{role} data ({where}) has no rows{_split_counts(all_rows)}: {change} (or add {role} rows to the "
            f"manifest).{tail}"
        )
    n = len(rows) if samples is None else int(samples)
    batches = n
    if batch_size is not None:
        if int(batch_size) < 1:
            raise ValueError(f"{context}config id '{batch_size_id}' must be >= 1, got {batch_size}.{tail}")
        batches = datalist_batches(n, int(batch_size), bool(drop_last))
        if batches < 1:
            raise ValueError(
                f"{context}{role} data ({where}) gives no batch: {n} items, {batch_size_id} {batch_size}, drop_last "
                f"{bool(drop_last)}. Lower config id '{batch_size_id}' to at most {n}, or {change} to give more "
                f"{role} rows.{tail}"
            )
    if label_key is not None and min_classes > 1:
        counts = _classes(rows, label_key, label_transform)
        if counts is not None and len(counts) < min_classes:
            names = list(class_names or [])

            def name(c: Any) -> str:
                return repr(names[c]) if isinstance(c, int) and 0 <= c < len(names) else repr(c)

            ordered = sorted(counts.items(), key=str)[:_MAX_SHOWN]
            shown = "{" + ", ".join(f"{name(c)}: {k}" for c, k in ordered) + "}"
            what = "a single class" if len(counts) == 1 else f"{len(counts)} classes"
            raise ValueError(
                f"{context}{role} data ({where}) holds {what} in its {len(rows)} rows: {shown} (label "
                f"{label_key!r}); it needs at least {min_classes} (an AUC of one class is NaN and picks no best "
                f"model; a k-NN accuracy of one class measures nothing). {change[0].upper() + change[1:]} so that the "
                f"{role} rows hold every class.{tail}"
            )
    return batches


def check_world_size(
    bundle_root: str | os.PathLike[str], multi_gpu: bool = False, environ: Mapping[str, str] | None = None
) -> int:
    """Refuse a ``torchrun`` start (env ``WORLD_SIZE`` > 1) of a bundle config that trains one process only.

    Without a multi-GPU config every process would train the whole run on its own into the same folder. The
    bundle's ``configs/multi_gpu_train.json`` sets ``multi_gpu`` to true (with the distributed sampler and
    ``DistributedDataParallel``); when that file exists the message says how to merge it.

    Args:
        bundle_root: the bundle folder (holding ``configs/``).
        multi_gpu: the bundle's ``multi_gpu`` id (true once the multi-GPU config is merged).
        environ: the environment to read (default ``os.environ``).

    Returns:
        The world size (1 without ``torchrun``).

    Raises:
        ValueError: a world size > 1 with ``multi_gpu`` false (naming ``WORLD_SIZE``, ``RANK`` and the config
            file to merge, or saying that this bundle has none), or a ``WORLD_SIZE`` that is not an integer.
    """
    env = os.environ if environ is None else environ
    raw = str(env.get("WORLD_SIZE", "1")).strip() or "1"
    try:
        world = int(raw)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an integer, got {raw!r}.") from None
    if world <= 1 or multi_gpu:
        return world
    rank = env.get("RANK", "?")
    config = Path(bundle_root) / MULTI_GPU_CONFIG
    started = f"this process was started for {world} processes (WORLD_SIZE={world}, RANK={rank}, e.g. by torchrun)"
    if config.is_file():
        hint = (
            f"merge the multi-GPU config {config} after train.json: --config_file "
            "\"['configs/train.json','configs/multi_gpu_train.json']\" (it sets multi_gpu true)"
        )
    else:
        hint = (
            f"this bundle has no multi-GPU config ({config} does not exist) in this version: run one process "
            "(python -m monai.bundle run ..., without torchrun)"
        )
    raise ValueError(
        f"{started}, but the config is single-process (config id 'multi_gpu' is false): each process would train "
        f"the whole run on its own into one output_dir. To train on {world} GPUs, {hint}."
    )
