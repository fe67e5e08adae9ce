"""Segmentation handlers: TensorBoard overlays of predictions and a per-image Dice CSV."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from modan_monai.evaluation.segmentation import dice_per_image, structure_names, write_dice_csv

__all__ = ["OVERLAY_COLOURS", "PerImageDiceSaver", "SegmentationOverlayHandler", "overlay_masks"]

#: RGB colours of the structure channels (cycled)
OVERLAY_COLOURS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.2, 0.2), (0.2, 0.6, 1.0), (0.2, 1.0, 0.3), (1.0, 0.8, 0.1), (0.9, 0.3, 1.0), (0.1, 1.0, 1.0),
)


def overlay_masks(image: torch.Tensor, masks: torch.Tensor, alpha: float = 0.45) -> torch.Tensor:
    """Blend binary masks in colour over a grey image.

    Args:
        image: ``(1, H, W)`` or ``(H, W)`` image, rescaled to [0, 1] by its min/max.
        masks: ``(C, H, W)`` binary masks; channel ``c`` gets ``OVERLAY_COLOURS[c % 6]``.
        alpha: opacity of the masks.

    Returns:
        ``(3, H, W)`` float RGB in [0, 1].
    """
    grey = image.detach().float().cpu().reshape(image.shape[-2:])
    grey = (grey - grey.min()) / (grey.max() - grey.min()).clamp_min(1e-8)
    rgb = grey.expand(3, *grey.shape).clone()
    for c, mask in enumerate(masks.detach().cpu() > 0.5):
        colour = torch.tensor(OVERLAY_COLOURS[c % len(OVERLAY_COLOURS)]).view(3, 1, 1)
        rgb = torch.where(mask.unsqueeze(0), (1 - alpha) * rgb + alpha * colour, rgb)
    return rgb


class SegmentationOverlayHandler:
    """Write image + ground truth and image + prediction overlays of the first batch to TensorBoard.

    Attached to a (validation) evaluator: after its first iteration of every run, the first ``max_images``
    items of ``engine.state.output`` (decollated dicts with ``image``, ``label``, binarised ``pred``) are drawn
    as ``[ground truth | prediction]`` panels (:func:`overlay_masks`) under ``tag`` at step
    ``engine.state.epoch`` (the trainer's epoch when run by ``ValidationHandler``).

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``.
        tag: image tag.
        max_images: number of images drawn.
        output_transform: maps the engine output to ``(images, labels, preds)`` lists; default
            ``from_engine(["image", "label", "pred"])``.
    """

    #: under torchrun only rank 0 runs it (see modan_monai.engines.rank_zero_handlers)
    rank_zero_only = True

    def __init__(
        self,
        summary_writer: Any,
        tag: str = "val_overlay",
        max_images: int = 4,
        output_transform: Callable | None = None,
    ) -> None:
        self.summary_writer = summary_writer
        self.tag = tag
        self.max_images = int(max_images)
        self.output_transform = output_transform or from_engine(["image", "label", "pred"])

    def attach(self, engine: Engine) -> None:
        """Draw after the first iteration of every run of ``engine``."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write the overlays when this is the first iteration of the epoch."""
        if (engine.state.iteration - 1) % max(engine.state.epoch_length or 1, 1) != 0:
            return
        images, labels, preds = self.output_transform(engine.state.output)
        panels = []
        for image, label, pred in list(zip(images, labels, preds))[: self.max_images]:
            # (3, x, y) overlays in the readers' (x, y) order: transposed to (3, height, width) to show upright
            overlays = [overlay_masks(image, label), overlay_masks(image, pred)]
            panels.append(torch.cat([o.transpose(-1, -2) for o in overlays], dim=-1))
        if panels:
            self.summary_writer.add_images(self.tag, torch.stack(panels), engine.state.epoch, dataformats="NCHW")
            self.summary_writer.flush()


class PerImageDiceSaver:
    """Collect the Dice of every image and structure during an evaluator run and write them as a CSV.

    Columns ``filename, <structure>..., mean`` (:func:`modan_monai.evaluation.segmentation.write_dice_csv`),
    one row per image, in evaluation order; written when the run completes.

    Args:
        output_path: CSV file.
        structures: channel names (or the structure spec of the bundle).
        output_transform: maps the engine output to ``(preds, labels)`` lists; default
            ``from_engine(["pred", "label"])``.
        filename_transform: maps the engine batch to the list of image names; default
            ``from_engine(["filename"])``.
    """

    #: under torchrun only rank 0 runs it (see modan_monai.engines.rank_zero_handlers)
    rank_zero_only = True

    def __init__(
        self,
        output_path: str | Path,
        structures: Sequence[str] | Mapping[str, Sequence[str] | str],
        output_transform: Callable | None = None,
        filename_transform: Callable | None = None,
    ) -> None:
        self.output_path = Path(output_path)
        self.names = structure_names(structures)
        self.output_transform = output_transform or from_engine(["pred", "label"])
        self.filename_transform = filename_transform or from_engine(["filename"])
        self._filenames: list[str] = []
        self._dice: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        """Reset at the start, collect after every iteration, write at the end of each run."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._filenames, self._dice = [], []

    def _collect(self, engine: Engine) -> None:
        preds, labels = self.output_transform(engine.state.output)
        names = self.filename_transform(engine.state.batch)
        names = names[0] if isinstance(names, tuple) and len(names) == 1 else names
        dice = dice_per_image(
            torch.stack([torch.as_tensor(p) for p in preds]), torch.stack([torch.as_tensor(y) for y in labels])
        )
        if dice.shape[1] != len(self.names):
            raise ValueError(
                f"PerImageDiceSaver: predictions have {dice.shape[1]} channels but {len(self.names)} structures are "
                f"named {self.names}."
            )
        self._filenames += [str(n) for n in names]
        self._dice.append(dice.cpu().numpy())

    def _write(self, engine: Engine) -> None:
        values = np.concatenate(self._dice) if self._dice else np.zeros((0, len(self.names)))
        write_dice_csv(self.output_path, self._filenames, values, self.names)
