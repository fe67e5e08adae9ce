"""The one training engine of the project: MONAI's ``SupervisedTrainer`` with named loss terms and a non-finite stop.

Every training bundle (the pretraining methods, the classify and segment bundles) runs :class:`Trainer`. It adds
two things to ``monai.engines.SupervisedTrainer`` and changes nothing else (AMP, gradient accumulation, handlers,
``prepare_batch``, ``inferer`` behave as in MONAI):

- the loss function may return a tensor or a mapping ``{"loss": total, "<term>": tensor, ...}``; the total goes
  to ``engine.state.output["loss"]`` (what the optimiser steps on, as in MONAI) and every term, detached, to
  ``engine.state.output["loss_terms"]`` (always holding ``"loss"``), so MONAI's ``StatsHandler`` and
  ``TensorBoardStatsHandler`` log them with ``output_transform=lambda out: out["loss_terms"]``;
- a non-finite term stops the run with a ``FloatingPointError`` that names the term, the epoch and iteration
  and the files of the batch (the ``source`` strings that :func:`modan_monai.data.manifest_to_datalist` puts in
  every row), before the optimiser step, so no NaN model is ever written;
- Ctrl-C or SIGTERM (:func:`~modan_monai.utils.interrupt.sigterm_as_interrupt` is active while it runs) stops it
  with a :class:`~modan_monai.utils.interrupt.RunInterrupted` naming the epoch, the iteration and the newest
  checkpoint, without the handlers' tracebacks; the error hook prints it as one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.engines import SupervisedTrainer

from modan_monai.utils.interrupt import RunInterrupted, sigterm_as_interrupt

from .precision import PrecisionInferer, autocast_dtype, device_type, to_float32

__all__ = ["Trainer", "batch_sources"]

_MAX_SOURCES = 8


def batch_sources(batch: Any, key: str = "source", limit: int = _MAX_SOURCES) -> list[str]:
    """The ``source`` strings of a collated (dict) or decollated (list of dicts) batch, at most ``limit``."""
    if isinstance(batch, Mapping):
        values = batch.get(key)
        values = [values] if isinstance(values, str) else list(values or [])
    elif isinstance(batch, (list, tuple)):
        values = [item.get(key) for item in batch if isinstance(item, Mapping) and item.get(key) is not None]
    else:
        values = []
    return [str(v) for v in values[:limit]]


class Trainer(SupervisedTrainer):
    """``monai.engines.SupervisedTrainer`` whose loss may return named terms, stopping on a non-finite one.

    Args:
        loss_function: ``loss_function(pred, target)`` returning a tensor (reduced with ``.mean()`` as in MONAI)
            or a mapping with a ``"loss"`` entry (the total) and any further named terms.
        terms_key: key of the detached terms in ``engine.state.output``.
        source_key: batch key holding the files of each item (named in the non-finite error).
        check_finite: raise on a non-finite term (default True).
        precision: mixed precision of the network's forward, ``bf16`` / ``fp16`` / ``None`` (float32), on CPU and
            CUDA (see :mod:`modan_monai.engines.precision`); fp16 on CUDA uses MONAI's autocast and gradient
            scaler. The loss always runs in float32 on float32 predictions.
        channels_last: give the network its 4-D inputs in ``channels_last`` layout (put the network in that
            layout too: ``network.to(memory_format=torch.channels_last)``).
        kwargs: every other argument of ``monai.engines.SupervisedTrainer`` (``device``, ``max_epochs``,
            ``train_data_loader``, ``network``, ``optimizer``, ``prepare_batch``, ``train_handlers``...).

    Raises:
        ValueError: at ``run()``, when the training DataLoader yields no batch (MONAI only warns and returns).
        KeyError: when the loss returns a mapping without ``"loss"``.
        FloatingPointError: when a loss term is NaN or infinite (names the term, epoch, iteration and files).

    Example:
        >>> import torch
        >>> from monai.data import DataLoader
        >>> net = torch.nn.Linear(2, 1)
        >>> loss = lambda pred, target: {"loss": pred.pow(2).mean(), "abs": pred.abs().mean()}
        >>> data = [{"image": torch.ones(2), "label": torch.zeros(1)}] * 4
        >>> trainer = Trainer(device="cpu", max_epochs=1, train_data_loader=DataLoader(data, batch_size=2),
        ...                   network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        ...                   loss_function=loss, decollate=False)
        >>> trainer.run()
        >>> sorted(trainer.state.output["loss_terms"])
        ['abs', 'loss']
    """

    def __init__(
        self,
        *,
        loss_function: Callable[..., torch.Tensor | Mapping[str, torch.Tensor]],
        terms_key: str = "loss_terms",
        source_key: str = "source",
        check_finite: bool = True,
        precision: str | None = None,
        channels_last: bool = False,
        **kwargs: Any,
    ) -> None:
        self.terms_loss_function = loss_function
        self.terms_key = terms_key
        self.source_key = source_key
        self.check_finite = bool(check_finite)
        dtype = autocast_dtype(precision)
        if dtype is torch.float16 and torch.device(kwargs.get("device", "cpu")).type == "cuda":
            kwargs.update(amp=True, amp_kwargs={**(kwargs.get("amp_kwargs") or {}), "dtype": torch.float16})
            precision = None  # MONAI autocasts; the wrapper below keeps only the layout
        if precision is not None or channels_last:
            kwargs["inferer"] = PrecisionInferer(kwargs.get("inferer"), precision, channels_last)
        super().__init__(loss_function=self._loss_with_terms, **kwargs)

    def run(self) -> None:  # type: ignore[override]
        """Train; unlike MONAI's engine, an empty training DataLoader is an error, not a warning and exit 0.

        Raises:
            ValueError: when the training DataLoader yields no batch (naming its size, batch size and drop_last).
        """
        if self.state.epoch_length == 0:
            loader = self.data_loader
            dataset = getattr(loader, "dataset", None)
            size = len(dataset) if hasattr(dataset, "__len__") else "?"
            raise ValueError(
                f"the training DataLoader yields no batch: {size} items, batch_size "
                f"{getattr(loader, 'batch_size', '?')}, drop_last {getattr(loader, 'drop_last', '?')}. Lower the "
                "batch_size id or add rows to the training split(s) of the manifest; nothing was trained or written."
            )
        with sigterm_as_interrupt():
            try:
                super().run()
            except RunInterrupted:
                raise
            except KeyboardInterrupt:
                raise self._interrupted() from None

    def _handle_exception(self, e: BaseException) -> None:
        # an interrupt is not an error: skip the EXCEPTION_RAISED handlers (MONAI's StatsHandler logs a traceback)
        if isinstance(e, KeyboardInterrupt):
            raise e
        super()._handle_exception(e)

    def _interrupted(self) -> RunInterrupted:
        """The interrupt naming where the run stopped and the newest checkpoint of its checkpoint saver."""
        from modan_monai.handlers.checkpoint import TrainingCheckpointSaver, latest_checkpoint

        savers = [getattr(handler, "__self__", None) for handlers in self._event_handlers.values()
                  for handler, *_ in handlers]
        saver = next((s for s in savers if isinstance(s, TrainingCheckpointSaver)), None)
        newest = latest_checkpoint(saver.save_dir, saver.prefix) if saver is not None else None
        last = str(newest) if newest is not None else (
            "none written yet" if saver is not None else "none (this run writes no training checkpoint)")
        epoch, iteration = int(self.state.epoch), int(self.state.iteration)
        return RunInterrupted(
            f"interrupted at epoch {epoch}, iteration {iteration}; last checkpoint: {last}; run the same command "
            "to resume", epoch=epoch, iteration=iteration, checkpoint=None if newest is None else str(newest),
        )

    def _loss_with_terms(self, pred: Any, target: Any) -> torch.Tensor:
        with torch.autocast(device_type(pred), enabled=False):  # losses stay float32 under any precision
            out = self.terms_loss_function(to_float32(pred), target)
        if isinstance(out, Mapping):
            if "loss" not in out:
                raise KeyError(
                    f"{type(self.terms_loss_function).__name__} returned terms {sorted(out)} without a 'loss' total."
                )
            total = out["loss"]
            terms = {str(k): v for k, v in out.items()}
        else:
            total = out
            terms = {"loss": out}
        terms = {k: torch.as_tensor(v).detach().float().mean() for k, v in terms.items()}
        if isinstance(self.state.output, dict):
            self.state.output[self.terms_key] = terms
        if self.check_finite:
            self._raise_if_not_finite(terms)
        return total

    def _raise_if_not_finite(self, terms: Mapping[str, torch.Tensor]) -> None:
        names = list(terms)
        finite = torch.isfinite(torch.stack([terms[n] for n in names]))
        if bool(finite.all()):
            return
        bad = [n for n, ok in zip(names, finite.tolist()) if not ok]
        first = next((n for n in bad if n != "loss"), bad[0])  # the term that broke, rather than the total
        sources = batch_sources(self.state.batch, self.source_key)
        files = "; ".join(sources) if sources else f"(the batch has no {self.source_key!r} key naming its files)"
        raise FloatingPointError(
            f"loss term {first!r} is {float(terms[first])} at epoch {self.state.epoch}, iteration "
            f"{self.state.iteration} (non-finite terms: {bad}); training stopped before the optimiser step. "
            f"Files of this batch: {files}. Check these images, or lower the learning rate."
        )
