"""The training settings a saved model carries: written by training, read and checked by evaluation and inference.

A downstream bundle's ``model.pt`` (``KeepBestWeights`` / ``BestModelSaver`` / ``FinalModelSaver``) is a plain
state dict, as MONAI's ``CheckpointLoader`` and ``ckpt_export`` read it. PyTorch keeps a state dict's metadata in
its ``_metadata`` attribute (the per-module ``version`` entries that ``load_state_dict`` reads), and
``torch.save`` / ``torch.load(weights_only=True)`` carry it; the settings of the run that trained the weights are
stored there under :data:`MODEL_SETTINGS_KEY`, so the file stays a state dict for every reader::

    state = torch.load("models/model.pt", weights_only=True)
    state._metadata["modan_monai"]
    # {"task": "classification", "image_size": 32, "arch": "resnet18", "stem": "3x3",
    #  "class_names": ["negative", "positive"], "label_type": "binary"}

The classify bundle adds ``label_type`` (its ``task``: ``binary``, ``multiclass`` or ``multilabel``) through
:func:`model_settings`'s ``extra``; evaluation and inference apply its activation (softmax, or one sigmoid per label
for ``multilabel``); a model saved without it is read as softmax (binary / multiclass), as before.

The settings are plain values describing the network and its input (no path, no patient identifier).
:func:`read_model_settings` reads them back, :func:`check_model_settings` refuses a run whose settings contradict
them (naming both values) and :func:`trained_setting` gives an evaluation or inference config the trained value
where the user set none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import _check_plain, load_weights_file

__all__ = [
    "MODEL_SETTINGS_KEY",
    "attach_model_settings",
    "check_model_settings",
    "model_settings",
    "read_model_settings",
    "trained_setting",
]

#: the key of the settings in a saved state dict's ``_metadata`` (no module of a network has this name)
MODEL_SETTINGS_KEY = "modan_monai"

logger = logging.getLogger(__name__)


def _encoder_of(network: nn.Module) -> nn.Module | None:
    module = getattr(network, "module", network)  # DistributedDataParallel
    encoder = getattr(module, "encoder", None)
    return encoder if isinstance(encoder, nn.Module) else None


def model_settings(
    network: nn.Module,
    task: str,
    image_size: int | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The settings to store with ``network``'s weights: the task, input size, encoder architecture and stem.

    Args:
        network: the trained network (a ``ClassificationModel``, ``SegmentationUNet``... with an ``encoder``).
        task: what the weights do (``"classification"``, ``"segmentation"``).
        image_size: the side (or sizes) of the images the network was trained on.
        class_names: the classes (or structures) of the output channels.
        extra: further plain values (e.g. ``structures``).

    Returns:
        ``{"task", "image_size", "arch", "stem", "class_names", **extra}``; ``arch`` / ``stem`` are those of the
        built encoder (``None`` where the network has no registered encoder).

    Raises:
        ValueError: a value that is not plain (str, int, float, bool, None, list, dict).
    """
    encoder = _encoder_of(network)
    arch = None
    if encoder is not None:
        report = getattr(encoder, "init_report", None)
        arch = report.get("arch") if isinstance(report, Mapping) else None
        if arch is None:
            from .registry import encoder_arch  # the registry imports the checkpoint module

            try:
                arch = encoder_arch(encoder)
            except ValueError:
                arch = None
    kwargs = getattr(encoder, "encoder_kwargs", None) if encoder is not None else None
    stem = kwargs.get("stem") if isinstance(kwargs, Mapping) else getattr(encoder, "stem", None)
    settings = {
        "task": task,
        "image_size": _plain(image_size),
        "arch": arch,
        "stem": stem,
        "class_names": None if class_names is None else [str(c) for c in class_names],
        **{k: _plain(v) for k, v in extra.items()},
    }
    _check_plain(settings, "model settings")
    return settings


