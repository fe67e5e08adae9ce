"""A warning when the DINO (localizability) loss sits at ln K: the head's outputs have collapsed to uniform."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events

__all__ = ["CollapseMonitor"]

logger = logging.getLogger("modan_monai.handlers.collapse")


class CollapseMonitor:
    """Warn after an epoch in which ``term`` stayed within ``tolerance`` (relative) of ``reference_term`` throughout.

    Adam-v2 / DINO collapse signature (methods.md §3): a uniform student distribution gives L_loc = ln K whatever
    the teacher does.

    Args:
        term: loss term to watch (``"loc"``).
        reference_term: loss term holding the reference value (``"ln_K"``).
        tolerance: relative tolerance (0.01: within 1 %).
        key: key of the terms in ``engine.state.output`` (see :class:`~modan_monai.engines.Trainer`).

    Attributes:
        flagged_epochs: epochs that triggered the warning.
    """

    def __init__(self, term: str = "loc", reference_term: str = "ln_K", tolerance: float = 0.01,
                 key: str = "loss_terms") -> None:
        self.term, self.reference_term = term, reference_term
        self.tolerance = float(tolerance)
        self.key = key
        self.flagged_epochs: list[int] = []
        self._near: list[bool] = []
        self._reference = float("nan")

    def attach(self, engine: Engine) -> None:
        """Collect at every iteration, judge at every epoch end."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._judge)

    def _reset(self, engine: Engine) -> None:
        self._near = []

    def _collect(self, engine: Engine) -> None:
        terms = engine.state.output.get(self.key, {}) if isinstance(engine.state.output, dict) else {}
        if self.term not in terms or self.reference_term not in terms:
            raise KeyError(
                f"CollapseMonitor: the loss terms {sorted(terms)} hold no {self.term!r} / {self.reference_term!r}."
            )
        value, reference = float(terms[self.term]), float(terms[self.reference_term])
        self._reference = reference
        self._near.append(abs(value - reference) <= self.tolerance * abs(reference))

    def _judge(self, engine: Engine) -> None:
        if self._near and all(self._near):
            epoch = int(engine.state.epoch)
            self.flagged_epochs.append(epoch)
            logger.warning(
                "L_%s stayed within %.0f%% of ln K = %.4f for all %d iterations of epoch %d: the DINO head is giving "
                "a uniform distribution (collapse). Try a lower teacher temperature, check the centring "
                "(center_momentum), or lower the learning rate.",
                self.term, 100 * self.tolerance, self._reference, len(self._near), epoch,
            )
