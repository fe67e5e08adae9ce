"""The end-of-run summaries of the bundles: did the run learn, where are the outputs, what to run next.

:class:`PretrainingSummary` (the pretrain bundle: loss, k-NN and linear-probe accuracy, ``encoder.pt``) and
:class:`TrainingSummary` (the classify and segment bundles: the best validation metric and its epoch, ``model.pt``)
share :class:`RunSummary`: the end-of-run event after every other handler, rank 0 only, the atomic
``summary.json``, the ``summary file`` and ``next`` lines; :func:`bundle_run_command` writes a ``monai.bundle run``
command line that runs as printed from any folder.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
import shlex
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.handlers import from_engine
from monai.utils import optional_import

from modan_monai.utils.distributed import is_rank_zero

from .knn import KNNMonitor

__all__ = [
    "PretrainingSummary", "RunSummary", "TrainingSummary", "bundle_run_command", "datalist_manifest", "loss_terms",
    "run_cv_command",
]

_parse_cli_value, _has_fire = optional_import("fire.parser", name="DefaultParseValue")
#: width of the label column of the summary lines ("  encoder:            /...")
_LABEL_WIDTH = 20
_SHELL_SAFE_IN_DOUBLE_QUOTES = re.compile(r'[^"$`\\!]*')


def _scalar(value: Any) -> float:
    if isinstance(value, (list, tuple)):  # ``from_engine(keys)`` returns one value per key
        value = value[0]
    return float(value.item() if hasattr(value, "item") else value)


def _finite(value: Any) -> float | None:
    """``value`` as a float, ``None`` for NaN / infinity (JSON has no such number)."""
    number = _scalar(value)
    return number if math.isfinite(number) else None


def _value(number: float | None) -> str:
    return "nan" if number is None else f"{number:.3f}"


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


def _line(label: str, value: Any) -> str:
    """One summary line: ``label`` in a column of :data:`_LABEL_WIDTH` characters (a longer one and ``value`` keep
    a space between them), then ``value``."""
    return f"  {label:<{_LABEL_WIDTH - 1}} {value}"


def _shell_word(text: str) -> str:
    """``text`` as one shell word: bare when safe, else in double quotes (readable for ``['a','b']``), else
    :func:`shlex.quote`."""
    if text and shlex.quote(text) == text:
        return text
    if _SHELL_SAFE_IN_DOUBLE_QUOTES.fullmatch(text):
        return f'"{text}"'
    return shlex.quote(text)


def _plain(value: Any) -> Any:
    """``value`` with paths as text and tuples as lists, as it reads back from a command line or a JSON file."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _parses_as(text: str) -> Any:
    """What ``python -m monai.bundle run`` (python-fire) makes of ``text`` given as an argument value."""
    if _has_fire:
        return _parse_cli_value(text)
    try:  # fire's own rule, without fire: a Python literal, else the text
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _cli_value(id: str, value: Any) -> str:
    """``value`` as the shell word that ``monai.bundle run`` reads back as ``value`` (``'$None'`` for null)."""
    value = _plain(value)
    if value is None:
        return _shell_word("$None")
    if isinstance(value, str):
        # text that python-fire would read as a number, a boolean or a list goes in as a quoted Python string
        text = value if _parses_as(value) == value else json.dumps(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config id {id!r}: {value} cannot be given on a command line")
    else:
        text = repr(value)
    if _parses_as(text) != value:
        raise ValueError(f"config id {id!r}: {value!r} does not read back from a command line (as {text!r})")
    return _shell_word(text)


def _config_defaults(bundle_root: Path, config_files: Sequence[str]) -> dict[str, Any]:
    """The top-level values of ``config_files`` (paths relative to ``bundle_root``), later files winning."""
    defaults: dict[str, Any] = {}
    for name in config_files:
        path = bundle_root / name
        if not path.is_file():
            raise ValueError(f"bundle {bundle_root}: config file {name!r} not found ({path})")
        defaults.update(ConfigParser.load_config_file(str(path)))
    return defaults


def bundle_run_command(
    bundle_root: str | os.PathLike,
    config_files: str | Sequence[str],
    ids: Mapping[str, Any] | None = None,
    logging_file: str | None = "configs/logging.conf",
) -> str:
    """A ``python -m monai.bundle run`` command line that runs as printed from any folder.

    It changes to the absolute ``bundle_root`` first (``cd /abs/bundle && python -m monai.bundle run ...``), names
    the config files relative to it as the bundles' docs do, and gives each of ``ids`` as ``--<id> <value>``,
    shell-quoted so that ``monai.bundle run`` reads back the same value (text that would read as a number or a
    boolean is quoted as a string; null is ``'$None'``). An id whose value equals its plain default in the config
    files (the later file winning) is left out, so that a run with the defaults prints a short command; give
    paths absolute.

    Args:
        bundle_root: the bundle folder.
        config_files: config files relative to ``bundle_root`` (several are merged in order).
        ids: config ids and their values.
        logging_file: the logging config relative to ``bundle_root`` (``None``: none).

    Returns:
        The command line.

    Raises:
        ValueError: a config file is missing (naming it) or a value cannot be given on a command line (naming
            the id).

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "configs").mkdir(), (root / "configs" / "train.json").write_text('{"task": "binary"}')
        >>> bundle_run_command(root, "configs/train.json", {"task": "binary", "epochs": 2}, None).split(" && ")[1]
        'python -m monai.bundle run --config_file configs/train.json --epochs 2'
    """
    root = Path(bundle_root).absolute()
    files = [str(config_files)] if isinstance(config_files, (str, os.PathLike)) else [str(f) for f in config_files]
    defaults = _config_defaults(root, files)
    listed = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
    words = ["python", "-m", "monai.bundle", "run", "--config_file", _shell_word(listed)]
    if logging_file is not None:
        words += ["--logging_file", _shell_word(logging_file)]
    for id, value in (ids or {}).items():
        default = defaults.get(id, ...)
        expression = isinstance(default, str) and default.startswith(("$", "@", "%"))
        if default is not ... and not expression and _plain(default) == _plain(value):
            continue
        words += [f"--{id}", _cli_value(id, value)]
    return f"cd {_shell_word(str(root))} && " + " ".join(words)


def run_cv_command(
    script: str | os.PathLike,
    method: str,
    image_size: int,
    out: str | os.PathLike,
    monitor_manifest: str | os.PathLike | None = None,
    monitor_label: str | None = None,
    manifest: str | os.PathLike | None = None,
) -> list[str]:
    """The ``scripts/run_cv.py`` command comparing scratch with a pretraining run's encoder (``{encoder}``, filled in
    by :class:`PretrainingSummary`), as a list of zero or one command line that runs as printed from any folder.

    The labelled manifest is the monitors' (``monitor_manifest`` with its ``monitor_label`` column), else the demo
    corpus's downstream task "chest vs not chest" when ``manifest`` is a demo corpus, else there is none and the list
    is empty (the README's "Your own data" walk-through shows the command). Two label values 0 / 1 make a binary
    task, other values ``--task multiclass``.

    Args:
        script: path of ``scripts/run_cv.py``.
        method: the pretraining method (the ``--init`` name).
        image_size: the run's image size.
        out: the results folder.
        monitor_manifest: the bundle's ``monitor_manifest`` id.
        monitor_label: the bundle's ``monitor_label`` id.
        manifest: the bundle's ``manifest`` id.

    Returns:
        ``[]`` or ``[command]``.
    """
    from modan_monai.data.demo import demo_corpus_settings
    from modan_monai.data.demo_tasks import demo_classification_manifest
    if monitor_manifest and monitor_label:
        labelled, column = os.path.abspath(monitor_manifest), str(monitor_label)
    elif manifest and (settings := demo_corpus_settings(manifest)) is not None:
        labelled, column = os.path.abspath(demo_classification_manifest(Path(manifest).parent, **settings)), "label"
    else:
        return []
    # the monitors checked the manifest and its column at start-up: only the label values are read here
    values = set(pd.read_csv(labelled, usecols=[column], dtype=str)[column].dropna().str.strip())
    task = [] if values <= {"0", "1"} else ["--task", "multiclass"]
    words = ["python", os.path.abspath(script), "--manifest", labelled, "--label-column", column, *task, "--init",
             "scratch", "--init", f"{method}={{encoder}}", "--image-size", str(image_size), "--out",
             os.path.abspath(out)]
    return [" ".join(w if "{encoder}" in w else _shell_word(w) for w in words)]


def datalist_manifest(rows: Iterable[Mapping[str, Any]]) -> str | None:
    """The absolute path of the one manifest that ``rows`` were read from (their ``manifest`` entry, as
    :func:`modan_monai.data.load_datalist` writes it); ``None`` when they name none or several."""
    manifests = {str(row["manifest"]) for row in rows if row.get("manifest")}
    return os.path.abspath(manifests.pop()) if len(manifests) == 1 else None


class RunSummary:
    """What the bundles' end-of-run summaries share: when and where they are written, how they end.

    :meth:`attach` registers the summary on ``Events.COMPLETED`` when the run starts, so that it comes after every
    other ``COMPLETED`` handler (the final weights, the last monitor value) whatever the handler order; only rank 0
    (:func:`~modan_monai.utils.distributed.is_rank_zero`) writes ``output_dir/filename`` (atomically) and logs
    :meth:`format`'s lines. Subclasses give :meth:`summary` (a JSON-serialisable dictionary with ``summary``, the
    path of the file, and ``next``, :meth:`commands`) and :meth:`format`, ending with :meth:`closing_lines`.

    Args:
        output_dir: folder of the summary file (the bundle's ``output_dir``).
        next_commands: commands to suggest; each ``{name}`` of :meth:`placeholders` is replaced by an absolute
            path (give every other path absolute too, so that the commands run as printed from any folder).
        filename: name of the JSON file.
        name: logger name.
    """

    def __init__(
        self,
        output_dir: str | Path,
        next_commands: Sequence[str] = (),
        filename: str = "summary.json",
        name: str = "modan_monai.summary",
    ) -> None:
        self.output_dir = Path(output_dir).absolute()
        self.next_commands = [str(c) for c in next_commands]
        self.filename = filename
        self.logger = logging.getLogger(name)

    @property
    def path(self) -> Path:
        """The absolute path of the summary file."""
        return self.output_dir / self.filename

    def attach(self, engine: Engine) -> None:
        """Write and log the summary when ``engine`` completes, after its other ``COMPLETED`` handlers."""
        engine.add_event_handler(Events.STARTED, self._register_last)

    def _register_last(self, engine: Engine) -> None:
        if engine.has_event_handler(self._completed, Events.COMPLETED):
            engine.remove_event_handler(self._completed, Events.COMPLETED)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _completed(self, engine: Engine) -> None:
        if not is_rank_zero():
            return
        summary = self.summary(epochs_completed=engine.state.epoch, max_epochs=engine.state.max_epochs)
        self.write(summary)
        self.logger.info(self.format(summary))

    def placeholders(self) -> dict[str, Path]:
        """The ``{name}`` fields of the next commands and their absolute paths (``output_dir`` here)."""
        return {"output_dir": self.output_dir}

    def commands(self) -> list[str]:
        """The next commands with :meth:`placeholders` filled in."""
        return [c.format(**self.placeholders()) for c in self.next_commands]

    def summary(self, epochs_completed: int | None = None, max_epochs: int | None = None) -> dict[str, Any]:
        """The summary as a JSON-serialisable dictionary (in subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not define summary()")

    @staticmethod
    def format(summary: Mapping[str, Any]) -> str:
        """The summary as the few lines that are logged (in subclasses)."""
        raise NotImplementedError("RunSummary.format is defined by its subclasses")

    @staticmethod
    def closing_lines(summary: Mapping[str, Any]) -> list[str]:
        """The last lines of every summary: the summary file and the next commands."""
        lines = [_line("summary file:", summary["summary"])] if summary.get("summary") else []
        lines += [_line("next:" if i == 0 else "", command) for i, command in enumerate(summary.get("next", []))]
        return lines

    def write(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary`` to ``output_dir/filename`` atomically (temporary file, then ``os.replace``).

        Returns:
            The path written.
        """
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=self.output_dir)
        with os.fdopen(fd, "w") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, self.path)
        return self.path


