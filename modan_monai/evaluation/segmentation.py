"""Segmentation evaluation: Dice per structure (multi-label channels), per-image Dice tables, postprocessing.

The segment bundle predicts one sigmoid channel per structure (structures may overlap, see
:mod:`modan_monai.data.segmentation`); every channel is a structure, so Dice is computed with
``include_background=True`` (there is no background channel to leave out). Dice follows MONAI's
``compute_dice`` (``ignore_empty=True``: NaN for an image whose ground truth of a structure is empty).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.handlers import MeanDice, from_engine
from monai.metrics import compute_dice
from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd, SaveImaged, SplitDimd

from modan_monai.data.segmentation import normalise_structures
from modan_monai.transforms.label_map import StructuresToLabelMapd

__all__ = [
    "dice_per_image",
    "segmentation_postprocessing",
    "structure_dice_metrics",
    "structure_names",
    "write_dice_csv",
]


def structure_names(structures: Sequence[str] | Mapping[str, Sequence[str] | str]) -> list[str]:
    """Output channel names, in channel order (see :func:`modan_monai.data.segmentation.normalise_structures`).

    Args:
        structures: list of structures or mapping channel -> merged structures.

    Returns:
        The channel names.
    """
    return list(normalise_structures(structures))


def dice_per_image(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Dice of every image and channel of binary multi-label masks.

    Args:
        pred: ``(N, C, *spatial)`` binarised prediction.
        label: ``(N, C, *spatial)`` ground truth (0/1).

    Returns:
        ``(N, C)`` float tensor; NaN where the ground truth of a channel is empty.

    Raises:
        ValueError: when the shapes differ.
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} must have the same shape.")
    return compute_dice(pred.float(), label.float(), include_background=True, ignore_empty=True)


def _channel(index: int, output_transform: Callable) -> Callable:
    def select(output: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        preds, labels = output_transform(output)
        return [p[index : index + 1] for p in preds], [y[index : index + 1] for y in labels]

    return select


def structure_dice_metrics(
    structures: Sequence[str] | Mapping[str, Sequence[str] | str],
    prefix: str = "val_dice_",
    output_transform: Callable | None = None,
) -> dict[str, MeanDice]:
    """One ``monai.handlers.MeanDice`` per structure channel, for an evaluator's ``additional_metrics``.

    Args:
        structures: the structures (channel order).
        prefix: metric name prefix (``val_dice_heart`` ...).
        output_transform: maps the engine output to ``(preds, labels)`` lists; default
            ``from_engine(["pred", "label"])``.

    Returns:
        ``{prefix + name: MeanDice}`` (the mean over images of the structure's Dice).

    Example:
        >>> sorted(structure_dice_metrics(["heart", "left_lung"]))
        ['val_dice_heart', 'val_dice_left_lung']
    """
    transform = output_transform or from_engine(["pred", "label"])
    return {
        f"{prefix}{name}": MeanDice(include_background=True, reduction="mean", output_transform=_channel(c, transform))
        for c, name in enumerate(structure_names(structures))
    }


def write_dice_csv(
    path: str | Path, filenames: Sequence[str], dice: np.ndarray | torch.Tensor, names: Sequence[str]
) -> Path:
    """Write a per-image Dice table: ``filename, <structure>..., mean`` (mean over the non-NaN structures).

    Args:
        path: output CSV (parent folders are created).
        filenames: one name per image.
        dice: ``(N, C)`` Dice values.
        names: ``C`` structure names.

    Returns:
        The path written.

    Raises:
        ValueError: when the numbers of images or structures do not match.
    """
    values = np.asarray(dice.detach().cpu() if isinstance(dice, torch.Tensor) else dice, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(filenames), len(names)):
        raise ValueError(
            f"Dice table {path}: values of shape {values.shape} do not match {len(filenames)} images x "
            f"{len(names)} structures {list(names)}."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", *names, "mean"])
        for name, row in zip(filenames, values):
            finite = row[~np.isnan(row)]
            mean = float(finite.mean()) if finite.size else float("nan")
            writer.writerow([name, *(f"{v:.6f}" for v in row), f"{mean:.6f}"])
    return path


def segmentation_postprocessing(
    threshold: float = 0.5,
    *,
    preprocessing: Compose | None = None,
    structures: Sequence[str] | Mapping[str, Sequence[str] | str] | None = None,
    output_dir: str | Path | None = None,
    output_ext: str = ".png",
    label_map: bool = False,
    label_order: Sequence[int] | None = None,
) -> Compose:
    """Sigmoid and threshold of the ``pred`` logits; for inference, resize back and save one mask per structure.

    Training/evaluation: ``Activationsd(sigmoid)`` -> ``AsDiscreted(threshold)``. With ``preprocessing`` (applied
    with ``track_meta=True``) the prediction is first resized back to the input image's size with ``Invertd``;
    with ``output_dir`` and ``structures`` each channel is written with ``SaveImaged`` as
    ``<output_dir>/<image name>/<image name>_<structure><output_ext>`` (0/255 for PNG). With ``label_map`` the
    channels become one ``(1, ...)`` uint8 label map (:class:`modan_monai.transforms.label_map.StructuresToLabelMapd`:
    background 0, channel ``c`` -> ``c + 1``, overlaps resolved by ``label_order``), the form annotation clients
    such as MONAI Label show; with ``output_dir`` it is saved as ``<image name>_labels<output_ext>``.

    Args:
        threshold: probability threshold.
        preprocessing: the preprocessing ``Compose`` to invert (inference), or None.
        structures: channel names, needed for saving.
        output_dir: folder of the saved masks, or None (no saving).
        output_ext: file type of the saved masks (``.png``, ``.nii.gz`` ...).
        label_map: return (and save) one label map instead of the binary channels.
        label_order: painting order of the channels for ``label_map`` (a later channel wins where channels
            overlap); ``None``: the channel order.

    Returns:
        A MONAI ``Compose`` for an engine's ``postprocessing``.

    Raises:
        ValueError: when ``output_dir`` is given without ``structures``.
    """
    transforms: list[Callable] = [Activationsd(keys="pred", sigmoid=True)]
    if preprocessing is not None:
        transforms.append(
            Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True)
        )
    transforms.append(AsDiscreted(keys="pred", threshold=threshold))
    if label_map:
        transforms.append(StructuresToLabelMapd(keys="pred", order=label_order))
        if output_dir is not None:
            transforms.append(
                SaveImaged(
                    keys="pred",
                    output_dir=str(output_dir),
                    output_postfix="labels",
                    output_ext=output_ext,
                    separate_folder=True,
                    resample=False,
                    output_dtype=np.uint8,
                    print_log=False,
                )
            )
        return Compose(transforms)
    if output_dir is not None:
        if structures is None:
            raise ValueError("segmentation_postprocessing: output_dir needs the structures to name the saved masks.")
        names = structure_names(structures)
        png = output_ext.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
        transforms.append(SplitDimd(keys="pred", output_postfixes=names, dim=0, keepdim=True, update_meta=False))
        transforms += [
            SaveImaged(
                keys=f"pred_{name}",
                output_dir=str(output_dir),
                output_postfix=name,
                output_ext=output_ext,
                separate_folder=True,
                resample=False,
                scale=255 if png else None,
                output_dtype=np.uint8,
                print_log=False,
            )
            for name in names
        ]
    return Compose(transforms)
