"""Validation during training that leaves every random state as it found it (exact resume)."""

from __future__ import annotations

from ignite.engine import Engine
from monai.engines import Evaluator
from monai.handlers import ValidationHandler

from modan_monai.utils import preserved_rng_state

__all__ = ["RngPreservingValidationHandler"]


class RngPreservingValidationHandler(ValidationHandler):
    """MONAI's ``ValidationHandler`` run inside :func:`modan_monai.utils.preserved_rng_state`.

    A validation draws from the global torch generator (each DataLoader iterator draws its base
    seed) and advances the validation transforms' own states. Run through this handler it changes
    neither the training run's random states nor, with ``preserve_validator_states``, those of
    the validation DataLoader, so random validation transforms repeat at every validation and a
    resumed run validates as the uninterrupted one did (this matters most for a validation at start,
    ``exec_at_start``, which in a resumed run comes after the random states were restored).

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
        with preserved_rng_state(*objects):
            super().__call__(engine)