def _plain(value: Any) -> Any:
    """Tuples as lists (what a JSON config and ``torch.load`` give back)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def attach_model_settings(state: Mapping[str, torch.Tensor], settings: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A copy of the state dict ``state`` whose ``_metadata`` holds ``settings`` under :data:`MODEL_SETTINGS_KEY`.

    Args:
        state: a ``state_dict()`` (its tensors are not copied).
        settings: plain values (e.g. from :func:`model_settings`).

    Returns:
        An ``OrderedDict`` of the same tensors, for ``torch.save``.

    Raises:
        ValueError: a value of ``settings`` that is not plain.
    """
    from collections import OrderedDict

    _check_plain(dict(settings), "model settings")
    out: OrderedDict[str, torch.Tensor] = OrderedDict(state)
    metadata = OrderedDict(getattr(state, "_metadata", None) or {})
    metadata[MODEL_SETTINGS_KEY] = _plain(dict(settings))
    out._metadata = metadata  # type: ignore[attr-defined]
    return out


def read_model_settings(path: str | Path, missing_ok: bool = False) -> dict[str, Any]:
    """The training settings stored in a saved model (``{}`` for a file written without them).

    Args:
        path: a ``model.pt`` (read with ``torch.load(weights_only=True)``).
        missing_ok: return ``{}`` when ``path`` does not exist (an inference config whose weights come later).

    Returns:
        The settings dict (``task``, ``image_size``, ``arch``, ``stem``, ``class_names``...), or ``{}``.

    Raises:
        FileNotFoundError: ``path`` does not exist (unless ``missing_ok``).
        ValueError: a damaged file or one holding more than tensors and plain values, naming it.
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return {}
    loaded = load_weights_file(path, map_location="cpu", what="model weights")
    metadata = getattr(loaded, "_metadata", None)
    settings = metadata.get(MODEL_SETTINGS_KEY) if isinstance(metadata, Mapping) else None
    if settings is None and isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        metadata = getattr(loaded["model"], "_metadata", None)
        settings = metadata.get(MODEL_SETTINGS_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(settings, Mapping):
        logger.warning(f"model weights {path} hold no training settings (written before they were stored, or by "
                       "another tool): the config's values are used unchecked")
        return {}
    return dict(settings)


def trained_setting(settings: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """``settings[key]`` when the saved model recorded it, else ``default`` (the config's own value).

    Args:
        settings: what :func:`read_model_settings` returned.
        key: the setting (``"image_size"``, ``"stem"``...).
        default: the value without a recorded setting.

    Returns:
        The trained value or ``default``.
    """
    value = settings.get(key)
    return default if value is None else value


def _same(a: Any, b: Any) -> bool:
    return _plain(a) == _plain(b)


def check_model_settings(
    saved: Mapping[str, Any], requested: Mapping[str, Any], where: str | Path, ids: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Refuse settings that contradict those a model was trained with, naming both values.

    A setting is compared when both sides give it (not ``None``); a model saved without settings (``saved`` empty)
    is not checked.

    Args:
        saved: the model's settings (:func:`read_model_settings`).
        requested: the settings of this run (e.g. :func:`model_settings` of the network this config built, with
            the config's ``image_size`` and ``class_names``).
        where: the model file (named in the error).
        ids: what sets each key here, where it is not the config id of that name (default ``"config id '<key>'"``).

    Returns:
        The saved settings updated with the requested ones that the model did not record.

    Raises:
        ValueError: naming each contradicting setting, the config id to change, the value asked for and the value
            the model was trained with.
    """
    ids = {"task": "the bundle's task", **dict(ids or {})}
    clashes = [
        f"{key} is {requested[key]!r} here ({ids.get(key, f'config id {key!r}')}) but {saved[key]!r} in training"
        for key in requested
        if requested[key] is not None and saved.get(key) is not None and not _same(requested[key], saved[key])
    ]
    if clashes:
        raise ValueError(
            f"model weights {where} do not fit this run's settings: " + "; ".join(clashes)
            + ". Drop these overrides (the trained values are used when none is given) or give the weights of a "
            "model trained with these settings."
        )
    merged = dict(saved)
    merged.update({k: v for k, v in requested.items() if v is not None and saved.get(k) is None})
    return merged
