"""Epoch and iteration schedules of Adam-v2: the coarse-to-fine level, the weight decay, ``set_epoch`` targets.

Adam-v2 (``shared/papers/adam-v2.txt``; methods.md section 3) samples its wholes at levels m = 0, 1, 2 in turn,
each for a number of epochs (a list of (level, epochs)), and follows DINO's weight-decay schedule (cosine from
0.04 to 0.4 over all iterations, biases and 1-D parameters excluded). Every value here is a pure function of
``engine.state.epoch`` / ``engine.state.iteration`` and the run length, so a resumed run is exact without any
handler state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from .ema import cosine_schedule, run_iterations

__all__ = ["LevelSchedule", "SetEpoch", "WeightDecaySchedule", "find_level_transform", "parse_level_schedule"]


def parse_level_schedule(schedule: Iterable[Sequence[int]]) -> list[tuple[int, int]]:
    """Check a level schedule: a list of ``(level, epochs)`` pairs, level >= 0, epochs >= 1.

    Args:
        schedule: e.g. ``[(0, 1), (1, 1), (2, 1)]`` (the JSON ``[[0, 1], [1, 1], [2, 1]]`` too).

    Returns:
        The pairs as ``(int, int)`` tuples.

    Raises:
        ValueError: naming the config id ``level_schedule`` and the bad entry.
    """
    try:
        entries = list(schedule)
    except TypeError as err:
        raise ValueError(f"level_schedule must be a list of (level, epochs) pairs, got {schedule!r}") from err
    if not entries:
        raise ValueError("level_schedule is empty: give at least one (level, epochs) pair, e.g. [[0, 1]]")
    pairs = []
    for index, entry in enumerate(entries):
        ok = isinstance(entry, (list, tuple)) and len(entry) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in entry)
        if not ok or entry[0] < 0 or entry[1] < 1:
            raise ValueError(
                f"level_schedule entry {index} is {entry!r}: each entry must be a pair [level, epochs] of integers "
                f"with level >= 0 and epochs >= 1 (got level_schedule = {entries!r})"
            )
        pairs.append((int(entry[0]), int(entry[1])))
    return pairs


def find_level_transform(target: Any) -> Any:
    """The first object with a ``level`` attribute in ``target``.

    ``target`` may be the transform itself, a ``Compose`` (searched in order, nested ones too), a list of
    transforms, a dataset (its ``transform``) or a DataLoader (its ``dataset``).

    Raises:
        ValueError: when no such transform is found (naming ``level_schedule`` and the types searched).
    """
    seen: list[str] = []
    visited: set[int] = set()

    def search(obj: Any) -> Any:
        if obj is None or id(obj) in visited:
            return None
        visited.add(id(obj))
        seen.append(type(obj).__name__)
        if hasattr(obj, "level") and not isinstance(obj, (list, tuple)):
            return obj
        if isinstance(obj, (list, tuple)):
            children: Iterable[Any] = obj
        elif hasattr(obj, "transforms"):
            children = obj.transforms
        elif hasattr(obj, "dataset"):
            children = [obj.dataset]
        elif hasattr(obj, "transform"):
            children = [obj.transform]
        else:
            return None
        for child in children:
            found = search(child)
            if found is not None:
                return found
        return None

    found = search(target)
    if found is None:
        raise ValueError(
            f"level_schedule: no transform with a 'level' attribute in {type(target).__name__} (searched "
            f"{seen[:12]}); give the level transform (e.g. AdamV2Viewsd) or the Compose holding it"
        )
    return found


class LevelSchedule:
    """Set the coarse-to-fine level of the Adam-v2 view transform at the start of every epoch.

    ``schedule`` is a list of ``(level, epochs)``: ``[(0, 1), (1, 1), (2, 1)]`` trains one epoch at each of the
    levels 0, 1, 2 in turn. At ``Events.EPOCH_STARTED`` it sets ``transform.level`` to the level of
    ``engine.state.epoch`` (1-based), records it in ``engine.state.level`` and, given a writer, writes it to
    TensorBoard at the first iteration of the epoch (beside the per-iteration loss terms). Ignite creates the
    DataLoader iterator (and its worker processes) after ``EPOCH_STARTED``, so the epoch's batches use the new
    level; DataLoader workers kept alive across epochs (``persistent_workers``) would keep a copy of the old
    transform, so such a loader is refused.

    Args:
        transform: the transform with a ``level`` attribute, or a ``Compose`` / list / dataset / DataLoader
            holding it (the first one found is used).
        schedule: the ``(level, epochs)`` pairs; together they must cover exactly ``max_epochs`` epochs.
        summary_writer: optional ``SummaryWriter``.
        tag: TensorBoard scalar tag.

    Raises:
        ValueError: on a malformed schedule or no level transform (naming ``level_schedule``); at attach and
            at the start of the run when the schedule does not cover ``max_epochs`` (naming ``level_schedule``
            and ``epochs`` with both numbers); when the engine's DataLoader has persistent workers.

    Example:
        >>> class Views:
        ...     level = 0
        >>> views = Views()
        >>> engine = Engine(lambda e, b: views.level)
        >>> LevelSchedule(views, [(0, 1), (1, 2)]).attach(engine)
        >>> levels = []
        >>> _ = engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: levels.append(e.state.output))
        >>> _ = engine.run([0, 1], max_epochs=3)
        >>> levels
        [0, 1, 1]
    """

    def __init__(
        self,
        transform: Any,
        schedule: Iterable[Sequence[int]] = ((0, 1), (1, 1), (2, 1)),
        summary_writer: Any = None,
        tag: str = "adamv2/level",
    ) -> None:
        self.schedule = parse_level_schedule(schedule)
        self.transform = find_level_transform(transform)
        self.writer = summary_writer
        self.tag = tag

    @property
    def epochs(self) -> int:
        """Number of epochs the schedule covers."""
        return sum(epochs for _, epochs in self.schedule)

    def level_at(self, epoch: int) -> int:
        """The level of 1-based ``epoch``.

        Raises:
            ValueError: when ``epoch`` is outside 1..``self.epochs``.
        """
        if not 1 <= int(epoch) <= self.epochs:
            raise ValueError(
                f"level_schedule {self.schedule} covers epochs 1..{self.epochs}, not epoch {epoch}: make its "
                "epochs add up to the epochs id"
            )
        end = 0
        for level, epochs in self.schedule:
            end += epochs
            if int(epoch) <= end:
                return level
        raise AssertionError("unreachable: epoch is within the schedule")

    def check(self, engine: Engine) -> None:
        """Refuse a schedule that does not cover the engine's ``max_epochs`` or a persistent-worker loader.

        Raises:
            ValueError: naming ``level_schedule`` and ``epochs`` with both numbers, or ``persistent_workers``.
        """
        max_epochs = engine.state.max_epochs
        if max_epochs is not None and int(max_epochs) != self.epochs:
            raise ValueError(
                f"level_schedule {[list(p) for p in self.schedule]} covers {self.epochs} epochs but epochs is "
                f"{max_epochs}: make the epochs of level_schedule add up to epochs"
            )
        loader = getattr(engine, "data_loader", None) or getattr(engine.state, "dataloader", None)
        if getattr(loader, "persistent_workers", False) and int(getattr(loader, "num_workers", 0) or 0) > 0:
            raise ValueError(
                "level_schedule: the training DataLoader has persistent_workers=True, so its workers would keep "
                "the level of the first epoch; set persistent_workers to false in the train DataLoader"
            )

    def attach(self, engine: Engine) -> None:
        """Check the schedule against ``engine`` and register it at ``STARTED`` and ``EPOCH_STARTED``."""
        self.check(engine)
        engine.add_event_handler(Events.STARTED, self.check)
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Set the level of the epoch that starts."""
        level = self.level_at(engine.state.epoch)
        self.transform.level = level
        engine.state.level = level
        if self.writer is not None:
            self.writer.add_scalar(self.tag, level, int(engine.state.iteration) + 1)


