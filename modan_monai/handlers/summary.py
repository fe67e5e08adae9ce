"""The end-of-run summary of a pretraining run: did it learn, where are the outputs, what to run next."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import from_engine

from modan_monai.utils.distributed import is_rank_zero

from .knn import KNNMonitor

__all__ = ["PretrainingSummary", "loss_terms"]


def _scalar(value: Any) -> float:
    if isinstance(value, (list, tuple)):  # ``from_engine(keys)`` returns one value per key
        value = value[0]
    return float(value.item() if hasattr(value, "item") else value)


def loss_terms(output: Any) -> Mapping[str, Any]:
    """The named loss terms of a :class:`~modan_monai.engines.Trainer` output (``output["loss_terms"]``), without
    the total ``"loss"`` (the summary's ``loss``); ``{}`` when the output has none."""
    terms = output.get("loss_terms") if isinstance(output, Mapping) else None
    return {str(k): v for k, v in (terms or {}).items() if k != "loss"}


def _first_last(history: Mapping[int, float], key: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    ordered = sorted(history.items())
    if not ordered:
        return None, None
    return {"epoch": ordered[0][0], key: ordered[0][1]}, {"epoch": ordered[-1][0], key: ordered[-1][1]}


class PretrainingSummary:
    """Log a short summary when training completes and write it as ``summary.json``.

    The summary holds the epoch-mean training loss of the first and the last epoch (mean of
    ``output_transform(engine.state.output)`` over the iterations of an epoch), the same for each named loss
    term (``terms_transform``; for Adam-v2 ``loc``, ``comp``, ``dec`` and the constant ``ln_K`` that ``loc``
    settles at when the teacher collapses), the k-NN and linear-probe accuracy of the first (epoch 0: the encoder
    before training) and the last evaluation of a :class:`KNNMonitor`, the absolute paths of ``encoder.pt`` and
    of the TensorBoard logs, and the commands to run next, e.g.::

        pretraining summary (modan_mulsupcon, 12/12 epochs)
          loss (epoch mean):  3.412 (epoch 1) -> 2.207 (epoch 12)
          k-NN accuracy:      0.452 (epoch 0) -> 0.881 (epoch 12)  ['val', k=20, majority class 0.167]
          linear probe:       0.500 (epoch 0) -> 0.905 (epoch 12)  ['val', logistic regression]
          encoder:            /.../models/modan_mulsupcon/encoder.pt
          TensorBoard:        tensorboard --logdir /.../models/modan_mulsupcon
          summary file:       /.../models/modan_mulsupcon/summary.json
          next:               cd /.../bundles/classify && python -m monai.bundle run --config_file ... --init ...

    Put it in the checkpoint's ``save_dict`` (``state_dict`` / ``load_state_dict``) so that a resumed run
    still reports the loss of epoch 1, and attach it before a checkpoint saver that writes in attach order
    (``modan_monai.handlers.TrainingCheckpointSaver`` moves its write last itself).

    Args:
        output_dir: folder of ``summary.json`` (the bundle's ``output_dir``).
        encoder_path: the encoder checkpoint the run writes (default ``output_dir/encoder.pt``).
        tensorboard_dir: the TensorBoard log folder (default ``output_dir``).
        knn_monitor: the run's :class:`KNNMonitor`, or ``None`` (no k-NN line).
        method: method name shown in the summary.
        next_commands: commands to suggest; ``{encoder}`` and ``{output_dir}`` are replaced by absolute paths (give
            every other path absolute too, so that the commands run as printed from any folder).
        output_transform: maps ``engine.state.output`` to the iteration loss (default ``output["loss"]``).
        terms_transform: maps ``engine.state.output`` to ``{term name: value}`` (default :func:`loss_terms`).
        filename: name of the JSON file.
        name: logger name.

    Example:
        >>> summary = PretrainingSummary("runs/demo", next_commands=["embed --encoder {encoder}"])
        >>> summary.commands()[0].endswith("runs/demo/encoder.pt")
        True
    """

    def __init__(
        self,
        output_dir: str | Path,
        encoder_path: str | Path | None = None,
        tensorboard_dir: str | Path | None = None,
        knn_monitor: KNNMonitor | None = None,
        method: str | None = None,
        next_commands: Sequence[str] = (),
        output_transform: Callable[[Any], Any] = from_engine(["loss"], first=True),
        filename: str = "summary.json",
        name: str = "modan_monai.summary",
        terms_transform: Callable[[Any], Mapping[str, Any]] = loss_terms,
    ) -> None:
        self.output_dir = Path(output_dir).absolute()
        self.encoder_path = Path(encoder_path).absolute() if encoder_path else self.output_dir / "encoder.pt"
        self.tensorboard_dir = Path(tensorboard_dir).absolute() if tensorboard_dir else self.output_dir
        self.knn_monitor = knn_monitor
        self.method = method
        self.next_commands = [str(c) for c in next_commands]
        self.output_transform = output_transform
        self.terms_transform = terms_transform
        self.filename = filename
        self.logger = logging.getLogger(name)
        #: epoch -> mean training loss of that epoch
        self.loss_history: dict[int, float] = {}
        #: epoch -> {term: mean of that term over the epoch}
        self.terms_history: dict[int, dict[str, float]] = {}
        self._sum = 0.0
        self._count = 0
        self._term_sums: dict[str, float] = {}
        self._term_counts: dict[str, int] = {}

    def attach(self, engine: Engine) -> None:
        """Accumulate the loss per iteration, close the epoch mean per epoch, write the summary at the end.

        The end-of-run handler is registered when the run starts, so that it comes after every other
        ``COMPLETED`` handler (the final ``encoder.pt`` write, the last k-NN value) whatever the handler order.
        """
        engine.add_event_handler(Events.STARTED, self._register_last)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _register_last(self, engine: Engine) -> None:
        if engine.has_event_handler(self._completed, Events.COMPLETED):
            engine.remove_event_handler(self._completed, Events.COMPLETED)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _epoch_started(self, engine: Engine) -> None:
        self._sum, self._count = 0.0, 0
        self._term_sums, self._term_counts = {}, {}

    def _iteration_completed(self, engine: Engine) -> None:
        self._sum += _scalar(self.output_transform(engine.state.output))
        self._count += 1
        for term, value in self.terms_transform(engine.state.output).items():
            self._term_sums[term] = self._term_sums.get(term, 0.0) + _scalar(value)
            self._term_counts[term] = self._term_counts.get(term, 0) + 1

    def _epoch_completed(self, engine: Engine) -> None:
        if self._count:
            self.loss_history[int(engine.state.epoch)] = self._sum / self._count
        if self._term_counts:
            self.terms_history[int(engine.state.epoch)] = {
                term: self._term_sums[term] / count for term, count in sorted(self._term_counts.items())
            }

    def _completed(self, engine: Engine) -> None:
        if not is_rank_zero():  # every rank keeps the history (it is checkpointed); rank 0 writes
            return
        summary = self.summary(epochs_completed=engine.state.epoch, max_epochs=engine.state.max_epochs)
        self.write(summary)
        self.logger.info(self.format(summary))

    def commands(self) -> list[str]:
        """The next commands with ``{encoder}`` and ``{output_dir}`` filled in."""
        return [c.format(encoder=self.encoder_path, output_dir=self.output_dir) for c in self.next_commands]

    def summary(self, epochs_completed: int | None = None, max_epochs: int | None = None) -> dict[str, Any]:
        """The summary as a JSON-serialisable dictionary.

        Args:
            epochs_completed: epochs trained so far (shown as ``completed/max``).
            max_epochs: epochs of the schedule.

        Returns:
            Keys ``method``, ``epochs_completed``, ``max_epochs``, ``loss`` (``first``, ``last``: ``{"epoch",
            "value"}`` or ``None``; ``per_epoch``), ``terms`` (``{term: {"first", "last"}}``, each ``{"epoch",
            "value"}``: the epoch mean of every named loss term in its first and last epoch; ``{}`` for a loss
            without named terms), ``knn`` (``None`` without a monitor, else ``split``, ``bank_splits``, ``k``,
            ``temperature``, ``majority_rate``, ``first``, ``last``: ``{"epoch", "accuracy"}``, ``per_epoch``),
            ``linear_probe`` (``None`` without a monitor or with its probe off, else ``split``, ``bank_splits``,
            ``classifier``, ``c``, ``first``, ``last``: ``{"epoch", "accuracy"}``, ``per_epoch``), ``encoder``,
            ``encoder_exists``, ``tensorboard``, ``summary`` (the absolute path of this summary's JSON file),
            ``next``.
        """
        losses = dict(sorted(self.loss_history.items()))
        loss_first = next(iter(losses.items()), None)
        loss_last = next(reversed(losses.items()), None) if losses else None
        knn: dict[str, Any] | None = None
        if self.knn_monitor is not None:
            history = dict(sorted(self.knn_monitor.history.items()))
            first = next(iter(history.items()), None)
            last = next(reversed(history.items()), None) if history else None
            knn = {
                "split": self.knn_monitor.query_split,
                "bank_splits": list(self.knn_monitor.bank_splits),
                "k": self.knn_monitor.k,
                "temperature": self.knn_monitor.temperature,
                "majority_rate": self.knn_monitor.majority_rate,
                "first": None if first is None else {"epoch": first[0], "accuracy": first[1]},
                "last": None if last is None else {"epoch": last[0], "accuracy": last[1]},
                "per_epoch": {str(e): v for e, v in history.items()},
            }
        probe: dict[str, Any] | None = None
        monitor = self.knn_monitor
        if monitor is not None and (monitor.linear_probe or monitor.linear_probe_history):
            first, last = _first_last(monitor.linear_probe_history, "accuracy")
            probe = {
                "split": monitor.query_split,
                "bank_splits": list(monitor.bank_splits),
                "classifier": "logistic regression (standardised features, L-BFGS, L2)",
                "c": monitor.linear_probe_c,
                "first": first,
                "last": last,
                "per_epoch": {str(e): v for e, v in sorted(monitor.linear_probe_history.items())},
            }
        names = sorted({term for terms in self.terms_history.values() for term in terms})
        terms: dict[str, Any] = {}
        for term in names:
            first, last = _first_last({e: t[term] for e, t in self.terms_history.items() if term in t}, "value")
            terms[term] = {"first": first, "last": last}
        return {
            "method": self.method,
            "epochs_completed": epochs_completed,
            "max_epochs": max_epochs,
            "loss": {
                "first": None if loss_first is None else {"epoch": loss_first[0], "value": loss_first[1]},
                "last": None if loss_last is None else {"epoch": loss_last[0], "value": loss_last[1]},
                "per_epoch": {str(e): v for e, v in losses.items()},
            },
            "terms": terms,
            "knn": knn,
            "linear_probe": probe,
            "encoder": str(self.encoder_path),
            "encoder_exists": self.encoder_path.is_file(),
            "tensorboard": str(self.tensorboard_dir),
            "summary": str(self.output_dir / self.filename),
            "next": self.commands(),
        }

    @staticmethod
    def format(summary: Mapping[str, Any]) -> str:
        """The summary as the few lines that are logged."""
        method = f"{summary['method']}, " if summary.get("method") else ""
        lines = [f"pretraining summary ({method}{summary['epochs_completed']}/{summary['max_epochs']} epochs)"]
        loss = summary["loss"]
        if loss["first"] is not None:
            lines.append(
                f"  loss (epoch mean):  {loss['first']['value']:.3f} (epoch {loss['first']['epoch']}) -> "
                f"{loss['last']['value']:.3f} (epoch {loss['last']['epoch']})"
            )
        else:
            lines.append("  loss (epoch mean):  no epoch completed")
        knn = summary.get("knn")
        if knn is not None and knn["first"] is not None:
            majority = "" if knn["majority_rate"] is None else f", majority class {knn['majority_rate']:.3f}"
            lines.append(
                f"  k-NN accuracy:      {knn['first']['accuracy']:.3f} (epoch {knn['first']['epoch']}) -> "
                f"{knn['last']['accuracy']:.3f} (epoch {knn['last']['epoch']})  ['{knn['split']}', k={knn['k']}{majority}]"
            )
        probe = summary.get("linear_probe")
        if probe is not None and probe["first"] is not None:
            lines.append(
                f"  linear probe:       {probe['first']['accuracy']:.3f} (epoch {probe['first']['epoch']}) -> "
                f"{probe['last']['accuracy']:.3f} (epoch {probe['last']['epoch']})  ['{probe['split']}', logistic "
                "regression]"
            )
        terms = summary.get("terms") or {}
        for i, (term, value) in enumerate(terms.items()):
            if value["first"] is None:
                continue
            lines.append(
                f"  {'terms (epoch mean):' if i == 0 else '':<20}{term} {value['first']['value']:.3f} (epoch "
                f"{value['first']['epoch']}) -> {value['last']['value']:.3f} (epoch {value['last']['epoch']})"
            )
        missing = "" if summary["encoder_exists"] else "  (not written)"
        lines.append(f"  encoder:            {summary['encoder']}{missing}")
        lines.append(f"  TensorBoard:        tensorboard --logdir {summary['tensorboard']}")
        if summary.get("summary"):
            lines.append(f"  summary file:       {summary['summary']}")
        for i, command in enumerate(summary["next"]):
            lines.append(f"  {'next:' if i == 0 else '':<20}{command}")
        return "\n".join(lines)

    def write(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary`` to ``output_dir/filename`` atomically (temporary file, then ``os.replace``).

        Returns:
            The path written.
        """
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / self.filename
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=self.output_dir)
        with os.fdopen(fd, "w") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
        return path

    def state_dict(self) -> dict[str, Any]:
        """The per-epoch losses and loss terms (for the training checkpoint)."""
        terms = {epoch: dict(values) for epoch, values in self.terms_history.items()}
        return {"loss_history": dict(self.loss_history), "terms_history": terms}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the per-epoch losses and loss terms written by :meth:`state_dict`."""
        self.loss_history = {int(e): float(v) for e, v in dict(state_dict.get("loss_history", {})).items()}
        self.terms_history = {
            int(e): {str(k): float(v) for k, v in dict(t).items()}
            for e, t in dict(state_dict.get("terms_history", {})).items()
        }
