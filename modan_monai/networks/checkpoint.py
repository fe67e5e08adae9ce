"""Encoder checkpoint format: save a pretrained encoder, rebuild it, or load its weights into an encoder.

An encoder checkpoint is a ``torch.save`` file holding one dict::

    {
        "format": "modan_monai.encoder.v1",       # ENCODER_CHECKPOINT_FORMAT
        "arch": "resnet18",                       # a registered architecture (modan_monai.networks.registry)
        "encoder_kwargs": {"spatial_dims": 2, "in_channels": 1, "stem": "3x3",
                           "act": ("relu", {"inplace": True}), "norm": "batch"},
        "state_dict": {...},                       # encoder.state_dict() (conv1.*, bn1.*, layer1.* ...)
        "metadata": {...},                         # free-form plain values: method, epoch, vocabulary, ...
    }

It contains only tensors and plain Python values, so it is read with ``torch.load(weights_only=True)``.
:func:`load_encoder_state` also accepts a full training checkpoint (a dict with a ``"network"`` entry holding
the state dict of a ``ContrastiveModel`` / ``MLVICXModel`` / ``ClassificationModel``), keeping the ``encoder.``
entries. The encoder registry (:mod:`modan_monai.networks.registry`) maps ``arch`` to the class.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "DamagedCheckpointError",
    "ENCODER_CHECKPOINT_FORMAT",
    "check_finite_state",
    "load_encoder",
    "load_encoder_state",
    "load_model_weights",
    "load_weights_file",
    "read_checkpoint",
    "save_encoder",
    "state_dict_problems",
]

ENCODER_CHECKPOINT_FORMAT = "modan_monai.encoder.v1"
_PLAIN_TYPES = (str, int, float, bool, type(None))
_MAX_NAMED_KEYS = 12


def _check_plain(value: Any, where: str) -> None:
    """Raise ValueError if ``value`` is not made of plain Python values (loadable with weights_only=True)."""
    if isinstance(value, _PLAIN_TYPES):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be str, got {type(key).__name__} {key!r}.")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where}: {type(value).__name__} is not a plain value (str, int, float, bool, None, list, tuple, dict)."
    )


def _unwrap_encoder(model: nn.Module) -> tuple[nn.Module, str]:
    """The registered encoder in ``model`` (itself or its ``.encoder``) and its ``arch`` name."""
    from .registry import encoder_arch, encoder_architectures  # the registry imports this module

    for candidate in (model, getattr(model, "encoder", None)):
        if isinstance(candidate, nn.Module):
            try:
                return candidate, encoder_arch(candidate)
            except ValueError:
                continue
    registered = ", ".join(f"{a.name} ({a.encoder_class.__name__})" for a in encoder_architectures().values())
    raise ValueError(
        f"save_encoder expects a registered encoder or a model whose .encoder is one, got {type(model).__name__}; "
        f"registered (modan_monai.networks.registry): {registered}."
    )


def save_encoder(encoder: nn.Module, path: str | Path, **metadata: Any) -> Path:
    """Write an encoder checkpoint (format ``ENCODER_CHECKPOINT_FORMAT``, see module docstring).

    Args:
        encoder: a registered encoder (``ResNet18Encoder``, ``CBResNet18Encoder``, ...), or a model whose
            ``.encoder`` is one (``ContrastiveModel``, ``MLVICXModel``, ``ClassificationModel``, ``SegmentationUNet``).
        path: output file (parent directories are created).
        metadata: plain values stored under ``"metadata"`` (e.g. ``method="mulsupcon", epoch=200``).

    Returns:
        The path written.

    Raises:
        ValueError: when ``encoder`` holds no registered encoder or a metadata value is not a plain value.
    """
    module, arch = _unwrap_encoder(encoder)
    _check_plain(metadata, "save_encoder metadata")
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    checkpoint = {
        "format": ENCODER_CHECKPOINT_FORMAT,
        "arch": arch,
        "encoder_kwargs": module.encoder_kwargs,
        "state_dict": state,
        "metadata": dict(metadata),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


class DamagedCheckpointError(ValueError):
    """A checkpoint file that is empty, truncated or corrupt (not a file ``torch.save`` wrote completely).

    Attributes:
        path: the file.
        size: its size in bytes.
        kind: ``"empty"``, ``"truncated"`` or ``"corrupt"``.
        reason: what the reader found (``""`` for an empty file).
    """

    def __init__(self, path: Path, size: int, kind: str, reason: str = "", what: str = "checkpoint") -> None:
        self.path, self.size, self.kind, self.reason = path, size, kind, reason
        if kind == "empty":
            text = f"{what} {path} is empty (0 bytes): not a checkpoint"
        elif kind == "truncated":
            text = f"{what} {path} is truncated ({size} bytes, {reason}): not a complete checkpoint"
        else:
            text = f"{what} {path} is corrupt or not a PyTorch checkpoint ({size} bytes, unreadable: {reason})"
        super().__init__(text)

    @property
    def detail(self) -> str:
        """``"empty, 0 bytes"`` / ``"truncated, N bytes: ..."`` / ``"corrupt, N bytes: ..."``."""
        return f"{self.kind}, {self.size} bytes" + (f": {self.reason}" if self.reason else "")


def _first_line(err: BaseException) -> str:
    """The most telling line of a loader's error (torch's weights-only errors put the cause mid-text)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Unsupported"):
            return line
    return lines[0][:200] if lines else type(err).__name__


