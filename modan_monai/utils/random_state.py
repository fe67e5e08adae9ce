"""Capture and restore every random state a training run draws from.

A run resumed from a checkpoint repeats the uninterrupted run only if it starts the next epoch with
the same random states: the global generators (torch CPU and CUDA, numpy, Python ``random``), the
``R`` ``numpy.random.RandomState`` of each MONAI transform of the dataset, and the generators of the
DataLoader and its sampler. :class:`RandomStates` holds them behind ``state_dict()`` /
``load_state_dict()``, so it goes into a checkpoint dictionary next to the network and optimiser;
:func:`preserved_rng_state` restores them after code that must not disturb them (validation, a
k-NN monitor).

Facts this is built on (MONAI 1.x, torch 2.x, ignite 0.5):

- every creation of a DataLoader iterator draws one int64 from the loader's ``generator`` (the global
  torch generator when none is given), even with ``shuffle=False``; ``RandomSampler`` without a
  generator draws its seed from the global torch generator at each epoch;
- ``monai.data.DataLoader`` with ``num_workers=0`` seeds the dataset's transforms once at
  construction and resets the global torch generator to its initial seed; the transforms then run in
  the main process and their ``R`` states advance from epoch to epoch, so they must be saved;
- with ``num_workers > 0`` each worker re-seeds its copy of the transforms from the iterator's base
  seed at each iterator creation, so the global torch state decides them (the main-process copies
  are saved too, harmlessly); ``persistent_workers=True`` keeps worker states out of reach and is
  refused;
- ignite creates the next epoch's iterator after ``EPOCH_STARTED``, so states saved at the end of
  ``EPOCH_COMPLETED`` and restored at ``STARTED`` meet the same draws.

Everything is stored as tensors and plain values, so checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import random
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import PurePath
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable

from .distributed import distributed_world

__all__ = ["RandomStates", "preserved_rng_state", "random_state_objects"]

logger = logging.getLogger(__name__)

_RandomObject = np.random.RandomState | np.random.Generator | torch.Generator
_LEAF_TYPES = (
    str, bytes, bytearray, int, float, complex, bool, type(None), torch.Tensor, np.ndarray, np.generic, type,
    types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.LambdaType,
    logging.Logger, PurePath, torch.device, torch.dtype,
)


def _dataset_attribute_worth_walking(value: Any) -> bool:
    # a dataset's rows and caches hold no random state; its transforms (callables) and wrapped datasets may
    if isinstance(value, torch.utils.data.Dataset) or (callable(value) and not isinstance(value, _LEAF_TYPES)):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, torch.utils.data.Dataset) for v in value)


def _expand_root(name: str, obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, torch.utils.data.DataLoader):
        return [
            (f"{name}.generator", obj.generator),
            (f"{name}.dataset", obj.dataset),
            (f"{name}.sampler", obj.sampler),
            (f"{name}.batch_sampler", obj.batch_sampler),
        ]
    return [(name, obj)]


def random_state_objects(roots: Sequence[tuple[str, Any]]) -> list[tuple[str, _RandomObject]]:
    """Find the random generators reachable from ``roots``, each once, in a fixed order.

    Walks attributes, list/tuple items and mapping values depth first. A DataLoader root expands
    into its ``generator``, ``dataset``, ``sampler`` and ``batch_sampler``; of a dataset only the
    transforms (callable attributes) and wrapped datasets are walked, not its rows or cache; a
    ``Randomizable`` that was never seeded contributes the class-level ``R`` it shares with the
    others. Nested ``Compose``, ``OneOf``, :class:`~modan_monai.transforms.MultiViewd` (its wrapped
    transform) and :class:`~modan_monai.transforms.SimCLRViewsd` (whose cropper shares its ``R``)
    are all reached this way.

    Args:
        roots: ``(name, object)`` pairs; the names start the returned paths.

    Returns:
        ``(path, generator)`` pairs, e.g. ``("dataset.transform.transforms[3].R", RandomState)``.
    """
    found: list[tuple[str, _RandomObject]] = []
    seen: set[int] = set()

    def visit(obj: Any, path: str) -> None:
        if isinstance(obj, (np.random.RandomState, np.random.Generator, torch.Generator)):
            if id(obj) not in seen:
                seen.add(id(obj))
                found.append((path, obj))
            return
        if isinstance(obj, _LEAF_TYPES) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Mapping):
            for key, value in obj.items():
                visit(value, f"{path}[{key!r}]")
            return
        if isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                visit(value, f"{path}[{i}]")
            return
        attributes = getattr(obj, "__dict__", None)
        if not isinstance(attributes, dict):
            return
        if isinstance(obj, Randomizable) and "R" not in attributes:
            visit(obj.R, f"{path}.R")
        is_dataset = isinstance(obj, torch.utils.data.Dataset)
        for name, value in list(attributes.items()):
            if name.startswith("__") or (is_dataset and not _dataset_attribute_worth_walking(value)):
                continue
            visit(value, f"{path}.{name}")

    for name, root in roots:
        for path, obj in _expand_root(name, root):
            visit(obj, path)
    return found


def _numpy_state(state: tuple) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached_gaussian = state
    if kind != "MT19937":
        raise ValueError(f"unsupported numpy RandomState bit generator {kind!r}")
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _numpy_tuple(state: Mapping[str, Any]) -> tuple:
    keys = np.asarray(torch.as_tensor(state["keys"]).cpu().numpy(), dtype=np.uint32)
    return "MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        return {k: _from_jsonable(v) for k, v in value.items()}
    return value


def _object_state(obj: _RandomObject) -> dict[str, Any]:
    if isinstance(obj, np.random.RandomState):
        return {"kind": "numpy.RandomState", **_numpy_state(obj.get_state(legacy=True))}
    if isinstance(obj, np.random.Generator):
        # PCG64 states are 128-bit integers: JSON keeps them exactly, as text
        return {"kind": "numpy.Generator", "json": json.dumps(_jsonable(obj.bit_generator.state))}
    return {"kind": "torch.Generator", "state": obj.get_state()}


def _kind(obj: _RandomObject) -> str:
    if isinstance(obj, np.random.RandomState):
        return "numpy.RandomState"
    return "numpy.Generator" if isinstance(obj, np.random.Generator) else "torch.Generator"


def _set_object_state(obj: _RandomObject, state: Mapping[str, Any]) -> None:
    if isinstance(obj, np.random.RandomState):
        obj.set_state(_numpy_tuple(state))
    elif isinstance(obj, np.random.Generator):
        obj.bit_generator.state = _from_jsonable(json.loads(state["json"]))
    else:
        obj.set_state(torch.as_tensor(state["state"]).cpu())


def _global_states() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(np.random.get_state(legacy=True)),
        "python": {"version": int(version), "internal": [int(i) for i in internal], "gauss": gauss},
        "cuda": [],
    }
    # an uninitialised CUDA has drawn nothing: its generators start from the seed wherever it is first used
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return states


def _set_global_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(torch.as_tensor(states["torch"]).cpu())
    np.random.set_state(_numpy_tuple(states["numpy"]))
    python = states["python"]
    random.setstate((int(python["version"]), tuple(int(i) for i in python["internal"]), python["gauss"]))
    cuda = list(states.get("cuda") or [])
    if cuda:
        if not torch.cuda.is_available():
            logger.warning("the saved CUDA random states are not restored: CUDA is not available")
            return
        if len(cuda) != torch.cuda.device_count():
            logger.warning(
                f"{len(cuda)} CUDA random states saved, {torch.cuda.device_count()} devices here: restoring the first "
                f"{min(len(cuda), torch.cuda.device_count())}"
            )
        for device, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.as_tensor(state).cpu(), device)


class RandomStates:
    """Every random state of a training run, for a checkpoint dictionary.

    ``state_dict()`` walks the dataset's transform chain and the DataLoader at the time it is called
    (transforms re-seeded after construction are found again), so put the object itself in the
    dictionary given to the checkpoint saver and to the resume handler.

    Args:
        dataset: a dataset, a transform, or a sequence of them, whose transforms' ``R`` states are
            saved (default: ``dataloader.dataset``).
        dataloader: the training DataLoader: its ``generator``, its sampler's and batch sampler's
            generators and its dataset's transforms are saved.
        global_states: also save the global generators (torch CPU and CUDA, numpy, Python ``random``).

    Raises:
        ValueError: a DataLoader with ``num_workers > 0`` and ``persistent_workers=True`` (its workers
            keep transform states that the main process cannot read).

    Example:
        >>> import torch
        >>> from monai.data import DataLoader, Dataset
        >>> from monai.transforms import RandFlipd
        >>> loader = DataLoader(Dataset([{"x": torch.rand(1, 4, 4)}] * 4, RandFlipd("x", prob=0.5)), batch_size=2)
        >>> states = RandomStates(dataloader=loader)
        >>> saved = states.state_dict()
        >>> first = [b["x"] for b in loader]
        >>> states.load_state_dict(saved)
        >>> all(torch.equal(a, b["x"]) for a, b in zip(first, loader))
        True
    """

    def __init__(
        self,
        dataset: Any | Sequence[Any] | None = None,
        dataloader: torch.utils.data.DataLoader | None = None,
        global_states: bool = True,
    ) -> None:
        if dataloader is not None and getattr(dataloader, "num_workers", 0) > 0 and dataloader.persistent_workers:
            raise ValueError(
                "RandomStates cannot save the transform states of persistent DataLoader workers: build the "
                "DataLoader with persistent_workers=False (each epoch's workers are then re-seeded from the saved "
                "generator)."
            )
        if dataset is None:
            datasets: list[Any] = []
        elif isinstance(dataset, (list, tuple)):
            datasets = list(dataset)
        else:
            datasets = [dataset]
        self.roots: list[tuple[str, Any]] = [
            (f"dataset[{i}]" if len(datasets) > 1 else "dataset", d) for i, d in enumerate(datasets)
        ]
        if dataloader is not None:
            self.roots.append(("dataloader", dataloader))
        self.global_states = global_states

    def objects(self) -> list[tuple[str, _RandomObject]]:
        """The ``(path, generator)`` pairs found now (see :func:`random_state_objects`)."""
        return random_state_objects(self.roots)

    def state_dict(self) -> dict[str, Any]:
        """The random states, as tensors and plain values.

        Under a process group of N > 1 ranks every rank must call it (a checkpoint saver running on all ranks):
        the states of all ranks are gathered, so a resumed N-rank run repeats each rank's augmentations.

        Returns:
            ``{"global": {...} or None, "objects": {path: state}}``, plus ``"ranks"`` (every rank's such
            dict, in rank order; the top-level entries are rank 0's) under a process group.
        """
        local = {
            "global": _global_states() if self.global_states else None,
            "objects": {path: _object_state(obj) for path, obj in self.objects()},
        }
        world = distributed_world()[1]
        if world == 1:
            return local
        ranks: list[Any] = [None] * world
        torch.distributed.all_gather_object(ranks, local)
        return {**ranks[0], "ranks": ranks}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the states of :meth:`state_dict`, in place (transforms keep their ``R`` objects).

        Args:
            state_dict: from :meth:`state_dict` (possibly through ``torch.save``/``torch.load``).

        Raises:
            ValueError: when the saved generators do not match the ones found now (the transform
                chain or the DataLoader changed), naming the paths that differ.
        """
        if not isinstance(state_dict, Mapping) or "objects" not in state_dict:
            found = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError(f"not a RandomStates state dict (no 'objects' entry): {found}")
        state_dict = self._this_rank(state_dict)
        saved: Mapping[str, Any] = state_dict["objects"]
        current = dict(self.objects())
        missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
        changed = sorted(p for p in set(current) & set(saved) if saved[p].get("kind") != _kind(current[p]))
        if missing or unexpected or changed:
            raise ValueError(
                "the saved random states do not match this run's transforms and DataLoader (did the transform chain "
                f"change?): not saved {missing}, saved but not found {unexpected}, of another kind {changed}"
            )
        for path, obj in current.items():
            _set_object_state(obj, saved[path])
        if self.global_states:
            if state_dict.get("global") is None:
                raise ValueError("the saved random states have no global states (saved with global_states=False)")
            _set_global_states(state_dict["global"])

    @staticmethod
    def _this_rank(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
        rank, world = distributed_world()
        ranks = state_dict.get("ranks")
        saved_world = len(ranks) if ranks else 1
        if saved_world != world:
            logger.warning(
                f"the random states were saved by {saved_world} process(es) and this run has {world}: rank {rank} "
                f"restores those of rank {rank % saved_world}, so the resumed run does not repeat the uninterrupted "
                "one exactly (resume with the same number of processes for that)"
            )
        return ranks[rank % saved_world] if ranks else state_dict


@contextmanager
def preserved_rng_state(*objects: Any) -> Iterator[None]:
    """Run a block without changing any global random state, nor those of ``objects``.

    Wrap evaluation that runs during training (validation, a k-NN monitor, building a DataLoader:
    ``monai.data.DataLoader`` re-seeds the global torch generator when it is built) so that a resumed
    run stays exact. The states are restored even when the block raises.

    Args:
        objects: datasets, DataLoaders or transforms whose own generators are restored as well
            (e.g. the validation DataLoader, so random validation transforms repeat every time).

    Example:
        >>> import torch
        >>> before = torch.get_rng_state()
        >>> with preserved_rng_state():
        ...     _ = torch.rand(3)
        >>> torch.equal(before, torch.get_rng_state())
        True
    """
    states = RandomStates(dataset=list(objects))
    saved = states.state_dict()
    try:
        yield
    finally:
        states.load_state_dict(saved)