class WeightDecaySchedule:
    """Cosine weight-decay schedule over all iterations of the run (DINO / Adam-v2: 0.04 -> 0.4).

    At ``Events.ITERATION_STARTED`` it sets ``weight_decay`` of every optimiser parameter group whose
    weight decay was non-zero when the handler was built to ``cosine_schedule(start, end, i, T)``, with
    ``i = iteration - 1`` and ``T = max_epochs * epoch_length``. Groups built with weight decay 0 (biases and
    1-D parameters, e.g. the second group of :func:`modan_monai.optimizers.lars_param_groups`) stay at 0. The
    value goes to ``engine.state.weight_decay`` and, given a writer, to TensorBoard at the iteration.

    Args:
        optimizer: the optimiser (built before any checkpoint is loaded into it).
        start: weight decay at the first iteration.
        end: weight decay at the end of the run.
        summary_writer: optional ``SummaryWriter``.
        tag: TensorBoard scalar tag.

    Raises:
        ValueError: when ``start`` or ``end`` is negative, or no parameter group has a non-zero weight decay.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.AdamW([{"params": [net.weight]}, {"params": [net.bias], "weight_decay": 0.0}])
        >>> engine = Engine(lambda e, b: [g["weight_decay"] for g in opt.param_groups])
        >>> WeightDecaySchedule(opt).attach(engine)
        >>> engine.run([0] * 2, max_epochs=1).output == [cosine_schedule(0.04, 0.4, 1, 2), 0.0]
        True
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        start: float = 0.04,
        end: float = 0.4,
        summary_writer: Any = None,
        tag: str = "adamv2/weight_decay",
    ) -> None:
        if float(start) < 0 or float(end) < 0:
            raise ValueError(f"WeightDecaySchedule: weight decays must be >= 0, got start={start}, end={end}")
        self.optimizer = optimizer
        self.start = float(start)
        self.end = float(end)
        self.groups = [i for i, g in enumerate(optimizer.param_groups) if float(g.get("weight_decay", 0.0)) != 0.0]
        if not self.groups:
            raise ValueError(
                f"WeightDecaySchedule: none of the {len(optimizer.param_groups)} parameter groups of "
                f"{type(optimizer).__name__} has a non-zero weight_decay, so the schedule would change nothing: "
                "give the optimiser's decayed group a non-zero weight_decay"
            )
        self.writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Register the schedule at ``Events.ITERATION_STARTED``."""
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def value(self, engine: Engine) -> float:
        """The weight decay of the current iteration of ``engine``."""
        return cosine_schedule(self.start, self.end, int(engine.state.iteration) - 1, run_iterations(engine))

    def __call__(self, engine: Engine) -> None:
        """Set the weight decay of this iteration."""
        value = self.value(engine)
        for index in self.groups:
            self.optimizer.param_groups[index]["weight_decay"] = value
        engine.state.weight_decay = value
        if self.writer is not None:
            self.writer.add_scalar(self.tag, value, engine.state.iteration)


class SetEpoch:
    """Call ``target.set_epoch(engine.state.epoch - 1)`` on each target at every ``Events.EPOCH_STARTED``.

    0-based like ``DistributedSampler.set_epoch``; e.g. ``DINOLoss.set_epoch`` selects the teacher temperature
    of its warm-up. Depends on the epoch only, so resume is exact.

    Args:
        targets: a sequence of objects with a ``set_epoch(epoch: int)`` method (a list, so that a bundle config
            can pass it as the ``targets`` keyword).

    Raises:
        TypeError: when a target has no ``set_epoch`` method (naming its type).
    """

    def __init__(self, targets: Sequence[Any]) -> None:
        bad = [type(t).__name__ for t in targets if not callable(getattr(t, "set_epoch", None))]
        if bad:
            raise TypeError(f"SetEpoch: {bad} have no set_epoch(epoch) method")
        self.targets = list(targets)

    def attach(self, engine: Engine) -> None:
        """Register the call at ``Events.EPOCH_STARTED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Tell every target the 0-based epoch that starts."""
        for target in self.targets:
            target.set_epoch(int(engine.state.epoch) - 1)
