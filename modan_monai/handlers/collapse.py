"""Warn when the DINO localizability loss sits at ln K for a whole epoch (collapse to a uniform output).

With a uniform student distribution over the K prototypes, the DINO cross-entropy equals ln K for any teacher
distribution (methods.md section 3: "Collapse signature: L_loc stuck at ln K"). :class:`CollapseMonitor` reads
the named loss terms the :class:`~modan_monai.engines.Trainer` puts in ``engine.state.output["loss_terms"]``
(``AdamV2Loss`` returns ``"loc"`` and the constant ``"ln_K"``) and logs a warning at the end of an epoch in
which every iteration's term stayed within the tolerance of the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["CollapseMonitor"]


def _label(term: str) -> str:
    return {"loc": "L_loc", "ln_K": "ln K"}.get(term, term)


class CollapseMonitor:
    """Log a ``logging.WARNING`` when ``term`` stays within ``tolerance`` (relative) of ``reference_term``
    for every iteration of an epoch.

    Each iteration it reads ``engine.state.output[key][term]`` and ``[reference_term]`` and checks
    ``|term - reference| <= tolerance * |reference|``; at ``Events.EPOCH_COMPLETED``, when that held for all
    the iterations of the epoch, it warns on the ``modan_monai`` logger that the DINO head is outputting a
    uniform distribution, with what to try, and appends the epoch to :attr:`flagged_epochs`. The per-epoch
    tally restarts at every ``EPOCH_STARTED``, so resume at an epoch boundary is exact.

    Args:
        term: the loss term watched (``"loc"``, L_loc).
        reference_term: the term holding the collapse value (``"ln_K"``).
        tolerance: relative tolerance (0.01: within 1 %).
        key: key of the loss terms in ``engine.state.output``.
        name: logger name.

    Attributes:
        flagged_epochs: the 1-based epochs warned about.

    Raises:
        ValueError: when ``tolerance`` is negative.
        KeyError: during the run, when the loss terms lack ``term`` or ``reference_term`` (naming the terms
            there).
    """

    def __init__(
        self,
        term: str = "loc",
        reference_term: str = "ln_K",
        tolerance: float = 0.01,
        key: str = "loss_terms",
        name: str = "modan_monai",
    ) -> None:
        if float(tolerance) < 0:
            raise ValueError(f"CollapseMonitor: tolerance must be >= 0, got {tolerance}")
        self.term = term
        self.reference_term = reference_term
        self.tolerance = float(tolerance)
        self.key = key
        self.logger = logging.getLogger(name)
        self.flagged_epochs: list[int] = []
        self._count = 0
        self._all_within = True
        self._reference = 0.0

    def attach(self, engine: Engine) -> None:
        """Register the monitor at ``EPOCH_STARTED``, ``ITERATION_COMPLETED`` and ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._check)

    def _reset(self, engine: Engine) -> None:
        self._count = 0
        self._all_within = True

    def _terms(self, engine: Engine) -> Mapping[str, Any]:
        output = engine.state.output
        terms = output.get(self.key) if isinstance(output, Mapping) else None
        if not isinstance(terms, Mapping):
            raise KeyError(
                f"CollapseMonitor: engine.state.output has no {self.key!r} mapping of loss terms (run it on "
                "modan_monai.engines.Trainer with a loss returning named terms)"
            )
        missing = [t for t in (self.term, self.reference_term) if t not in terms]
        if missing:
            raise KeyError(f"CollapseMonitor: the loss terms {sorted(terms)} lack {missing}")
        return terms

    def _collect(self, engine: Engine) -> None:
        terms = self._terms(engine)
        value = float(terms[self.term])
        reference = float(terms[self.reference_term])
        self._count += 1
        self._reference = reference
        if abs(value - reference) > self.tolerance * abs(reference):
            self._all_within = False

    def _check(self, engine: Engine) -> None:
        if not self._count or not self._all_within:
            return
        epoch = int(engine.state.epoch)
        self.flagged_epochs.append(epoch)
        self.logger.warning(
            f"{_label(self.term)} has stayed within {self.tolerance:.0%} of {_label(self.reference_term)} = "
            f"{self._reference:.4f} for all {self._count} iterations of epoch {epoch}: the DINO head is outputting "
            "a uniform distribution (collapse). Try a lower teacher temperature (teacher_temp), check the centring "
            "(center_momentum, the centre buffer of DINOLoss), or lower the learning rate."
        )
