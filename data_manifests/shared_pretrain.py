"""The project's multi-modality pretraining corpus, built from a ``../shared/datasets``-style root.

Expected raw layout (see ``shared/datasets/README.md``)::

    <root>/pneumoniamnist/pneumoniamnist.npz        XR / chest   (MedMNIST layout, see data_manifests.medmnist)
    <root>/jsrt_scr/images_1024, masks_1024/...     XR / chest   (see data_manifests.jsrt)
    <root>/ct_tcga_dicom/dicom_dir/*.dcm            CT / chest   (tags CHEST or LUNG; data_manifests.dicom_dir)
    <root>/head_ct_hemorrhage/head_ct, labels.csv   CT / head    (see data_manifests.head_ct)
    <root>/knee_kl/KL0 ... KL4/*.png                XR / knee    (patient id + L/R; see data_manifests.knee_kl)
    <root>/bccd_blood/*.jpg                         SM / blood   (flat image folder; data_manifests.image_folder)
    <root>/ham10000_sample/*.jpg + metadata CSV     DMS / skin   (case = lesion_id; see data_manifests.ham10000)
    <root>/retinamnist/retinamnist.npz              OP / eye     (MedMNIST RGB; ``label`` named ``dr_grade``)

Seven (modality, anatomy) pairs; the eighth pair of the shared copy, US / breast, is BUSI's.

BUSI (``<root>/busi``, US / breast) is deliberately NOT included: it is the downstream breast task, and a model must
never be pretrained on the images it is evaluated on. For the same reason exclude the dataset the pretrained encoder
will be evaluated on (``exclude=("pneumoniamnist",)``, ``("head_ct",)``, ``("knee_kl",)``, ``("retinamnist",)``,
``("ham10000",)``...). The sources' own labels stay in their columns (``label`` pneumonia, ``nodule``, ``hemorrhage``,
``kl_grade``, ``dx``, ``dr_grade``; empty for the other datasets); case ids group what belongs together (the two
knees of a patient, the images of a HAM10000 lesion).

The root may hold other datasets (BUSI...); every source that is not excluded must be present (a missing one is
refused naming the expected and the found folders), and each is checked by its own builder.

Splits: the official splits of a source are kept (PneumoniaMNIST's and RetinaMNIST's train / val / test); then
every canonical (modality, anatomy) pair without a ``val`` row gets one (:func:`hold_out_val`: a seeded
``val_fraction`` of its training cases, all images of a case together), so that the ``val`` split holds every pair
and the pretraining bundle's k-NN / linear-probe monitor can judge the modality x anatomy classes on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from modan_monai.data.vocabulary import MetadataVocabulary

from . import dicom_dir, ham10000, head_ct, image_folder, jsrt, knee_kl, medmnist
from ._common import describe, require_dir
from .combine import combine

__all__ = ["PRETRAIN_SOURCES", "build", "hold_out_val", "subsample"]

#: dataset name -> (folder under the root, builder called with (path, dataset=name)).
PRETRAIN_SOURCES: dict[str, tuple[str, Callable[..., pd.DataFrame]]] = {
    "pneumoniamnist": ("pneumoniamnist/pneumoniamnist.npz", medmnist.build),
    "jsrt": ("jsrt_scr", jsrt.build),
    "ct_tcga": ("ct_tcga_dicom/dicom_dir", dicom_dir.build),
    "head_ct": ("head_ct_hemorrhage", head_ct.build),
    "knee_kl": ("knee_kl", knee_kl.build),
    "bccd_blood": ("bccd_blood", partial(image_folder.build, modality="SM", anatomy="blood")),
    "ham10000": ("ham10000_sample", ham10000.build),
    "retinamnist": ("retinamnist/retinamnist.npz", partial(medmnist.build, label_column="dr_grade")),
}


def subsample(frame: pd.DataFrame, max_rows: int | None, seed: int = 0) -> pd.DataFrame:
    """Keep at most ``max_rows`` rows, drawn without replacement with ``numpy.random.default_rng(seed)``.

    The original row order is kept, so the result is deterministic for a given seed.

    Raises:
        ValueError: if ``max_rows`` is not positive.
    """
    if max_rows is None or len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}.")
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[keep].reset_index(drop=True)


def _pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """The canonical (modality, anatomy) pair of each row (an unknown or empty value as ``"?<raw>"``)."""
    vocab = MetadataVocabulary.from_file().subset(["modality", "anatomy"], unknown="empty")
    out = []
    for modality, anatomy in zip(frame["modality"], frame["anatomy"]):
        out.append(tuple(vocab.canonical(g, v) or f"?{'' if pd.isna(v) else v}"
                         for g, v in (("modality", modality), ("anatomy", anatomy))))
    return out


def hold_out_val(frame: pd.DataFrame, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Move a seeded fraction of the training cases of every (modality, anatomy) pair without ``val`` rows to ``val``.

    Pairs are canonical (``CHEST`` and ``LUNG`` are one anatomy); a case is ``(dataset, case_id)`` and all its rows
    move together. Per pair (in sorted order), the cases whose rows are all ``train`` are sorted, shuffled with
    ``numpy.random.default_rng(seed)`` and ``max(1, round(val_fraction * n))`` of them (at most ``n - 1``: one
    stays in training) go to ``val``. Pairs that already have ``val`` rows are left as they are.

    Args:
        frame: the combined manifest frame.
        val_fraction: fraction of a pair's training cases held out; 0 leaves every split as it is.
        seed: shuffling seed.

    Returns:
        A copy of ``frame`` with the ``split`` column updated.

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)``, or a pair without ``val`` rows with fewer than two training
            cases (naming the pair, its datasets and the options to change).
    """
    try:
        fraction = float(val_fraction)  # build_manifest.py --opt val_fraction=0.1 passes text
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"option val_fraction must be a number in [0, 1), got {val_fraction!r}.")
    out = frame.copy()
    if fraction == 0.0:
        return out
    pairs = pd.Series(_pairs(out), index=out.index)
    cases = out["dataset"].astype(str) + "/" + out["case_id"].astype(str)
    split = out["split"].astype(str)
    only_train = split.eq("train").groupby(cases).transform("all")
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for pair in sorted(set(pairs)):
        rows = pairs.map(lambda p: p == pair)
        if split[rows].eq("val").any() or cases[rows].isin(held).any():
            continue
        candidates = np.array(sorted(cases[rows & only_train].unique()))
        if len(candidates) < 2:
            datasets = sorted(out.loc[rows, "dataset"].astype(str).unique())
            raise ValueError(
                f"(modality, anatomy) pair {pair} (dataset(s) {datasets}) has {len(candidates)} training case(s) and "
                "no val rows: cannot hold out a val case and keep one for training. Raise max_per_dataset, exclude "
                "the dataset, or pass val_fraction=0."
            )
        n_val = min(max(1, round(fraction * len(candidates))), len(candidates) - 1)
        held.update(candidates[rng.permutation(len(candidates))[:n_val]])
    out.loc[cases.isin(held).to_numpy(), "split"] = "val"
    return out


