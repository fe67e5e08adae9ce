"""Train and apply a binary image classifier on MONAI engines (fine-tuning and linear probing).

One recipe serves the ``classify`` bundle and the cross-validation runner: the paper's downstream protocol
(methods.md §1): 10 epochs, batch 32, Adam lr 1e-4, ``StepLR(step_size=5, gamma=0.1)``, cross-entropy on two
logits, validation AUC after every epoch and the weights of the best validation epoch kept as a *copy*
(:class:`~modan_monai.handlers.KeepBestWeights`). Linear probing is the same call with a model built with
``freeze_encoder=True`` (its encoder stays in eval mode, so BatchNorm statistics do not move).

Training runs on ``monai.engines.SupervisedTrainer``; validation on ``SupervisedEvaluator`` driven by
``ValidationHandler``, with ``monai.handlers.ROCAUC`` as key metric and ``LrScheduleHandler`` stepping the
scheduler once per epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import CacheDataset, DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import PrepareBatch
from monai.handlers import LrScheduleHandler, ROCAUC, ValidationHandler, from_engine
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    EnsureTyped,
    RandAffined,
    RandFlipd,
    Resized,
    SelectItemsd,
)
from monai.utils import set_determinism
from torch import nn

from modan_monai.handlers.best_weights import KeepBestWeights
from modan_monai.transforms import LoadManifestImaged, NormalizeByModalityd

__all__ = [
    "TrainResult",
    "binary_labels",
    "classification_postprocessing",
    "classification_transforms",
    "image_datalist",
    "predict_proba",
    "train_classifier",
]

_MAX_SHOWN = 20
logger = logging.getLogger(__name__)


def _where(datalist: Sequence[Mapping[str, Any]]) -> str:
    manifests = sorted({str(d["manifest"]) for d in datalist if d.get("manifest")})
    if not manifests:
        return "datalist"
    return "manifest " + (manifests[0] if len(manifests) == 1 else f"{manifests[0]} (+{len(manifests) - 1} more)")


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _as_number(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _same(value: Any, positive: Any) -> bool:
    a, b = _as_number(value), _as_number(positive)
    if a is not None and b is not None:
        return a == b
    return str(value).strip() == str(positive).strip()


def _seen(values: Sequence[Any]) -> str:
    counts: dict[str, int] = {}
    for v in values:
        counts[repr(v)] = counts.get(repr(v), 0) + 1
    items = sorted(counts.items())
    shown = ", ".join(f"{k} (x{n})" for k, n in items[:_MAX_SHOWN])
    return "{" + shown + (f", +{len(items) - _MAX_SHOWN} more" if len(items) > _MAX_SHOWN else "") + "}"


def binary_labels(
    datalist: Sequence[Mapping[str, Any]],
    label_key: str = "label",
    positive_value: Any = None,
    *,
    target_key: str = "label",
) -> list[dict[str, Any]]:
    """Validate a binary label column and return copies of the rows with ``target_key`` set to 0 / 1.

    Without ``positive_value`` the labels must already be 0/1 (ints, floats, bools or their strings). With it,
    the column may hold at most two distinct values and the rows equal to ``positive_value`` become 1.

    Args:
        datalist: rows from :func:`modan_monai.data.manifest_to_datalist`.
        label_key: the manifest column holding the label.
        positive_value: the value of the positive class, or ``None`` for 0/1 labels.
        target_key: key the integer label is written to.

    Returns:
        New row dicts (the input is not modified) with ``target_key`` an ``int`` in {0, 1}.

    Raises:
        ValueError: naming the column, the manifest and the values seen, when the column is missing, has empty
            cells (the rows are named), is not binary, or ``positive_value`` is not among its values.
    """
    where = _where(datalist)
    if not datalist:
        raise ValueError(f"no rows to read label column {label_key!r} from ({where}).")
    if not any(label_key in d for d in datalist):
        columns = sorted({k for d in datalist for k in d})
        raise ValueError(f"label column {label_key!r} not found in {where}; columns: {columns}.")
    empty = [d.get("row", i) for i, d in enumerate(datalist) if _is_empty(d.get(label_key))]
    if empty:
        shown = empty[:_MAX_SHOWN]
        more = f" (+{len(empty) - _MAX_SHOWN} more)" if len(empty) > _MAX_SHOWN else ""
        raise ValueError(f"label column {label_key!r} in {where} is empty in rows {shown}{more}.")
    values = [d[label_key] for d in datalist]
    distinct = {str(v).strip() if _as_number(v) is None else _as_number(v) for v in values}
    if positive_value is None:
        numbers = [_as_number(v) for v in values]
        if any(n not in (0.0, 1.0) for n in numbers):
            raise ValueError(
                f"label column {label_key!r} in {where} is not binary 0/1: values seen {_seen(values)}; "
                "give positive_value (one of them) to binarise a two-valued column."
            )
        labels = [int(n) for n in numbers]  # type: ignore[arg-type]
    else:
        if len(distinct) > 2:
            raise ValueError(
                f"label column {label_key!r} in {where} is not binary: {len(distinct)} distinct values seen "
                f"{_seen(values)}."
            )
        labels = [int(_same(v, positive_value)) for v in values]
        if not any(labels):
            raise ValueError(
                f"positive_value {positive_value!r} not found in label column {label_key!r} of {where}: values "
                f"seen {_seen(values)}."
            )
    return [{**d, target_key: y} for d, y in zip(datalist, labels)]


def image_datalist(root: str | Path, pattern: str = "**/*") -> list[dict[str, Any]]:
    """Rows ``{"image": path, "filename": path}`` for the files under ``root`` matching ``pattern`` (sorted).

    For inference on a folder of images (DICOM, NIfTI slices need a manifest with ``index``; PNG/JPEG/TIFF).

    Args:
        root: folder to search.
        pattern: glob pattern relative to ``root`` (``**`` recurses).

    Returns:
        One row per file.

    Raises:
        FileNotFoundError: when no file matches (naming the folder and the pattern).
    """
    files = sorted(str(p) for p in Path(root).glob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"no image file matches {pattern!r} under {root}.")
    return [{"image": f, "filename": f} for f in files]


def _check_both_classes(labels: Sequence[int], what: str, where: str, label_key: str) -> None:
    present = sorted(set(int(y) for y in labels))
    if present != [0, 1]:
        raise ValueError(
            f"{what} data ({where}) needs both classes in {label_key!r} for binary classification / AUC, "
            f"has only {present} ({len(labels)} rows)."
        )


def classification_transforms(
    image_size: int = 64,
    augment: bool = False,
    *,
    label_key: str | None = "label",
    keep_keys: Sequence[str] = (),
    ct_window: Sequence[float] = (-1000.0, 1000.0),
    vocabulary: Any = None,
) -> Compose:
    """Load, normalise and resize a manifest row to a ``(1, S, S)`` float image (+ an int64 label).

    ``LoadManifestImaged`` -> ``NormalizeByModalityd`` ([0, 1]) -> ``Resized`` (area) -> when ``augment``:
    ``RandFlipd`` (horizontal, p=0.5) and ``RandAffined`` (p=0.5, rotation +-10 degrees, scale +-10%) ->
    ``EnsureTyped`` (plain tensors) -> ``SelectItemsd`` (``image``, the label, ``keep_keys``).

    Args:
        image_size: output side ``S``.
        augment: add the random flip / affine (training).
        label_key: key of the integer label, or ``None`` for unlabelled data (inference); rows without it are
            accepted either way.
        keep_keys: other row keys to keep (e.g. ``"image_path"`` to name predictions).
        ct_window: HU window of CT images.
        vocabulary: modality vocabulary (default vocabulary when ``None``).

    Returns:
        A MONAI ``Compose``.
    """
    size = (int(image_size), int(image_size))
    transforms: list[Callable] = [
        LoadManifestImaged(keys="image"),
        NormalizeByModalityd(keys="image", vocabulary=vocabulary, ct_window=tuple(ct_window)),
        Resized(keys="image", spatial_size=size, mode="area"),
    ]
    if augment:
        transforms += [
            RandFlipd(keys="image", prob=0.5, spatial_axis=1),
            RandAffined(
                keys="image", prob=0.5, rotate_range=(math.radians(10.0),), scale_range=(0.1, 0.1), padding_mode="zeros"
            ),
        ]
    transforms.append(EnsureTyped(keys="image", dtype=torch.float32, track_meta=False))
    keys = ["image", *keep_keys]
    if label_key:
        transforms.append(EnsureTyped(keys=label_key, dtype=torch.long, allow_missing_keys=True))
        keys.append(label_key)
    transforms.append(SelectItemsd(keys=keys, allow_missing_keys=True))
    return Compose(transforms)


def classification_postprocessing(num_classes: int = 2, label_key: str | None = "label") -> Compose:
    """Softmax on ``pred`` and a one-hot label: the form ``monai.handlers.ROCAUC`` expects.

    Args:
        num_classes: number of logits.
        label_key: key of the integer label, or ``None`` for unlabelled data (inference: softmax only).

    Returns:
        A MONAI ``Compose`` for an engine's ``postprocessing``.
    """
    transforms: list[Callable] = [Activationsd(keys="pred", softmax=True)]
    if label_key:
        transforms.append(AsDiscreted(keys=label_key, to_onehot=num_classes))
    return Compose(transforms)


@dataclass
class TrainResult:
    """Outcome of :func:`train_classifier`.

    Attributes:
        model: the trained model (best-validation weights restored when validation data was given), eval mode.
        best_epoch: epoch (1-based) of the best validation AUC, ``None`` without validation data.
        best_val_auc: that AUC, ``None`` without validation data.
        history: one dict per epoch: ``epoch``, ``lr`` (used in the epoch), ``train_loss`` (mean over
            iterations) and ``val_auc`` (``None`` without validation data).
    """

    model: nn.Module
    best_epoch: int | None
    best_val_auc: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


class _EpochHistory:
    """Per-epoch learning rate, mean training loss and validation AUC (plain bookkeeping, no MONAI equivalent)."""

    def __init__(self, optimizer: torch.optim.Optimizer, evaluator: Engine | None, metric_name: str) -> None:
        self.optimizer = optimizer
        self.evaluator = evaluator
        self.metric_name = metric_name
        self.history: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._lr = float("nan")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self._losses = []
        self._lr = float(self.optimizer.param_groups[0]["lr"])

    def _iteration(self, engine: Engine) -> None:
        self._losses.append(float(from_engine(["loss"], first=True)(engine.state.output)))

    def _completed(self, engine: Engine) -> None:
        val = None
        if self.evaluator is not None:
            val = float(self.evaluator.state.metrics[self.metric_name])
        self.history.append(
            {
                "epoch": int(engine.state.epoch),
                "lr": self._lr,
                "train_loss": float(np.mean(self._losses)) if self._losses else float("nan"),
                "val_auc": val,
            }
        )


def _dataset(data: Sequence[Mapping[str, Any]], transform: Callable, cache: bool, num_workers: int) -> Dataset:
    if cache:
        return CacheDataset(list(data), transform=transform, cache_rate=1.0, num_workers=num_workers, progress=False)
    return Dataset(list(data), transform=transform)


def train_classifier(
    model: nn.Module,
    train_data: Sequence[Mapping[str, Any]],
    val_data: Sequence[Mapping[str, Any]] | None = None,
    *,
    transforms: tuple[Callable, Callable] | None = None,
    image_size: int = 64,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-4,
    step_size: int = 5,
    gamma: float = 0.1,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    seed: int | None = 0,
    label_key: str = "label",
    cache: bool = True,
    metric_name: str = "val_auc",
) -> TrainResult:
    """Train a 2-logit classifier with cross-entropy; keep the weights of the best validation AUC.

    Args:
        model: e.g. :func:`modan_monai.networks.build_classifier` (``freeze_encoder=True`` for linear probing).
            Build it after seeding if its initialisation must be reproducible.
        train_data: rows with ``image`` (manifest row keys) and an int 0/1 ``label_key`` (see
            :func:`binary_labels`).
        val_data: validation rows; ``None`` trains for ``epochs`` and returns the final weights.
        transforms: ``(train, eval)`` transforms; default :func:`classification_transforms` of ``image_size``
            with and without augmentation.
        image_size: image side for the default transforms.
        epochs: training epochs.
        batch_size: batch size (a last batch of a single image is dropped: BatchNorm cannot train on it).
        lr: Adam learning rate (only parameters with ``requires_grad`` are optimised).
        step_size: ``StepLR`` step in epochs.
        gamma: ``StepLR`` factor.
        device: training device.
        num_workers: data loader / cache workers.
        seed: ``monai.utils.set_determinism`` seed (shuffling, augmentation); ``None`` leaves the RNGs alone.
        label_key: label key of the rows.
        cache: cache the deterministic part of the transforms (``CacheDataset``).
        metric_name: name of the validation AUC in the evaluator metrics and in ``history``.

    Returns:
        :class:`TrainResult`.

    Raises:
        ValueError: when a label is not 0/1 or a set lacks one of the classes (AUC undefined), or ``epochs < 1``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    for what, data in (("training", train_data), ("validation", val_data)):
        if data is None:
            continue
        labels = [d.get(label_key) for d in data]
        if any(not isinstance(y, (int, np.integer)) or isinstance(y, bool) or y not in (0, 1) for y in labels):
            raise ValueError(
                f"{what} data ({_where(data)}) must have int 0/1 labels under {label_key!r} (see binary_labels), "
                f"values seen {_seen(labels)}."
            )
        _check_both_classes(labels, what, _where(data), label_key)  # type: ignore[arg-type]
    if seed is not None:
        set_determinism(seed=seed)
    train_t, eval_t = transforms or (
        classification_transforms(image_size, augment=True, label_key=label_key),
        classification_transforms(image_size, augment=False, label_key=label_key),
    )
    device = torch.device(device)
    model = model.to(device)

    train_loader = DataLoader(
        _dataset(train_data, train_t, cache, num_workers),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        drop_last=len(train_data) % batch_size == 1,
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)

    evaluator = None
    keep_best = None
    handlers: list[Any] = [LrScheduleHandler(scheduler, print_lr=False, epoch_level=True)]
    if val_data is not None:
        keep_best = KeepBestWeights(model, metric_name=metric_name)
        evaluator = SupervisedEvaluator(
            device=device,
            val_data_loader=DataLoader(
                _dataset(val_data, eval_t, cache, num_workers),
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
            ),
            network=model,
            postprocessing=classification_postprocessing(2, label_key),
            key_val_metric={metric_name: ROCAUC(output_transform=from_engine(["pred", label_key]))},
            val_handlers=[keep_best],
            prepare_batch=_PrepareImageLabel(label_key),
        )
        handlers.insert(0, ValidationHandler(validator=evaluator, interval=1, epoch_level=True))
    history = _EpochHistory(optimizer, evaluator, metric_name)
    # history runs after validation (it reads the AUC) and the scheduler (it recorded the lr at epoch start)
    handlers.append(history)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=epochs,
        train_data_loader=train_loader,
        network=model,
        optimizer=optimizer,
        loss_function=nn.CrossEntropyLoss(),
        train_handlers=handlers,
        prepare_batch=_PrepareImageLabel(label_key),
    )
    trainer.run()

    best_epoch = best_auc = None
    if keep_best is not None and keep_best.restore():
        best_epoch, best_auc = keep_best.best_epoch, keep_best.best_metric
        logger.info(f"restored the weights of epoch {best_epoch} ({metric_name} {best_auc:.4f})")
    model.eval()
    return TrainResult(model=model, best_epoch=best_epoch, best_val_auc=best_auc, history=history.history)


