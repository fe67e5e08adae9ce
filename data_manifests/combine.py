"""Concatenate the manifests of several datasets and summarise a manifest."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from modan_monai.data.manifest import MANIFEST_COLUMNS
from modan_monai.data.vocabulary import MetadataVocabulary

from ._common import preview

__all__ = ["combine", "summarize"]


def combine(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate manifest frames (union of columns; label columns absent from a dataset stay empty).

    Args:
        frames: manifest frames from the builders.

    Returns:
        One frame, manifest columns first.

    Raises:
        ValueError: if ``frames`` is empty or an image entry (path, key, index) appears twice.
    """
    if not frames:
        raise ValueError("combine needs at least one manifest frame.")
    frame = pd.concat(list(frames), ignore_index=True, sort=False)
    frame["index"] = pd.array(frame["index"], dtype="Int64")
    # Integer label columns absent from some datasets would become float after concat: keep them nullable ints.
    for column in frame.columns:
        if any(column in f.columns and pd.api.types.is_integer_dtype(f[column]) for f in frames):
            try:
                frame[column] = pd.array(frame[column], dtype="Int64")
            except (TypeError, ValueError):  # the same column holds text in another dataset: keep it as is
                pass
    identity = frame[["path", "key", "index"]].astype(str)
    duplicated = identity.duplicated(keep=False)
    if duplicated.any():
        entries = frame.loc[duplicated, "path"].astype(str).unique().tolist()
        raise ValueError(f"combined manifest lists the same image entry twice: {preview(entries)}.")
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    return frame[list(MANIFEST_COLUMNS) + extra]


def summarize(frame: pd.DataFrame, vocabulary: MetadataVocabulary | None = None) -> pd.DataFrame:
    """Rows per dataset x canonical modality x canonical anatomy.

    Values the vocabulary does not know (or empty DICOM values resolved only at load time) are shown as ``"?<raw>"``.

    Args:
        frame: manifest frame.
        vocabulary: vocabulary used to canonicalise; default the packaged one.

    Returns:
        Frame with columns ``dataset, modality, anatomy, rows``.
    """
    vocab = (vocabulary or MetadataVocabulary.from_file()).subset(["modality", "anatomy"], unknown="empty")
    table = pd.DataFrame({"dataset": frame["dataset"].astype(str)})
    for group in ("modality", "anatomy"):
        raw = frame[group]
        table[group] = [vocab.canonical(group, v) or f"?{'' if pd.isna(v) else v}" for v in raw]
    return table.groupby(["dataset", "modality", "anatomy"], sort=False).size().reset_index(name="rows")