def build(
    root: str | Path,
    max_per_dataset: int | None = None,
    seed: int = 0,
    exclude: Sequence[str] = (),
    salt: str | None = None,
    salt_file: str | Path | None = None,
    keep_uids: bool = False,
    val_fraction: float = 0.1,
) -> pd.DataFrame:
    """Build the pretraining manifest (PneumoniaMNIST, JSRT, TCGA CT DICOM, head CT, knee KL, BCCD, HAM10000,
    RetinaMNIST; never BUSI).

    Args:
        root: the shared datasets folder.
        max_per_dataset: subsample each dataset to at most this many rows (deterministic by ``seed``).
        seed: subsampling seed.
        exclude: dataset names of :data:`PRETRAIN_SOURCES` to leave out (the downstream evaluation set).
        salt, salt_file, keep_uids: the DICOM source's pseudonymisation (see :func:`data_manifests.dicom_dir.build`).
        val_fraction: fraction of the training cases of each (modality, anatomy) pair without ``val`` rows that
            :func:`hold_out_val` moves to ``val`` (seeded by ``seed``); 0 keeps the sources' splits.

    Returns:
        The combined manifest frame; its ``val`` split holds every (modality, anatomy) pair (unless
        ``val_fraction`` is 0).

    Raises:
        FileNotFoundError: if ``root`` or a source folder is missing (naming the expected and the found folders).
        ValueError: for an unknown name in ``exclude``, if everything is excluded, or see :func:`hold_out_val`.
    """
    folder = require_dir(root, "shared datasets root")
    unknown = [name for name in exclude if name not in PRETRAIN_SOURCES]
    if unknown:
        raise ValueError(f"cannot exclude {unknown}: pretraining sources are {list(PRETRAIN_SOURCES)} "
                         "(BUSI is never included).")
    wanted = {name: relative for name, (relative, _) in PRETRAIN_SOURCES.items() if name not in exclude}
    missing = [relative for relative in wanted.values() if not (folder / relative).exists()]
    if missing:
        raise FileNotFoundError(
            f"shared datasets root {folder}: {missing} not found; expected {list(wanted.values())} (pass exclude= to "
            f"leave a source out); found {describe(folder)}."
        )
    frames = []
    for name, (relative, builder) in PRETRAIN_SOURCES.items():
        if name in exclude:
            continue
        options = {"salt": salt, "salt_file": salt_file, "keep_uids": keep_uids} if builder is dicom_dir.build else {}
        frames.append(subsample(builder(folder / relative, dataset=name, **options), max_per_dataset, seed))
    if not frames:
        raise ValueError("every pretraining source is excluded: nothing to build.")
    return hold_out_val(combine(frames), val_fraction=val_fraction, seed=seed)
