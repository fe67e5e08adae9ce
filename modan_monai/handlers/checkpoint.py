"""Checkpoints written atomically and exact resume for ignite/MONAI engines.

- :class:`TrainingCheckpointSaver` writes the full training state as ``checkpoint_epoch=N.pt``
  (network, optimiser, scheduler, loss buffers, :class:`~modan_monai.utils.RandomStates`, the
  trainer's epoch/iteration: whatever is in its dictionary) after every other end-of-epoch
  handler, including validation, then keeps the newest ``n_saved`` files in the folder;
- :class:`ResumeFromCheckpoint` loads the newest one with ``torch.load(weights_only=True)`` when the
  trainer starts, so the same command run again after a crash (even ``kill -9``) continues and ends
  with the weights of an uninterrupted run;
- :class:`EncoderCheckpointSaver` writes the encoder alone (``encoder.pt``, format of
  :mod:`modan_monai.networks.checkpoint`); :class:`BestModelSaver` (on the evaluator) and
  :class:`FinalModelSaver` write a network's state dict as ``model.pt`` / ``model_final.pt``.

Every file is written to a temporary in the same folder and moved into place with ``os.replace``
(:func:`modan_monai.utils.atomic_save`): a killed write leaves the previous file as it was.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from modan_monai.networks.checkpoint import DamagedCheckpointError, load_weights_file, save_encoder
from modan_monai.networks.model_settings import attach_model_settings
from modan_monai.utils import RandomStates, atomic_path, atomic_save, remove_stale_temporaries
from modan_monai.utils.distributed import distributed_world, is_rank_zero, unwrap_module

__all__ = [
    "SCHEDULE_HORIZON_KEYS",
    "BestModelSaver",
    "EncoderCheckpointSaver",
    "FinalModelSaver",
    "ResumeFromCheckpoint",
    "TrainingCheckpointSaver",
    "latest_checkpoint",
    "list_checkpoints",
    "read_training_checkpoint",
]

_EPOCH_RE = re.compile(r"_epoch=(\d+)\.pt$")
logger = logging.getLogger(__name__)

#: learning-rate scheduler attributes that depend on the length of the run; on resume they keep the values this
#: run built (its ``epochs``), the checkpoint gives the progress (``last_epoch``) and the optimizer state
SCHEDULE_HORIZON_KEYS = ("t_total", "warmup_steps", "T_max", "total_iters", "total_steps", "_schedule_phases")


def _check_stateful(objects: Mapping[str, Any], what: str) -> None:
    for key, obj in objects.items():
        if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
            raise ValueError(
                f"{what} entry {key!r} ({type(obj).__name__}) has no state_dict()/load_state_dict(); "
                "give objects such as a network, optimizer, lr scheduler, loss module or RandomStates"
            )


def list_checkpoints(save_dir: str | Path, prefix: str = "checkpoint") -> list[tuple[int, Path]]:
    """The ``{prefix}_epoch=N.pt`` files of ``save_dir`` as ``(N, path)``, oldest first.

    Args:
        save_dir: folder to look in (need not exist).
        prefix: file prefix.

    Returns:
        ``(epoch, path)`` pairs sorted by epoch.
    """
    found = []
    for path in Path(save_dir).glob(f"{prefix}_epoch=*.pt"):
        match = _EPOCH_RE.search(path.name)
        if match and path.name == f"{prefix}_epoch={match.group(1)}.pt":
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(save_dir: str | Path, prefix: str = "checkpoint") -> Path | None:
    """Return the ``{prefix}_epoch=N.pt`` file with the largest N in ``save_dir``, or ``None``."""
    found = list_checkpoints(save_dir, prefix)
    return found[-1][1] if found else None


def read_training_checkpoint(
    path: str | Path, map_location: Any = None, earlier: str | Path | None = None
) -> dict[str, Any]:
    """Load a training checkpoint with ``torch.load(weights_only=True)``, naming a damaged file.

    Args:
        path: the checkpoint.
        map_location: ``torch.load`` map location.
        earlier: the checkpoint to fall back on, named in the error message.

    Returns:
        The checkpoint dictionary.

    Raises:
        ValueError: the file is damaged (empty, truncated, not a checkpoint), naming it and what to do
            (delete it and resume from ``earlier``, or train from scratch); or it holds objects that
            ``weights_only=True`` refuses.
    """
    path = Path(path)
    advice = (
        f"delete it to resume from the earlier checkpoint {earlier}"
        if earlier is not None
        else "no earlier checkpoint is left: delete it to train from scratch"
    )
    try:
        checkpoint = load_weights_file(path, map_location)
    except DamagedCheckpointError as err:
        raise ValueError(f"checkpoint {path} is damaged ({err.detail}): {advice}") from err
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint {path} is damaged (holds a {type(checkpoint).__name__}, not a dict): {advice}")
    return dict(checkpoint)


class TrainingCheckpointSaver:
    """Write the full training state as ``{prefix}_epoch=N.pt`` at the end of epochs, atomically.

    The write comes after every other ``EPOCH_COMPLETED`` handler of the engine (the saver moves its
    handler to the end when the run starts), so a checkpoint holds the state after validation,
    epoch-level scheduler steps and the best-model bookkeeping of that epoch. It is written every
    ``save_interval`` epochs and at the last epoch; then the folder keeps the newest ``n_saved``
    checkpoints, counting those left by earlier runs (the file just written is always kept).
    Temporaries of writes killed midway are removed.

    For an exact resume put everything that carries state in ``save_dict``: network, optimizer,
    lr scheduler, the loss module (its buffers) and a :class:`~modan_monai.utils.RandomStates` of the
    training DataLoader. The engine's own state (epoch, iteration) is added under ``engine_key``.

    Args:
        save_dir: output folder.
        save_dict: objects with ``state_dict()`` / ``load_state_dict()``, by name.
        engine_key: name under which the state of the engine this handler is attached to is saved
            (``None``: not saved).
        save_interval: epochs between checkpoints.
        n_saved: how many checkpoints to keep (``None``: all).
        prefix: file prefix.

    Raises:
        ValueError: ``save_interval`` or ``n_saved`` below 1, or an entry without ``state_dict``.

    Example:
        >>> import tempfile
        >>> net = torch.nn.Linear(1, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> def step(engine, batch):
        ...     opt.zero_grad(); net(torch.ones(1, 1)).sum().backward(); opt.step()
        >>> trainer = Engine(step)
        >>> folder = tempfile.mkdtemp()
        >>> TrainingCheckpointSaver(folder, {"network": net, "optimizer": opt}, n_saved=2).attach(trainer)
        >>> _ = trainer.run([0] * 2, max_epochs=3)
        >>> [p.name for _, p in list_checkpoints(folder)]
        ['checkpoint_epoch=2.pt', 'checkpoint_epoch=3.pt']
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, Any],
        engine_key: str | None = "trainer",
        save_interval: int = 1,
        n_saved: int | None = 1,
        prefix: str = "checkpoint",
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}")
        if n_saved is not None and n_saved < 1:
            raise ValueError(f"n_saved must be >= 1 or None (keep all), got {n_saved}")
        _check_stateful(save_dict, "save_dict")
        if engine_key is not None and engine_key in save_dict:
            raise ValueError(f"save_dict has an entry {engine_key!r}, the name the engine's state is saved under")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.engine_key = engine_key
        self.save_interval = int(save_interval)
        self.n_saved = n_saved
        self.prefix = prefix
        if not any(isinstance(obj, RandomStates) for obj in self.save_dict.values()):
            logger.warning(
                "the training checkpoints hold no modan_monai.utils.RandomStates: a resumed run will not repeat "
                "the uninterrupted one exactly"
            )

    def attach(self, engine: Engine) -> None:
        """Register the saver on ``engine`` (its end-of-epoch write is moved last when the run starts)."""
        engine.add_event_handler(Events.STARTED, self._register_last)

    def _register_last(self, engine: Engine) -> None:
        if engine.has_event_handler(self._epoch_completed, Events.EPOCH_COMPLETED):
            engine.remove_event_handler(self._epoch_completed, Events.EPOCH_COMPLETED)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _epoch_completed(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        if epoch % self.save_interval == 0 or epoch == engine.state.max_epochs:
            self.save(engine)

    def checkpoint(self, engine: Engine) -> dict[str, Any]:
        """The dictionary written for ``engine`` now (state dicts by name)."""
        checkpoint = {key: unwrap_module(obj).state_dict() for key, obj in self.save_dict.items()}
        if self.engine_key is not None:
            checkpoint[self.engine_key] = engine.state_dict()
        return checkpoint

    def save(self, engine: Engine) -> Path:
        """Write ``{prefix}_epoch=<epoch>.pt`` atomically, then prune the folder.

        Args:
            engine: the trainer.

        Returns:
            The path written.
        """
        path = self.save_dir / f"{self.prefix}_epoch={int(engine.state.epoch)}.pt"
        checkpoint = self.checkpoint(engine)  # on every rank: RandomStates gathers each rank's states
        if not is_rank_zero():
            return path
        atomic_save(checkpoint, path)
        logger.info(f"saved checkpoint {path}")
        self.prune(keep=path)
        return path

    def prune(self, keep: Path | None = None) -> list[Path]:
        """Delete all but the newest ``n_saved`` checkpoints of the folder, and stale temporaries.

        Args:
            keep: a checkpoint never deleted (the one just written).

        Returns:
            The deleted checkpoints.
        """
        remove_stale_temporaries(self.save_dir, f"{self.prefix}_epoch=*.pt")
        if self.n_saved is None:
            return []
        found = [path for _, path in list_checkpoints(self.save_dir, self.prefix)]
        newest = set(found[-self.n_saved :]) | ({keep} if keep is not None else set())
        removed = [path for path in found if path not in newest]
        for path in removed:
            path.unlink(missing_ok=True)
            logger.info(f"deleted old checkpoint {path}")
        return removed


class ResumeFromCheckpoint:
    """Resume training from the newest ``{prefix}_epoch=N.pt`` in a folder, if there is one.

    At ``Events.STARTED`` it loads the newest checkpoint with ``torch.load(weights_only=True)`` and
    restores every object of ``load_dict`` and the engine's epoch and iteration, so that the same
    ``python -m monai.bundle run`` started again continues where the last checkpoint was written; a
    larger ``epochs`` trains on. A run started in an empty folder trains from scratch. Attach it
    before the other handlers, so that they see the restored state when the run starts.

    Training longer: the lengths a learning-rate scheduler of ``load_dict`` keeps
    (:data:`SCHEDULE_HORIZON_KEYS`: ``t_total`` and ``warmup_steps`` of MONAI's ``WarmupCosineSchedule``,
    ``T_max``, ``total_iters``, ``total_steps``) keep the values this run built from its own ``epochs``; the
    checkpoint gives the step count, and the optimizer's learning rates are set to the new schedule at that
    step. The run so continues on the schedule of a run given the larger number from the start, with one
    jump of the learning rate at the resume point (logged with both values) and no second warm-up or cosine
    cycle. A scheduler whose length changed but whose rate has no closed form is refused.

    Args:
        save_dir: folder written by :class:`TrainingCheckpointSaver`.
        load_dict: objects to restore, usually the same dictionary given to the saver.
        engine_key: name under which the state of the engine this handler is attached to was saved
            (so a bundle config need not reference the trainer from inside its own handler list).
        prefix: file prefix given to the saver.
        map_location: ``torch.load`` map location.
        strict: refuse a checkpoint that lacks an entry of ``load_dict`` (``False``: restore what is
            there and log a warning naming the rest).

    Raises:
        ValueError: at start-up, when the newest checkpoint is damaged (empty, truncated or corrupt, naming
            it and the earlier one to use), lacks entries, was written by a run with other settings, is
            further along than ``max_epochs``, or holds a schedule of another length that cannot be continued.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> def train(max_epochs):
        ...     torch.manual_seed(0)
        ...     net = torch.nn.Linear(1, 1)
        ...     opt = torch.optim.SGD(net.parameters(), lr=0.1)
        ...     def step(engine, batch):
        ...         opt.zero_grad(); net(torch.ones(1, 1)).sum().backward(); opt.step()
        ...     trainer = Engine(step)
        ...     ResumeFromCheckpoint(folder, {"network": net, "optimizer": opt}).attach(trainer)
        ...     TrainingCheckpointSaver(folder, {"network": net, "optimizer": opt}).attach(trainer)
        ...     return trainer.run([0] * 2, max_epochs=max_epochs).iteration
        >>> train(2), train(3)
        (4, 6)
    """

    def __init__(
        self,
        save_dir: str | Path,
        load_dict: Mapping[str, Any],
        engine_key: str | None = "trainer",
        prefix: str = "checkpoint",
        map_location: Any = None,
        strict: bool = True,
    ) -> None:
        _check_stateful(load_dict, "load_dict")
        self.save_dir = Path(save_dir)
        self.load_dict = dict(load_dict)
        self.engine_key = engine_key
        self.prefix = prefix
        self.map_location = map_location
        self.strict = strict
        self.loaded: Path | None = None

    def _newest(self) -> tuple[Path, dict[str, Any]] | None:
        """``(path, checkpoint)`` of the newest checkpoint, or None; under a process group, rank 0's."""
        if distributed_world()[1] == 1:
            return _read_newest(self.save_dir, self.prefix, self.map_location)
        message: list[Any] = [None]
        if is_rank_zero():
            try:  # on the CPU: each rank's load_state_dict moves the tensors to its own device
                message = [("ok", _read_newest(self.save_dir, self.prefix, "cpu"))]
            except ValueError as err:
                message = [("error", str(err))]
        torch.distributed.broadcast_object_list(message, src=0)
        kind, content = message[0]
        if kind == "error":
            raise ValueError(f"rank 0: {content}")
        return content

    def attach(self, engine: Engine) -> None:
        """Register the resume on ``engine`` at ``Events.STARTED``."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Restore the newest checkpoint into ``engine`` and the objects of ``load_dict``.

        Under a process group rank 0 reads the checkpoint and sends it to every rank, so all ranks resume
        from the same epoch even where the other nodes do not see rank 0's disk.
        """
        found = self._newest()
        if found is None:
            logger.info(f"no checkpoint in {self.save_dir}: training from scratch")
            return
        path, checkpoint = found
        targets: dict[str, Any] = dict(self.load_dict)
        if self.engine_key is not None:
            targets[self.engine_key] = engine
        missing = [key for key in targets if key not in checkpoint]
        if missing:
            message = f"checkpoint {path} has no {missing} entries (it holds {sorted(checkpoint)})"
            if self.strict:
                raise ValueError(f"{message}: resume with strict=False to restore the rest (not exactly)")
            logger.warning(f"{message}: restoring the rest; the resumed run will not be exact")
        prior_max_epochs = engine.state.max_epochs
        horizons = {
            key: {k: getattr(obj, k) for k in SCHEDULE_HORIZON_KEYS if hasattr(obj, k)}
            for key, obj in targets.items()
            if isinstance(obj, torch.optim.lr_scheduler.LRScheduler)
        }
        for key, obj in targets.items():
            if key not in checkpoint:
                continue
            try:
                unwrap_module(obj).load_state_dict(checkpoint[key])
            except (ValueError, RuntimeError, KeyError, TypeError) as err:
                raise ValueError(f"resuming from {path}: entry {key!r} does not load: {err}") from err
        if self.engine_key is not None and self.engine_key in checkpoint:
            if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
                raise ValueError(
                    f"checkpoint {path} is at epoch {engine.state.epoch}, beyond this run's max_epochs "
                    f"{prior_max_epochs}: give more epochs to train on, or another output folder"
                )
            engine.state.max_epochs = prior_max_epochs
        for key, horizon in horizons.items():
            if key in checkpoint:
                _continue_schedule(targets[key], horizon, f"resuming from {path}: entry {key!r}")
        self.loaded = path
        logger.info(f"resuming from {path} (epoch {engine.state.epoch}, iteration {engine.state.iteration})")


def _read_newest(save_dir: Path, prefix: str, map_location: Any) -> tuple[Path, dict[str, Any]] | None:
    found = list_checkpoints(save_dir, prefix)
    if not found:
        return None
    earlier = found[-2][1] if len(found) > 1 else None
    return found[-1][1], read_training_checkpoint(found[-1][1], map_location, earlier)


def _schedule_lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, where: str) -> list[float]:
    """The learning rates of ``scheduler``'s schedule at its ``last_epoch``, computed in closed form."""
    closed_form = getattr(scheduler, "_get_closed_form_lr", None)
    if callable(closed_form):
        return [float(lr) for lr in closed_form()]
    if isinstance(scheduler, (torch.optim.lr_scheduler.LambdaLR, torch.optim.lr_scheduler.OneCycleLR)):
        with warnings.catch_warnings():  # get_lr of these is a closed form of last_epoch; torch warns outside step()
            warnings.simplefilter("ignore", UserWarning)
            return [float(lr) for lr in scheduler.get_lr()]
    raise ValueError(
        f"{where}: the {type(scheduler).__name__} schedule has another length in this run and its learning rate "
        "has no closed form to continue it from; resume with the epochs of the checkpoint's run"
    )