class _PrepareImageLabel(PrepareBatch):
    """``(image, label)`` from a collated batch under a configurable label key (MONAI's default reads 'label')."""

    def __init__(self, label_key: str) -> None:
        self.label_key = label_key

    def __call__(
        self, batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.as_tensor(batchdata["image"]).to(device=device, non_blocking=non_blocking, **kwargs)
        label = torch.as_tensor(batchdata[self.label_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        return image, label


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    data: Sequence[Mapping[str, Any]],
    transform: Callable | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    *,
    image_size: int = 64,
    num_workers: int = 0,
) -> np.ndarray:
    """Positive-class probabilities ``softmax(logits)[:, 1]`` of ``data`` in its order.

    Args:
        model: a 2-logit classifier (put in eval mode here).
        data: rows with ``image`` (labels are not needed).
        transform: eval transform; default ``classification_transforms(image_size, augment=False)``.
        batch_size: inference batch size.
        device: inference device.
        image_size: image side for the default transform.
        num_workers: data loader workers.

    Returns:
        float64 array ``(N,)``.
    """
    transform = transform or classification_transforms(image_size, augment=False)
    device = torch.device(device)
    model = model.to(device).eval()
    loader = DataLoader(Dataset(list(data), transform=transform), batch_size=batch_size, num_workers=num_workers)
    probs = [torch.softmax(model(batch["image"].to(device)), dim=1)[:, 1].cpu() for batch in loader]
    return torch.cat(probs).double().numpy() if probs else np.zeros(0, dtype=np.float64)
