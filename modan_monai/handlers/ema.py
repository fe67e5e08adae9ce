"""EMA teacher update of Adam-v2 / DINO with the cosine momentum schedule, computed from the iteration.

Adam-v2 (``shared/papers/adam-v2.txt``; methods.md section 3) keeps the teacher g_T an exponential moving
average of the student g_S: after every optimiser step, ``teacher = m * teacher + (1 - m) * student``
(parameters only), with m following the DINO / Adam-v2 official ``cosine_scheduler`` from 0.996 to 1 over all
iterations of the run. The momentum is a pure function of the global iteration, so a run resumed from a
checkpoint continues on exactly the same schedule without any handler state.

Why not ignite's ``EMAHandler`` (ignite 0.5, ``ignite/handlers/ema_handler.py``):

- inverted momentum: it computes ``ema = (1 - momentum) * ema + momentum * model`` and refuses a momentum
  outside the open interval (0, 1), so the schedule's end value (teacher weight 1, i.e. ignite momentum 0) is
  rejected, and it schedules only a linear warm-up (``EMAWarmUp``) of that momentum, not a cosine over the run;
- model and buffers: it builds its own ``deepcopy`` (``ema_model``) of the model it is given, whereas the
  Adam-v2 teacher is part of :class:`~modan_monai.networks.AdamV2Model` (backbone and DINO head, saved in the
  network's state dict); its ``handle_buffers`` "copy"/"update" put the EMA model in eval mode and copy or
  average the student's BatchNorm buffers, while the official teacher BatchNorm stays in train mode on its own
  batch statistics (parameters only are averaged);
- checkpoint: its current momentum lives in ``engine.state.ema_momentum`` and, with a schedule, in a
  ``LambdaStateScheduler`` counter; neither is in ``Engine.state_dict()`` (epoch, iteration, epoch_length,
  max_epochs) nor in the project's training checkpoint, so a resumed run would restart the schedule.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ignite.engine import Engine, Events

from .gradients import optimizer_steps_now

__all__ = ["EMATeacherUpdate", "cosine_schedule", "run_iterations"]


def cosine_schedule(start: float, end: float, step: int, total: int) -> float:
    """The DINO / Adam-v2 ``cosine_scheduler`` value at 0-based ``step`` of ``total``.

    ``end + 0.5 * (start - end) * (1 + cos(pi * step / total))``: ``start`` at step 0, the mean of both at
    ``total / 2``, approaching ``end`` at the last step ``total - 1`` (the official schedule divides by the
    number of steps, so it reaches ``end`` only at ``step == total``). Steps beyond ``total`` (a run extended
    past its schedule) stay at ``end``.

    Args:
        start: value at step 0.
        end: value at step ``total``.
        step: 0-based global step (``engine.state.iteration - 1``).
        total: steps of the whole run (``max_epochs * epoch_length``).

    Returns:
        The scheduled value.

    Raises:
        ValueError: when ``total < 1`` or ``step < 0``.

    Example:
        >>> cosine_schedule(0.996, 1.0, 0, 100), cosine_schedule(0.996, 1.0, 50, 100)
        (0.996, 0.998)
    """
    if int(total) < 1:
        raise ValueError(f"cosine_schedule: total must be >= 1 step, got {total}")
    if int(step) < 0:
        raise ValueError(f"cosine_schedule: step must be >= 0, got {step}")
    fraction = min(int(step), int(total)) / int(total)
    return float(end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * fraction)))


def run_iterations(engine: Engine) -> int:
    """``max_epochs * epoch_length`` of ``engine`` (the length T of the per-iteration schedules).

    Raises:
        ValueError: when the engine's ``max_epochs`` or ``epoch_length`` is not known yet.
    """
    max_epochs, epoch_length = engine.state.max_epochs, engine.state.epoch_length
    if not max_epochs or not epoch_length:
        raise ValueError(
            f"the schedule needs the run length: engine.state.max_epochs={max_epochs}, "
            f"epoch_length={epoch_length} (give the trainer max_epochs and a DataLoader with a length)"
        )
    return int(max_epochs) * int(epoch_length)


def _check_momentum(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"EMATeacherUpdate: {name} must be in [0, 1] (teacher weight), got {value}")
    return value


class EMATeacherUpdate:
    """Update the EMA teacher after each optimiser step with the cosine momentum schedule (Adam-v2, DINO).

    At ``Events.ITERATION_COMPLETED`` (MONAI's ``SupervisedTrainer`` steps the optimiser inside the iteration,
    so this runs after the step) it calls ``model.update_teacher(m)`` with
    ``m = cosine_schedule(momentum_start, momentum_end, i, T)``, ``i = engine.state.iteration - 1`` and
    ``T = max_epochs * epoch_length``; ``update_teacher`` does ``teacher = m * teacher + (1 - m) * student`` on
    parameters only (methods.md section 3). The momentum depends on the iteration only, so resume is exact; a
    resumed run given more epochs follows the schedule of the longer run from the resume point on. With
    gradient accumulation the teacher is updated on the iterations that step the optimiser only. The value
    goes to ``engine.state.ema_momentum`` and, given a writer, to TensorBoard at the iteration.

    Args:
        model: the student/teacher model (``update_teacher(momentum)``); a ``DistributedDataParallel`` /
            ``DataParallel`` wrapper is unwrapped.
        momentum_start: teacher weight at the first iteration (0.996 in Adam-v2 / DINO).
        momentum_end: teacher weight at the end of the run (1.0).
        summary_writer: optional ``SummaryWriter`` shared with the other handlers.
        tag: TensorBoard scalar tag.

    Raises:
        TypeError: when ``model`` has no ``update_teacher`` method.
        ValueError: when a momentum is outside [0, 1].

    Example:
        >>> class Toy(torch.nn.Module):
        ...     def update_teacher(self, momentum): self.last = momentum
        >>> engine = Engine(lambda e, b: None)
        >>> toy = Toy()
        >>> EMATeacherUpdate(toy).attach(engine)
        >>> _ = engine.run([0] * 4, max_epochs=1)
        >>> round(toy.last, 6) == round(cosine_schedule(0.996, 1.0, 3, 4), 6)
        True
    """

    def __init__(
        self,
        model: torch.nn.Module,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        summary_writer: Any = None,
        tag: str = "adamv2/ema_momentum",
    ) -> None:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        if not callable(getattr(model, "update_teacher", None)):
            raise TypeError(
                f"EMATeacherUpdate: the model {type(model).__name__} has no update_teacher(momentum) method "
                "(give the student/teacher network, e.g. modan_monai.networks.AdamV2Model)"
            )
        self.model = model
        self.momentum_start = _check_momentum("momentum_start", momentum_start)
        self.momentum_end = _check_momentum("momentum_end", momentum_end)
        self.writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Register the update at ``Events.ITERATION_COMPLETED``."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def momentum(self, engine: Engine) -> float:
        """The teacher momentum of the current iteration of ``engine``."""
        step = int(engine.state.iteration) - 1
        return cosine_schedule(self.momentum_start, self.momentum_end, step, run_iterations(engine))

    def __call__(self, engine: Engine) -> None:
        """Apply the EMA update of this iteration and record the momentum."""
        if not optimizer_steps_now(engine):
            return
        momentum = self.momentum(engine)
        self.model.update_teacher(momentum)
        engine.state.ema_momentum = momentum
        if self.writer is not None:
            self.writer.add_scalar(self.tag, momentum, engine.state.iteration)
