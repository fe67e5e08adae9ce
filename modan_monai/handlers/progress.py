"""A console progress line (epoch, iteration, loss, elapsed and remaining time)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import from_engine

__all__ = ["ProgressPrinter"]


class ProgressPrinter:
    """Log ``epoch e/E  iter i/I  loss x  elapsed  ~left`` every ``interval`` iterations.

    A plain logging line (not a terminal progress bar) so that it reads the same in a console,
    a log file and CI. MONAI's ``StatsHandler`` prints the loss terms but no remaining time, and ignite's
    ``ProgressBar`` is a tqdm bar that does not read well in log files, hence this handler. The remaining time is the mean time per iteration so far times the
    iterations left in the run.

    Args:
        interval: iterations between lines (the last iteration of an epoch is always shown).
        output_transform: maps ``engine.state.output`` to the loss value.
        name: logger name.
    """

    #: under torchrun only rank 0 runs it (see modan_monai.engines.rank_zero_handlers)
    rank_zero_only = True

    def __init__(
        self,
        interval: int = 10,
        output_transform: Callable[[Any], Any] = from_engine(["loss"], first=True),
        name: str = "modan_monai.progress",
    ) -> None:
        self.interval = max(1, int(interval))
        self.output_transform = output_transform
        self.logger = logging.getLogger(name)
        self._start = 0.0
        self._start_iteration = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self._start_iteration = engine.state.iteration

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        per_epoch = state.epoch_length or 0
        in_epoch = (state.iteration - 1) % per_epoch + 1 if per_epoch else state.iteration
        if in_epoch % self.interval and in_epoch != per_epoch:
            return
        done = state.iteration - self._start_iteration
        elapsed = time.perf_counter() - self._start
        total = (state.max_epochs or 0) * per_epoch
        left = elapsed / max(done, 1) * max(total - state.iteration, 0)
        loss = self.output_transform(state.output)
        if isinstance(loss, (list, tuple)):  # ``from_engine(keys)`` returns one value per key
            loss = loss[0]
        loss = float(loss.item() if hasattr(loss, "item") else loss)
        self.logger.info(
            f"epoch {state.epoch}/{state.max_epochs}  iter {in_epoch}/{per_epoch}  loss {loss:.4f}  "
            f"elapsed {elapsed:.0f}s  ~{left:.0f}s left"
        )