def _continue_schedule(
    scheduler: torch.optim.lr_scheduler.LRScheduler, horizon: Mapping[str, Any], where: str
) -> None:
    """Put back this run's schedule length on a restored scheduler and set the optimizer's learning rates to it.

    The checkpoint restored the progress (``last_epoch``) and the old length; with the length this run built
    (e.g. ``t_total = epochs * steps`` after ``epochs`` grew) the run goes on as a run given these epochs from
    the start would, from the restored step: one jump of the learning rate at the resume point, no second
    warm-up or cosine cycle.
    """
    restored = {k: getattr(scheduler, k) for k in horizon}
    changed = [k for k in horizon if not _same(restored[k], horizon[k])]
    if not changed:
        return
    for k in horizon:
        setattr(scheduler, k, horizon[k])
    lrs = _schedule_lrs(scheduler, where)
    before = [float(group["lr"]) for group in scheduler.optimizer.param_groups]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)  # what get_last_lr() returns
    shown = ", ".join(f"{k} {restored[k]} -> {horizon[k]}" for k in changed if k != "_schedule_phases")
    logger.warning(
        f"{where}: the run's length changed ({shown or 'schedule phases'}): the {type(scheduler).__name__} "
        f"schedule continues to the new length from step {scheduler.last_epoch}; the learning rate jumps "
        f"from {before[0]:.6g} to {lrs[0]:.6g} here, once"
    )


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (RuntimeError, ValueError):  # tensors
        return False


