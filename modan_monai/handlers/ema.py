"""The EMA teacher update of Adam-v2 / DINO, with the cosine momentum computed from the iteration.

Adam-v2 (``../shared/papers/adam-v2.txt``, methods.md §3 "Networks"): the teacher is an exponential moving average
of the student, ``teacher = m * teacher + (1 - m) * student`` over the parameters, applied after each optimiser
step, with ``m`` following a cosine from 0.996 to 1 over all iterations of the run.

ignite's ``EMAHandler`` does not fit as is: it keeps its own copy of the model (here the teacher is part of the
network, with its own DINO head, and is checkpointed with it), it also averages buffers (the Adam-v2 teacher's
BatchNorm statistics come from its own forwards), and its momentum schedulers are stateful objects outside the
project's checkpoint. Here the momentum is a pure function of ``engine.state.iteration``, so a resumed run gets the
same momenta as an uninterrupted one without storing anything.
"""

from __future__ import annotations

import math
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["EMATeacherUpdate", "cosine_schedule"]


def cosine_schedule(start: float, end: float, step: int, total: int) -> float:
    """DINO's ``cosine_scheduler`` value at 0-based ``step`` of ``total``: ``end + (start - end) (1 + cos(pi step / total)) / 2``.

    Args:
        start: value at step 0.
        end: value approached at step ``total``.
        step: 0-based global iteration.
        total: number of iterations of the whole run (> 0).

    Returns:
        The scheduled value.
    """
    if total <= 0:
        raise ValueError(f"cosine_schedule: total must be > 0, got {total}.")
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * step / total))


def _total_iterations(engine: Engine) -> int:
    return int(engine.state.max_epochs) * int(engine.state.epoch_length)


class EMATeacherUpdate:
    """After every iteration (the optimiser has stepped), move the teacher towards the student.

    Args:
        model: a network with ``update_teacher(momentum)`` (:class:`~modan_monai.networks.AdamV2Model`), or a
            ``DistributedDataParallel`` wrapping one.
        momentum_start: momentum at the first iteration (0.996).
        momentum_end: momentum approached at the last iteration (1.0).
        summary_writer: TensorBoard writer; the momentum is written every iteration under ``tag``.
        tag: TensorBoard tag.

    The momentum used at iteration ``i`` (0-based, ``engine.state.iteration - 1``) is
    :func:`cosine_schedule` ``(momentum_start, momentum_end, i, max_epochs * epoch_length)``; it is also left in
    ``engine.state.ema_momentum``.
    """

    def __init__(
        self, model: Any, momentum_start: float = 0.996, momentum_end: float = 1.0, summary_writer: Any = None,
        tag: str = "adamv2/ema_momentum",
    ) -> None:
        for name, value in (("momentum_start", momentum_start), ("momentum_end", momentum_end)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"EMATeacherUpdate: {name} must be in [0, 1], got {value}.")
        model = getattr(model, "module", model)
        if not callable(getattr(model, "update_teacher", None)):
            raise ValueError(f"EMATeacherUpdate: {type(model).__name__} has no update_teacher(momentum).")
        self.model = model
        self.momentum_start = float(momentum_start)
        self.momentum_end = float(momentum_end)
        self.summary_writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Run after each iteration (MONAI's step happens inside the iteration)."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def momentum(self, iteration: int, total: int) -> float:
        """Momentum after the optimiser step of 1-based ``iteration`` of ``total``."""
        return cosine_schedule(self.momentum_start, self.momentum_end, iteration - 1, total)

    def __call__(self, engine: Engine) -> None:
        m = self.momentum(int(engine.state.iteration), _total_iterations(engine))
        self.model.update_teacher(m)
        engine.state.ema_momentum = m
        if self.summary_writer is not None:
            self.summary_writer.add_scalar(self.tag, m, engine.state.iteration)
