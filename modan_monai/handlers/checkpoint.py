"""Encoder-only checkpoints and automatic resume for ignite/MONAI engines.

The full training state (network, optimiser, scheduler, trainer) is written by MONAI's
``CheckpointSaver`` as ``checkpoint_epoch=N.pt`` (:class:`TrainingCheckpointSaver`); :class:`ResumeFromCheckpoint` reloads the newest
one when a run starts, and :class:`EncoderCheckpointSaver` writes the encoder alone in the format of
:mod:`modan_monai.networks.checkpoint`, which downstream workflows load by name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

from modan_monai.networks.checkpoint import save_encoder

__all__ = ["EncoderCheckpointSaver", "ResumeFromCheckpoint", "TrainingCheckpointSaver", "latest_checkpoint"]

_EPOCH_RE = re.compile(r"epoch=(\d+)\.pt$")


def latest_checkpoint(save_dir: str | Path, prefix: str = "checkpoint") -> Path | None:
    """Return the ``{prefix}_epoch=N.pt`` file with the largest N in ``save_dir``, or ``None``."""
    found = []
    for path in Path(save_dir).glob(f"{prefix}_epoch=*.pt"):
        match = _EPOCH_RE.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class ResumeFromCheckpoint:
    """Resume training from the newest full checkpoint in a folder, if there is one.

    Attach it before the other handlers; at ``Events.STARTED`` it loads network, optimiser,
    scheduler and trainer state (epoch and iteration) with MONAI's ``CheckpointLoader``, so a
    second ``python -m monai.bundle run`` with a larger ``epochs`` continues where the first one
    stopped. A run started in an empty folder trains from scratch.

    Args:
        save_dir: folder written by ``monai.handlers.CheckpointSaver`` (``checkpoint_epoch=N.pt``).
        load_dict: objects to restore, usually the same dictionary given to the saver.
        engine_key: name under which the engine this handler is attached to is restored (so a
            bundle config need not reference the trainer from inside its own handler list).
        prefix: file prefix given to the saver.
        map_location: ``torch.load`` map location.
    """

    def __init__(
        self,
        save_dir: str | Path,
        load_dict: Mapping[str, Any],
        engine_key: str | None = "trainer",
        prefix: str = "checkpoint",
        map_location: Any = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.load_dict = dict(load_dict)
        self.engine_key = engine_key
        self.prefix = prefix
        self.map_location = map_location
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        path = latest_checkpoint(self.save_dir, self.prefix)
        if path is None:
            self.logger.info(f"no checkpoint in {self.save_dir}: training from scratch")
            return
        self.logger.info(f"resuming from {path}")
        load_dict = {**self.load_dict, **({self.engine_key: engine} if self.engine_key else {})}
        CheckpointLoader(load_path=str(path), load_dict=load_dict, map_location=self.map_location).attach(engine)


class TrainingCheckpointSaver:
    """MONAI's ``CheckpointSaver`` at epoch level, with the engine itself added to the saved state.

    Writes ``checkpoint_epoch=N.pt`` every ``save_interval`` epochs, keeping the latest ``n_saved``,
    in the form :class:`ResumeFromCheckpoint` reads back.

    Args:
        save_dir: output folder.
        save_dict: objects to save (network, optimizer, lr_scheduler...).
        engine_key: name under which the engine this handler is attached to is saved.
        save_interval: epochs between checkpoints.
        n_saved: how many checkpoints to keep (``None``: all).
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, Any],
        engine_key: str | None = "trainer",
        save_interval: int = 1,
        n_saved: int | None = 1,
    ) -> None:
        self.save_dir = str(save_dir)
        self.save_dict = dict(save_dict)
        self.engine_key = engine_key
        self.save_interval = save_interval
        self.n_saved = n_saved

    def attach(self, engine: Engine) -> None:
        save_dict = {**self.save_dict, **({self.engine_key: engine} if self.engine_key else {})}
        CheckpointSaver(
            save_dir=self.save_dir, save_dict=save_dict, save_interval=self.save_interval, n_saved=self.n_saved
        ).attach(engine)


class EncoderCheckpointSaver:
    """Write the encoder alone (``modan_monai.networks.save_encoder`` format) during training.

    Args:
        encoder: the encoder module (e.g. ``@network.encoder`` in a bundle).
        save_dir: output folder.
        filename: name of the latest encoder checkpoint, overwritten every ``save_interval`` epochs
            and at the end of training.
        save_interval: epochs between writes.
        metadata: extra JSON-serialisable entries stored with the weights (method, vocabulary...).
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        save_dir: str | Path,
        filename: str = "encoder.pt",
        save_interval: int = 1,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}")
        self.encoder = encoder
        self.save_dir = Path(save_dir)
        self.filename = filename
        self.save_interval = save_interval
        self.metadata = dict(metadata or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        save_encoder(
            self.encoder,
            self.save_dir / self.filename,
            epoch=int(engine.state.epoch),
            iteration=int(engine.state.iteration),
            **self.metadata,
        )