class EncoderCheckpointSaver:
    """Write the encoder alone (``modan_monai.networks.save_encoder`` format) during training, atomically.

    Args:
        encoder: the encoder module (e.g. ``@network.encoder`` in a bundle).
        save_dir: output folder.
        filename: name of the latest encoder checkpoint, overwritten every ``save_interval`` epochs
            and at the end of training.
        save_interval: epochs between writes.
        metadata: extra JSON-serialisable entries stored with the weights (method, vocabulary...).

    Raises:
        ValueError: ``save_interval`` below 1.
    """

    #: under torchrun only rank 0 runs it (see modan_monai.engines.rank_zero_handlers)
    rank_zero_only = True

    def __init__(
        self,
        encoder: torch.nn.Module,
        save_dir: str | Path,
        filename: str = "encoder.pt",
        save_interval: int = 1,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}")
        self.encoder = encoder
        self.save_dir = Path(save_dir)
        self.filename = filename
        self.save_interval = save_interval
        self.metadata = dict(metadata or {})

    def attach(self, engine: Engine) -> None:
        """Write at every ``save_interval``-th epoch end and at the end of the run."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write ``save_dir/filename`` for the engine's current epoch and iteration (rank 0 only)."""
        if not is_rank_zero():
            return
        with atomic_path(self.save_dir / self.filename) as tmp:
            save_encoder(
                self.encoder,
                tmp,
                epoch=int(engine.state.epoch),
                iteration=int(engine.state.iteration),
                **self.metadata,
            )


