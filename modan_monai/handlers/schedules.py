"""Per-epoch and per-iteration schedules of Adam-v2: the coarse-to-fine level, the weight decay, ``set_epoch``.

Each value is a pure function of ``engine.state`` (epoch, iteration, max_epochs, epoch_length), so a run resumed
from a checkpoint sees the same values as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from .ema import _total_iterations, cosine_schedule

__all__ = ["LevelSchedule", "SetEpoch", "WeightDecaySchedule", "find_level_transform", "level_at_epoch"]


def _check_schedule(schedule: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    out = []
    for i, entry in enumerate(schedule):
        if not (isinstance(entry, Sequence) and len(entry) == 2):
            raise ValueError(f"level_schedule[{i}] must be a (level, epochs) pair, got {entry!r}.")
        level, epochs = int(entry[0]), int(entry[1])
        if level < 0 or epochs < 1:
            raise ValueError(f"level_schedule[{i}] = {list(entry)}: the level must be >= 0 and the epochs >= 1.")
        out.append((level, epochs))
    if not out:
        raise ValueError("level_schedule is empty; give at least one (level, epochs) pair, e.g. [[0, 1]].")
    return out


def level_at_epoch(schedule: Sequence[Sequence[int]], epoch: int) -> int:
    """The level of 1-based ``epoch`` in a ``[(level, epochs), ...]`` schedule (coarse to fine).

    Raises:
        ValueError: when the schedule ends before ``epoch``.
    """
    done = 0
    for level, epochs in _check_schedule(schedule):
        done += epochs
        if epoch <= done:
            return level
    raise ValueError(f"level_schedule covers {done} epochs; epoch {epoch} has no level.")


def find_level_transform(transform: Any) -> Any:
    """``transform`` itself when it has a ``level`` attribute, else the first such transform of a Compose or list."""
    if hasattr(transform, "level"):
        return transform
    items = getattr(transform, "transforms", transform)
    if isinstance(items, Iterable):
        for item in items:
            if hasattr(item, "level"):
                return item
    raise ValueError(f"LevelSchedule: {type(transform).__name__} has no transform with a 'level' attribute.")


class LevelSchedule:
    """Set the anchor level of the view transform at the start of each epoch (Adam-v2's coarse-to-fine wholes).

    Args:
        transform: :class:`~modan_monai.transforms.AdamV2Viewsd` (or a Compose/list holding it). The DataLoader
            iterator of an epoch is created after ``EPOCH_STARTED``, so the new level applies to that whole epoch
            (with ``num_workers > 0`` too, unless ``persistent_workers``).
        schedule: ``[(level, epochs), ...]`` (the bundle's ``level_schedule``); it must cover exactly ``max_epochs``.
        summary_writer: TensorBoard writer; the level is written every epoch under ``tag``.
        tag: TensorBoard tag.
    """

    def __init__(self, transform: Any, schedule: Sequence[Sequence[int]], summary_writer: Any = None,
                 tag: str = "adamv2/level") -> None:
        self.schedule = _check_schedule(schedule)
        self.transform = find_level_transform(transform)
        self.summary_writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Check the schedule at ``STARTED`` and set the level at every ``EPOCH_STARTED``."""
        engine.add_event_handler(Events.STARTED, self.check)
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def check(self, engine: Engine) -> None:
        """Raise when the schedule does not cover exactly the run's epochs."""
        covered = sum(e for _, e in self.schedule)
        if covered != int(engine.state.max_epochs):
            raise ValueError(
                f"config: level_schedule {[list(s) for s in self.schedule]} covers {covered} epochs but epochs is "
                f"{engine.state.max_epochs}; make the epochs of level_schedule add up to epochs (the default epochs "
                "is their sum)."
            )

    def __call__(self, engine: Engine) -> None:
        level = level_at_epoch(self.schedule, int(engine.state.epoch))
        self.transform.level = level
        if self.summary_writer is not None:
            self.summary_writer.add_scalar(self.tag, level, engine.state.epoch)


class WeightDecaySchedule:
    """Cosine weight decay from ``start`` to ``end`` over all iterations (Adam-v2/DINO: 0.04 -> 0.4).

    Only the param groups created with a non-zero weight decay are scheduled; groups with 0 (biases and 1-D
    parameters, see :func:`modan_monai.optimizers.lars_param_groups`) stay at 0.

    Args:
        optimizer: the optimiser.
        start: weight decay at the first iteration.
        end: weight decay approached at the last iteration.
        summary_writer: TensorBoard writer; the value is written every iteration under ``tag``.
        tag: TensorBoard tag.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, start: float = 0.04, end: float = 0.4,
                 summary_writer: Any = None, tag: str = "adamv2/weight_decay") -> None:
        self.optimizer = optimizer
        self.groups = [g for g in optimizer.param_groups if float(g.get("weight_decay", 0.0)) != 0.0]
        self.start, self.end = float(start), float(end)
        self.summary_writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Run at every ``ITERATION_STARTED``."""
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        value = cosine_schedule(self.start, self.end, int(engine.state.iteration) - 1, _total_iterations(engine))
        for group in self.groups:
            group["weight_decay"] = value
        if self.summary_writer is not None:
            self.summary_writer.add_scalar(self.tag, value, engine.state.iteration)


class SetEpoch:
    """Call ``target.set_epoch(epoch)`` (0-based, like ``DistributedSampler.set_epoch``) at every ``EPOCH_STARTED``.

    Args:
        targets: objects with ``set_epoch(int)`` (e.g. :class:`~modan_monai.losses.AdamV2Loss` for the teacher
            temperature warm-up).
    """

    def __init__(self, targets: Sequence[Any]) -> None:
        missing = [type(t).__name__ for t in targets if not callable(getattr(t, "set_epoch", None))]
        if missing:
            raise ValueError(f"SetEpoch: {missing} have no set_epoch(epoch).")
        self.targets = list(targets)

    def attach(self, engine: Engine) -> None:
        """Run at every ``EPOCH_STARTED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        for target in self.targets:
            target.set_epoch(int(engine.state.epoch) - 1)