def _unsupported_global(err: BaseException) -> str | None:
    """The line of a weights-only refusal naming what it refused, else ``None``.

    torch words it ``Unsupported global: GLOBAL os.system ...`` or (2.6+) ``Trying to load unsupported GLOBAL
    posix.system whose module posix is blocked``. (``Unsupported operand N`` is not one: random bytes read so.)
    """
    for line in str(err).splitlines():
        if "unsupported global" in line.lower():
            return line.strip()
    return None


def _zip_damage(path: Path) -> tuple[str, str] | None:
    """``(kind, reason)`` when ``path`` starts as a zip archive (``torch.save``'s format) but does not read as one."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        return None
    if not zipfile.is_zipfile(path):
        return "truncated", "a torch.save zip archive without its end, as a write cut short leaves"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return "corrupt", f"a damaged zip archive: {err}"
    if bad is not None:
        return "corrupt", f"a zip archive whose member {bad} fails its checksum"
    return None


def load_weights_file(path: str | Path, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` that names the file and what is wrong with it.

    Args:
        path: a file written by ``torch.save``.
        map_location: passed to ``torch.load``.
        what: how errors name the file (``"checkpoint"``, ``"encoder checkpoint"``...).

    Returns:
        What the file holds.

    Raises:
        FileNotFoundError: ``path`` does not exist, or is not a file (naming what it is).
        DamagedCheckpointError: (a ``ValueError``) the file is empty (0 bytes), truncated (a zip archive without
            its end) or corrupt (random bytes, a text file, a damaged archive), naming the file.
        ValueError: the file holds objects other than tensors and plain values, which ``weights_only=True``
            refuses (naming the global it met).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is a directory, not a file")
    size = path.stat().st_size
    if size == 0:
        raise DamagedCheckpointError(path, 0, "empty", what=what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged pickle raises about anything (KeyError, IndexError...)
        damage = _zip_damage(path)
        if damage is not None:
            raise DamagedCheckpointError(path, size, *damage, what=what) from err
        refused = _unsupported_global(err) if isinstance(err, pickle.UnpicklingError) else None
        if refused is not None:
            raise ValueError(
                f"{what} {path} is refused as unsafe and was not loaded: it holds objects other than tensors and "
                f"plain values (a pickle that could run code), which torch.load(weights_only=True) refuses: "
                f"{refused}. Use a checkpoint written by this project, from a source you trust."
            ) from err
        raise DamagedCheckpointError(path, size, "corrupt", f"{type(err).__name__}: {_first_line(err)}",
                                     what=what) from err


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)`` (:func:`load_weights_file`).

    Args:
        path: checkpoint file.
        map_location: passed to ``torch.load``.

    Returns:
        The loaded dict.

    Raises:
        FileNotFoundError: when ``path`` does not exist or is a directory.
        DamagedCheckpointError: (a ``ValueError``) when the file is empty, truncated or corrupt, naming it.
        ValueError: when the file holds more than tensors and plain values (refused by ``weights_only``) or is
            not a dict.
    """
    loaded = load_weights_file(path, map_location)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(loaded).__name__}, expected a dict.")
    return dict(loaded)


