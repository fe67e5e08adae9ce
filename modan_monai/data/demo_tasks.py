"""Downstream tasks on the embedded demo corpus, so the downstream bundles run on a fresh machine."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .demo import default_demo_dir, ensure_demo_corpus
from .manifest import read_manifest, write_manifest
from .vocabulary import MetadataVocabulary

__all__ = ["DEMO_CLASSIFICATION_MANIFEST", "demo_classification_manifest"]

DEMO_CLASSIFICATION_MANIFEST = "classification_chest.csv"
_FRACTIONS = {"val": 0.2, "test": 0.2}


def _anatomy(row: pd.Series, vocabulary: MetadataVocabulary) -> str:
    value = row["anatomy"]
    if not isinstance(value, str) or not value.strip():  # DICOM rows: the label lives in the header
        import pydicom

        value = str(pydicom.dcmread(row["path"], stop_before_pixels=True).get("BodyPartExamined", ""))
    return str(vocabulary.canonical("anatomy", value))


def demo_classification_manifest(
    root: str | Path | None = None, size: int = 64, per_pair: int = 40, seed: int = 0, val_fraction: float = 0.25
) -> str:
    """Write (or rewrite) the demo binary task "chest vs not chest" and return its manifest path.

    The demo corpus (:func:`modan_monai.data.ensure_demo_corpus`) is written first if needed. Column ``label``
    is 1 for chest images (CT and radiographs) and 0 for the others (head CT/MR, knee MR, abdomen CT, breast
    US). ``split`` is assigned per ``case_id`` (the slices of one volume stay together), stratified by label:
    within each class the cases are shuffled with ``seed`` and 20% go to ``val``, 20% to ``test`` (at least one
    case each) and the rest to ``train``. The result is the same on every call.

    Args:
        root: demo corpus folder (default :func:`modan_monai.data.demo.default_demo_dir`); the manifest
            ``classification_chest.csv`` is written there.
        size: see :func:`modan_monai.data.ensure_demo_corpus`.
        per_pair: see :func:`modan_monai.data.ensure_demo_corpus`.
        seed: corpus seed and split seed.
        val_fraction: see :func:`modan_monai.data.ensure_demo_corpus` (this task's own split ignores it).

    Returns:
        The manifest path (str).
    """
    root = Path(root) if root is not None else default_demo_dir()
    frame = read_manifest(ensure_demo_corpus(root, size=size, per_pair=per_pair, seed=seed,
                                              val_fraction=val_fraction))
    vocabulary = MetadataVocabulary.from_file(None)
    frame["label"] = [int(_anatomy(row, vocabulary) == "chest") for _, row in frame.iterrows()]
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for label in (0, 1):
        cases = sorted(frame.loc[frame["label"] == label, "case_id"].astype(str).unique())
        cases = [cases[i] for i in rng.permutation(len(cases))]
        n_val = max(1, round(_FRACTIONS["val"] * len(cases)))
        n_test = max(1, round(_FRACTIONS["test"] * len(cases)))
        for i, case in enumerate(cases):
            split_of[case] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    frame["split"] = frame["case_id"].astype(str).map(split_of)
    frame["dataset"] = "demo_chest"
    out = root / DEMO_CLASSIFICATION_MANIFEST
    # write then rename, so that concurrent runs never read a half-written file
    fd, tmp = tempfile.mkstemp(suffix=".csv", dir=root)
    os.close(fd)
    write_manifest(frame.drop(columns=["row"]), tmp)
    os.replace(tmp, out)
    return str(out)