class PretrainingSummary(RunSummary):
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
        super().__init__(output_dir, next_commands=next_commands, filename=filename, name=name)
        self.encoder_path = Path(encoder_path).absolute() if encoder_path else self.output_dir / "encoder.pt"
        self.tensorboard_dir = Path(tensorboard_dir).absolute() if tensorboard_dir else self.output_dir
        self.knn_monitor = knn_monitor
        self.method = method
        self.output_transform = output_transform
        self.terms_transform = terms_transform
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
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

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

    def placeholders(self) -> dict[str, Path]:
        """``{encoder}`` and ``{output_dir}`` of the next commands."""
        return {"encoder": self.encoder_path, "output_dir": self.output_dir}

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
            "summary": str(self.path),
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
        return "\n".join(lines + RunSummary.closing_lines(summary))

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


class TrainingSummary(RunSummary):
    """Log a short summary when a supervised training run completes and write it as ``summary.json``.

    Attach it to the trainer of the classify or segment bundle. It reads the best validation value of the key
    metric and its epoch from the validator's state (``state.key_metric_name``, ``state.best_metric``,
    ``state.best_metric_epoch``, which MONAI's evaluators keep and the bundles' checkpoints restore on resume:
    :class:`~modan_monai.handlers.KeepBestWeights` in classify, :class:`~modan_monai.handlers.BestModelSaver` in
    segment), the last evaluation's value (``None`` when the run evaluated nothing in this process, e.g. resumed
    at its last epoch), and gives the absolute paths of the best-epoch weights (``model.pt``), the last-epoch
    weights, the TensorBoard logs, the summary file and the next commands, e.g.::

        classification summary (6/6 epochs)
          best val_auc:       0.854 (epoch 5)  [last 0.831, epoch 6]
          model:              /.../models/model.pt  (weights of the best val_auc epoch)
          final model:        /.../models/model_final.pt
          TensorBoard:        tensorboard --logdir /.../models/logs
          summary file:       /.../models/summary.json
          next:               cd /.../bundles/classify && python -m monai.bundle run --config_file ...

    It holds no state of its own (nothing to checkpoint); under ``torchrun`` only rank 0 attaches it
    (``rank_zero_only``, see :func:`modan_monai.engines.rank_zero_handlers`) and writes.

    Args:
        output_dir: folder of ``summary.json`` (the bundle's ``output_dir``).
        validator: the evaluator run by the trainer's validation handler.
        model_path: the best-epoch weights the run writes (default ``output_dir/model.pt``).
        final_model_path: the last-epoch weights (``None``: no such line).
        tensorboard_dir: the TensorBoard log folder (default ``output_dir``).
        task: what was trained, shown as ``<task> summary``.
        next_commands: commands to suggest; ``{model}`` and ``{output_dir}`` are replaced by absolute paths (give
            every other path absolute too, e.g. with :func:`bundle_run_command`).
        filename: name of the JSON file.
        name: logger name.

    Example:
        >>> from types import SimpleNamespace
        >>> validator = SimpleNamespace(state=SimpleNamespace(
        ...     key_metric_name="val_auc", best_metric=0.9, best_metric_epoch=2, metrics={"val_auc": 0.8}, epoch=3))
        >>> TrainingSummary("runs/demo", validator).summary(3, 3)["best"]
        {'epoch': 2, 'value': 0.9}
    """

    #: under torchrun only rank 0 attaches it (see modan_monai.engines.rank_zero_handlers)
    rank_zero_only = True

    def __init__(
        self,
        output_dir: str | Path,
        validator: Any,
        model_path: str | Path | None = None,
        final_model_path: str | Path | None = None,
        tensorboard_dir: str | Path | None = None,
        task: str = "training",
        next_commands: Sequence[str] = (),
        filename: str = "summary.json",
        name: str = "modan_monai.summary",
    ) -> None:
        super().__init__(output_dir, next_commands=next_commands, filename=filename, name=name)
        self.validator = validator
        self.model_path = Path(model_path).absolute() if model_path else self.output_dir / "model.pt"
        self.final_model_path = Path(final_model_path).absolute() if final_model_path else None
        self.tensorboard_dir = Path(tensorboard_dir).absolute() if tensorboard_dir else self.output_dir
        self.task = task

    def placeholders(self) -> dict[str, Path]:
        """``{model}`` and ``{output_dir}`` of the next commands."""
        return {"model": self.model_path, "output_dir": self.output_dir}

    def summary(self, epochs_completed: int | None = None, max_epochs: int | None = None) -> dict[str, Any]:
        """The summary as a JSON-serialisable dictionary.

        Args:
            epochs_completed: epochs trained so far (shown as ``completed/max``).
            max_epochs: epochs of the schedule.

        Returns:
            Keys ``task``, ``epochs_completed``, ``max_epochs``, ``metric`` (the validator's key metric name),
            ``best`` and ``last`` (``{"epoch", "value"}`` or ``None`` when no validation ran), ``model``,
            ``model_exists``, ``final_model`` and ``final_model_exists`` (``None`` without a final model path),
            ``tensorboard``, ``summary`` (the absolute path of this summary's JSON file), ``next``.
        """
        state = self.validator.state
        metric = getattr(state, "key_metric_name", None)
        best_epoch = int(getattr(state, "best_metric_epoch", -1) or -1)
        best = {"epoch": best_epoch, "value": _finite(state.best_metric)} if best_epoch > 0 else None
        metrics = getattr(state, "metrics", None) or {}
        last_epoch = int(getattr(state, "epoch", 0) or 0)
        last = {"epoch": last_epoch, "value": _finite(metrics[metric])} if metric in metrics and last_epoch else None
        final = self.final_model_path
        return {
            "task": self.task,
            "epochs_completed": epochs_completed,
            "max_epochs": max_epochs,
            "metric": metric,
            "best": best,
            "last": last,
            "model": str(self.model_path),
            "model_exists": self.model_path.is_file(),
            "final_model": None if final is None else str(final),
            "final_model_exists": None if final is None else final.is_file(),
            "tensorboard": str(self.tensorboard_dir),
            "summary": str(self.path),
            "next": self.commands(),
        }

    @staticmethod
    def format(summary: Mapping[str, Any]) -> str:
        """The summary as the few lines that are logged."""
        lines = [f"{summary['task']} summary ({summary['epochs_completed']}/{summary['max_epochs']} epochs)"]
        metric, best, last = summary["metric"] or "metric", summary["best"], summary["last"]
        if best is None:
            lines.append(_line(f"best {metric}:", "no validation ran"))
        else:
            tail = "" if last is None else f"  [last {_value(last['value'])}, epoch {last['epoch']}]"
            lines.append(_line(f"best {metric}:", f"{_value(best['value'])} (epoch {best['epoch']}){tail}"))
        written = f"  (weights of the best {metric} epoch)" if summary["model_exists"] else "  (not written)"
        lines.append(_line("model:", f"{summary['model']}{written}"))
        if summary.get("final_model") is not None:
            missing = "" if summary["final_model_exists"] else "  (not written)"
            lines.append(_line("final model:", f"{summary['final_model']}{missing}"))
        lines.append(_line("TensorBoard:", f"tensorboard --logdir {summary['tensorboard']}"))
        return "\n".join(lines + RunSummary.closing_lines(summary))