def _with_settings(network: torch.nn.Module, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The network's state dict, with ``metadata`` in its ``_metadata`` when given."""
    state = unwrap_module(network).state_dict()
    return state if metadata is None else attach_model_settings(state, metadata)


class BestModelSaver:
    """Write a network's state dict when the evaluator's key metric reaches a new best, atomically.

    Attach it to a MONAI evaluator (its ``val_handlers``): the evaluator decides what "best" is
    (``key_val_metric`` and ``metric_cmp_fn``, recorded in ``state.best_metric`` /
    ``state.best_metric_epoch``); at the end of an evaluation that set a new best, the network's
    state dict is written to ``save_dir/filename``, in the form MONAI's ``CheckpointSaver`` writes
    for a single object (``torch.load`` gives the state dict). Put the saver in the training
    checkpoint dictionary: its ``state_dict()`` holds the best value and epoch, so a resumed run
    replaces the file only when the uninterrupted one would.

    Args:
        network: the network whose weights are kept.
        save_dir: output folder.
        filename: file name.
        metadata: the training settings stored with the weights (the state dict's ``_metadata``, see
            :mod:`modan_monai.networks.model_settings`).

    Raises:
        RuntimeError: ``state_dict`` / ``load_state_dict`` before the saver is attached.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        save_dir: str | Path,
        filename: str = "model.pt",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.network = network
        self.save_dir = Path(save_dir)
        self.filename = filename
        self.metadata = None if metadata is None else dict(metadata)
        self.engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Watch ``engine`` (an evaluator) at the end of each evaluation."""
        self.engine = engine
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write the weights if this evaluation set the engine's best metric."""
        if getattr(engine.state, "best_metric_epoch", None) == engine.state.epoch and is_rank_zero():
            path = atomic_save(_with_settings(self.network, self.metadata), self.save_dir / self.filename)
            logger.info(f"new best {engine.state.key_metric_name} {float(engine.state.best_metric):.4f}: saved {path}")

    def _attached(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("BestModelSaver is not attached to an evaluator (add it to the evaluator's handlers)")
        return self.engine

    def state_dict(self) -> dict[str, Any]:
        """The evaluator's best metric and its epoch."""
        state = self._attached().state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the evaluator's best metric and its epoch."""
        state = self._attached().state
        state.best_metric = float(state_dict["best_metric"])
        state.best_metric_epoch = int(state_dict["best_metric_epoch"])


class FinalModelSaver:
    """Write a network's state dict at the end of training, atomically.

    Args:
        network: the trained network.
        save_dir: output folder.
        filename: file name (``torch.load`` gives the state dict).
        metadata: the training settings stored with the weights (the state dict's ``_metadata``, see
            :mod:`modan_monai.networks.model_settings`).
    """

    #: under torchrun only rank 0 runs it (see modan_monai.engines.rank_zero_handlers)
    rank_zero_only = True

    def __init__(
        self,
        network: torch.nn.Module,
        save_dir: str | Path,
        filename: str = "model_final.pt",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.network = network
        self.save_dir = Path(save_dir)
        self.filename = filename
        self.metadata = None if metadata is None else dict(metadata)

    def attach(self, engine: Engine) -> None:
        """Write when ``engine`` completes its run."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write ``save_dir/filename`` (rank 0 only)."""
        if not is_rank_zero():
            return
        path = atomic_save(_with_settings(self.network, self.metadata), self.save_dir / self.filename)
        logger.info(f"train completed, saved final model {path}")
