"""The project's multi-modality pretraining corpus, built from a ``../shared/datasets``-style root.

Expected raw layout (see ``shared/datasets/README.md``)::

    <root>/pneumoniamnist/pneumoniamnist.npz        XR / chest   (MedMNIST layout, see data_manifests.medmnist)
    <root>/jsrt_scr/images_1024, masks_1024/...     XR / chest   (see data_manifests.jsrt)
    <root>/ct_tcga_dicom/dicom_dir/*.dcm            CT / chest   (tags CHEST or LUNG; data_manifests.dicom_dir)
    <root>/head_ct_hemorrhage/head_ct, labels.csv   CT / head    (see data_manifests.head_ct)

BUSI (``<root>/busi``, US / breast) is deliberately NOT included: it is the downstream breast task, and a model must
never be pretrained on the images it is evaluated on. For the same reason pass ``exclude=("pneumoniamnist",)`` or
``exclude=("head_ct",)`` when the pretrained encoder will be evaluated on PneumoniaMNIST or head CT.

The root may hold other datasets (BUSI...); every source that is not excluded must be present (a missing one is
refused naming the expected and the found folders), and each is checked by its own builder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import dicom_dir, head_ct, jsrt, medmnist
from ._common import describe, require_dir
from .combine import combine

__all__ = ["PRETRAIN_SOURCES", "build", "subsample"]

#: dataset name -> (folder under the root, builder called with (path, dataset=name)).
PRETRAIN_SOURCES: dict[str, tuple[str, Callable[..., pd.DataFrame]]] = {
    "pneumoniamnist": ("pneumoniamnist/pneumoniamnist.npz", medmnist.build),
    "jsrt": ("jsrt_scr", jsrt.build),
    "ct_tcga": ("ct_tcga_dicom/dicom_dir", dicom_dir.build),
    "head_ct": ("head_ct_hemorrhage", head_ct.build),
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


def build(
    root: str | Path,
    max_per_dataset: int | None = None,
    seed: int = 0,
    exclude: Sequence[str] = (),
    salt: str | None = None,
    salt_file: str | Path | None = None,
    keep_uids: bool = False,
) -> pd.DataFrame:
    """Build the pretraining manifest (PneumoniaMNIST, JSRT, TCGA CT DICOM, head CT; never BUSI).

    Args:
        root: the shared datasets folder.
        max_per_dataset: subsample each dataset to at most this many rows (deterministic by ``seed``).
        seed: subsampling seed.
        exclude: dataset names of :data:`PRETRAIN_SOURCES` to leave out (the downstream evaluation set).
        salt, salt_file, keep_uids: the DICOM source's pseudonymisation (see :func:`data_manifests.dicom_dir.build`).

    Returns:
        The combined manifest frame.

    Raises:
        FileNotFoundError: if ``root`` or a source folder is missing (naming the expected and the found folders).
        ValueError: for an unknown name in ``exclude``, or if everything is excluded.
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
    return combine(frames)