def check_finite_state(state: Mapping[str, Any], source: str) -> None:
    """Refuse weights with NaN or Inf values, naming the first such tensor (in state-dict order).

    Args:
        state: a state dict (non-tensor and integer entries are skipped).
        source: names the weights in the error (``"checkpoint runs/a/encoder.pt"``).

    Raises:
        ValueError: naming ``source``, the first non-finite tensor with its NaN / Inf counts, and how many
            tensors are non-finite in all.
    """
    bad = [
        key
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if not bad:
        return
    first = state[bad[0]]
    n_nan, n_inf = int(torch.isnan(first).sum()), int(torch.isinf(first).sum())
    more = f"; {len(bad)} of {len(state)} tensors are non-finite" if len(bad) > 1 else ""
    raise ValueError(
        f"{source} holds non-finite weights: {bad[0]} {tuple(first.shape)} has {n_nan} NaN and {n_inf} Inf of "
        f"{math.prod(first.shape)} values{more}; it cannot initialise an encoder (a run that diverged? use an "
        "earlier checkpoint of it)."
    )


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _extract_encoder_state(checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Find the encoder state dict in an encoder checkpoint, a training checkpoint or a bare state dict."""
    if "format" in checkpoint:
        if checkpoint["format"] != ENCODER_CHECKPOINT_FORMAT:
            raise ValueError(
                f"{source}: unknown checkpoint format {checkpoint['format']!r}, expected {ENCODER_CHECKPOINT_FORMAT!r}."
            )
        state = checkpoint["state_dict"]
    elif "network" in checkpoint:
        state = checkpoint["network"]
    elif "state_dict" in checkpoint:
        state = checkpoint["state_dict"]
    else:
        state = checkpoint
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{source}: no state dict found (expected an encoder checkpoint, a dict with 'network' or "
            f"'state_dict', or a state dict); top-level keys: {sorted(checkpoint)[:_MAX_NAMED_KEYS]}."
        )
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):  # DistributedDataParallel wrapper
        state = _strip_prefix(state, "module.")
    if any(k.startswith("teacher.encoder.") for k in state):  # AdamV2Model: the EMA teacher's backbone is exported
        state = _strip_prefix(state, "teacher.encoder.")
    elif any(k.startswith("encoder.") for k in state):  # ContrastiveModel / ClassificationModel
        state = _strip_prefix(state, "encoder.")
    check_finite_state(state, source)
    return state


def _name_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMED_KEYS])
    more = f" (+{len(keys) - _MAX_NAMED_KEYS} more)" if len(keys) > _MAX_NAMED_KEYS else ""
    return f"[{shown}{more}]"


def state_dict_problems(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    strict: bool = True,
    allowed_missing: Sequence[str] = (),
) -> tuple[list[str], list[str], list[str]]:
    """Compare a state dict with a model's and describe what does not match.

    Args:
        expected: the model's ``state_dict()``.
        state: the weights to load.
        strict: report missing and unexpected keys as problems (shape mismatches always are).
        allowed_missing: keys of ``expected`` that may be absent from ``state``.

    Returns:
        ``(missing, unexpected, problems)``: sorted key lists and the human-readable problems
        (empty when the weights load).
    """
    missing = sorted(k for k in expected if k not in state and k not in allowed_missing)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    )
    problems = []
    if mismatched:
        problems.append(f"shape-mismatched keys {_name_keys(mismatched)}")
    if strict and missing:
        problems.append(f"missing keys {_name_keys(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys {_name_keys(unexpected)}")
    return missing, unexpected, problems


def load_encoder_state(
    encoder: nn.Module,
    path_or_dict: str | Path | Mapping[str, Any],
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict[str, list[str]]:
    """Load encoder weights from an encoder checkpoint, a full training checkpoint or a state dict.

    Accepted inputs: the :func:`save_encoder` format; a training checkpoint dict whose ``"network"`` (or
    ``"state_dict"``) entry is the state dict of a model with an ``encoder`` submodule (the ``encoder.``
    prefix is stripped, heads are ignored); a bare encoder state dict (a ``module.`` DDP prefix is stripped).

    Args:
        encoder: the module to load into (e.g. a ``ResNet18Encoder`` built with the same arguments).
        path_or_dict: checkpoint file or an already loaded dict.
        strict: when True any missing or unexpected key is an error; when False they are reported in the
            return value and the matching keys are loaded. Shape mismatches are always an error.
        map_location: passed to ``torch.load`` for files.

    Returns:
        ``{"missing": [...], "unexpected": [...]}`` (both empty when ``strict``).

    Raises:
        ValueError: naming the missing, unexpected and shape-mismatched keys (architecture mismatch, e.g. a
            7x7-stem checkpoint loaded into a 3x3-stem encoder), or when no state dict is found.
        FileNotFoundError: when the file does not exist.
    """
    if isinstance(path_or_dict, Mapping):
        checkpoint, source = dict(path_or_dict), "checkpoint dict"
    else:
        checkpoint, source = read_checkpoint(path_or_dict, map_location), f"checkpoint {path_or_dict}"
    state = _extract_encoder_state(checkpoint, source)
    expected = encoder.state_dict()
    missing, unexpected, problems = state_dict_problems(expected, state, strict=strict)
    if problems:
        raise ValueError(f"{source} does not match {type(encoder).__name__}: " + "; ".join(problems) + ".")
    encoder.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return {"missing": missing, "unexpected": unexpected}


def load_model_weights(network: nn.Module, path: str | Path, what: str = "model weights") -> nn.Module:
    """Load a whole network's weights (a downstream bundle's ``models/model.pt``) strictly, naming what is wrong.

    The file is a state dict as ``BestModelSaver`` / ``FinalModelSaver`` / MONAI's ``CheckpointSaver`` write it,
    or a dict holding one under ``"model"``. Every key must match the network's (names and shapes) and every
    weight must be finite: a file of another architecture, structure count or class count is refused, never
    loaded partially.

    Args:
        network: the network to fill (e.g. the bundle's ``network_def``).
        path: the weights file.
        what: how errors name the file.

    Returns:
        ``network``, with the weights loaded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a damaged file, non-finite weights, or keys / shapes that do not match (naming the file and
            the keys).
    """
    loaded = load_weights_file(path, map_location="cpu", what=what)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        loaded = loaded["model"]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{what} {path} holds a {type(loaded).__name__}, expected a state dict.")
    state = dict(loaded)
    _, _, problems = state_dict_problems(network.state_dict(), state, strict=True)
    if problems:
        raise ValueError(f"{what} {path} does not fit the network ({type(network).__name__}): {'; '.join(problems)}")
    check_finite_state(state, f"{what} {path}")
    network.load_state_dict(state)
    return network


def load_encoder(path: str | Path) -> nn.Module:
    """Rebuild an encoder from an encoder checkpoint written by :func:`save_encoder` (strict loading).

    The class is the registered architecture named by the checkpoint's ``arch`` (``"resnet18"``:
    ``ResNet18Encoder``, ``"cb_resnet18"``: ``CBResNet18Encoder``, ...), built with its ``encoder_kwargs``; this is
    :func:`modan_monai.networks.registry.build_encoder` restricted to encoder checkpoints.

    Args:
        path: encoder checkpoint file.

    Returns:
        The encoder with the stored weights, in training mode (call ``.eval()`` for inference).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not an encoder checkpoint (format/arch) or its weights do not match.
    """
    from .registry import build_encoder  # the registry imports this module

    checkpoint = read_checkpoint(path)
    if checkpoint.get("format") != ENCODER_CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint {path} is not an encoder checkpoint (format {checkpoint.get('format')!r}, expected "
            f"{ENCODER_CHECKPOINT_FORMAT!r}); build an encoder from a training checkpoint with "
            "modan_monai.networks.registry.build_encoder."
        )
    if "arch" not in checkpoint:
        raise ValueError(f"checkpoint {path} has no 'arch' entry (save it with modan_monai.networks.save_encoder).")
    return build_encoder(str(path))
