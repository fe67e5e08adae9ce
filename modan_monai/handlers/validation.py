"""Validation during training that leaves every random state as it found it (exact resume)."""

from __future__ import annotations

import logging

from ignite.engine import Engine
from monai.engines import Evaluator
from monai.handlers import ValidationHandler

from modan_monai.utils import preserved_rng_state

__all__ = ["EvaluatorResumeLineFilter", "RngPreservingValidationHandler", "quiet_evaluator_resume_line"]


class EvaluatorResumeLineFilter(logging.Filter):
    """Drops ignite's ``Engine run resuming from iteration 0, epoch N until N+1 epochs`` line of an evaluator.

    MONAI's ``Evaluator.run(global_epoch)`` sets the engine's state to epoch ``global_epoch - 1`` before each run,
    so ignite logs every validation (and a standalone evaluation, epoch 0) as a resumed run. Installed on an
    evaluator's logger only (:func:`quiet_evaluator_resume_line`): a trainer's own resume line is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """``False`` (drop) for ignite's resume line at iteration 0, ``True`` for every other record."""
        return not str(record.msg).startswith("Engine run resuming from iteration 0,")


def quiet_evaluator_resume_line(evaluator: Engine) -> Engine:
    """Install :class:`EvaluatorResumeLineFilter` on ``evaluator.logger`` (once) and return ``evaluator``.

    Args:
        evaluator: a MONAI evaluator (its logger is shared by every engine of its class, e.g.
            ``ignite.engine.engine.SupervisedEvaluator``).

    Returns:
        ``evaluator`` itself, so that a bundle's ``run`` can read ``$quiet_evaluator_resume_line(@evaluator).run()``.

    Example:
        >>> import torch
        >>> from monai.engines import SupervisedEvaluator
        >>> evaluator = quiet_evaluator_resume_line(SupervisedEvaluator("cpu", [0], network=torch.nn.Identity()))
        >>> any(isinstance(f, EvaluatorResumeLineFilter) for f in evaluator.logger.filters)
        True
    """
    if not any(isinstance(f, EvaluatorResumeLineFilter) for f in evaluator.logger.filters):
        evaluator.logger.addFilter(EvaluatorResumeLineFilter())
    return evaluator


class RngPreservingValidationHandler(ValidationHandler):
    """MONAI's ``ValidationHandler`` run inside :func:`modan_monai.utils.preserved_rng_state`.

    A validation draws from the global torch generator (each DataLoader iterator draws its base
    seed) and advances the validation transforms' own states. Run through this handler it changes
    neither the training run's random states nor, with ``preserve_validator_states``, those of
    the validation DataLoader, so random validation transforms repeat at every validation and a
    resumed run validates as the uninterrupted one did (this matters most for a validation at start,
    ``exec_at_start``, which in a resumed run comes after the random states were restored). The validator's
    ignite "Engine run resuming from iteration 0" line is dropped (:func:`quiet_evaluator_resume_line`).

    Args:
        interval: validate every N epochs (or iterations with ``epoch_level=False``).
        validator: the evaluator.
        epoch_level: epoch-level (``True``) or iteration-level interval.
        exec_at_start: also validate when training starts.
        preserve_validator_states: also restore the validation DataLoader's generators and transform
            states after each validation.

    Example:
        >>> handler = RngPreservingValidationHandler(interval=1)  # then set_validator(evaluator)
    """

    def __init__(
        self,
        interval: int,
        validator: Evaluator | None = None,
        epoch_level: bool = True,
        exec_at_start: bool = False,
        preserve_validator_states: bool = True,
    ) -> None:
        super().__init__(interval=interval, validator=validator, epoch_level=epoch_level, exec_at_start=exec_at_start)
        self.preserve_validator_states = preserve_validator_states

    def __call__(self, engine: Engine) -> None:
        """Run the validator on ``engine``'s epoch, restoring all random states afterwards."""
        loader = getattr(self.validator, "data_loader", None)
        objects = [loader] if self.preserve_validator_states and loader is not None else []
        if self.validator is not None:
            quiet_evaluator_resume_line(self.validator)
        with preserved_rng_state(*objects):
            super().__call__(engine)
