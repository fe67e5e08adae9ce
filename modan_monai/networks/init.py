"""Initialise an encoder for downstream training: from scratch, a pretraining checkpoint or ImageNet weights.

Three sources are accepted by :func:`initialise_encoder`:

- ``"scratch"``: the encoder keeps its random (PyTorch default) initialisation.
- ``"imagenet:<file>"``: a torchvision-style ResNet-18 ``state_dict`` saved with ``torch.save`` in a local file
  (nothing is ever downloaded). Its keys (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4.1.bn2``,
  ``layerN.0.downsample.0/1``, ``fc``) are the encoder's own names. The RGB ``conv1`` (64, 3, 7, 7) is summed over
  its input channels when the encoder has a 1-channel 7x7 stem; a 3x3 stem cannot take 7x7 weights, so ``conv1``
  keeps its random initialisation; ``fc`` (the 1000-class ImageNet classifier) is dropped. What was loaded and what
  was re-initialised is logged and returned.
- any other string: a checkpoint file written by a pretraining bundle, either the encoder checkpoint
  (``modan_monai.encoder.v1``, ``encoder.pt``) or a full training checkpoint (``checkpoint_epoch=N.pt``) whose
  ``network`` entry holds the encoder under ``encoder.``; loaded strictly by
  :func:`~modan_monai.networks.load_encoder_state`.

A checkpoint of another architecture is refused with a ``ValueError`` naming the mismatched keys.

:func:`initialise_encoder` loads into an encoder that already exists; the encoder registry's
:func:`~modan_monai.networks.registry.build_encoder` chooses and builds the architecture of a spec, then calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import _extract_encoder_state, load_encoder_state, read_checkpoint, state_dict_problems

__all__ = ["IMAGENET_PREFIX", "initialise_encoder", "parse_encoder_spec"]

IMAGENET_PREFIX = "imagenet:"
_IMAGENET_DROPPED = ("fc.weight", "fc.bias")
#: encoder modules that a torchvision ResNet-18 has no weights for (MLVICX context bottlenecks): left random
_NOT_IN_IMAGENET = ("context_blocks.",)


def parse_encoder_spec(spec: str) -> tuple[str, Path | None]:
    """Tell the three kinds of encoder spec apart.

    Args:
        spec: ``"scratch"``, ``"imagenet:<file>"`` or a checkpoint path (surrounding spaces are ignored, ``~`` is
            expanded).

    Returns:
        ``("scratch", None)``, ``("imagenet", <file>)`` or ``("checkpoint", <file>)``.

    Raises:
        ValueError: when ``spec`` is not a non-empty string.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"init must be 'scratch', 'imagenet:<file>' or a checkpoint path, got {spec!r}.")
    spec = spec.strip()
    if spec == "scratch":
        return "scratch", None
    if spec.startswith(IMAGENET_PREFIX):
        return "imagenet", Path(spec[len(IMAGENET_PREFIX) :]).expanduser()
    return "checkpoint", Path(spec).expanduser()


def _imagenet_state(encoder: nn.Module, path: Path, logger: logging.Logger) -> tuple[dict[str, torch.Tensor], list]:
    """Map a torchvision ResNet-18 state dict onto ``encoder``; returns (state to load, re-initialised keys)."""
    checkpoint = read_checkpoint(path)
    state = _extract_encoder_state(checkpoint, f"ImageNet weights {path}")
    expected = encoder.state_dict()
    dropped = sorted(k for k in state if k in _IMAGENET_DROPPED)
    state = {k: v for k, v in state.items() if k not in _IMAGENET_DROPPED}
    reinitialised: list[str] = []

    conv1 = state.get("conv1.weight")
    target = expected.get("conv1.weight")
    if conv1 is not None and target is not None and conv1.shape != target.shape:
        same_kernel = conv1.shape[2:] == target.shape[2:] and conv1.shape[0] == target.shape[0]
        if same_kernel and target.shape[1] == 1:
            # 1-channel input: a grey image g fed as RGB (g, g, g) gives sum_c w_c * g, hence the sum
            state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
            logger.info(
                f"ImageNet conv1.weight {tuple(conv1.shape)} summed over its {conv1.shape[1]} input channels "
                f"-> {tuple(target.shape)}"
            )
        elif not same_kernel:
            del state["conv1.weight"]
            reinitialised.append("conv1.weight")
            logger.warning(
                f"ImageNet conv1.weight {tuple(conv1.shape)} cannot initialise the encoder's "
                f"{getattr(encoder, 'stem', '?')} stem {tuple(target.shape)}: conv1 is re-initialised "
                "(random); use stem='7x7' to load it"
            )
    if dropped:
        logger.info(f"ImageNet classifier {dropped} dropped (not part of the encoder)")
    extra = sorted(k for k in expected if k.startswith(_NOT_IN_IMAGENET) and k not in state)
    if extra:
        reinitialised.extend(extra)
        logger.info(f"{len(extra)} context-bottleneck tensors have no ImageNet weights: random initialisation")

    _, _, problems = state_dict_problems(expected, state, allowed_missing=reinitialised)
    if problems:
        raise ValueError(
            f"ImageNet weights {path} are not a torchvision-style ResNet-18 for {type(encoder).__name__}: "
            + "; ".join(problems)
            + "."
        )
    return state, reinitialised


def _stem_hint(encoder: nn.Module, checkpoint: Mapping[str, Any]) -> str:
    """A hint naming the architecture / stem when an encoder checkpoint was trained with others, else ``""``."""
    from .registry import encoder_arch  # the registry imports this module

    hints = []
    arch = checkpoint.get("arch")
    try:
        own_arch = encoder_arch(encoder)
    except ValueError:
        own_arch = None
    if arch is not None and own_arch is not None and arch != own_arch:
        hints.append(f" The checkpoint holds a {arch!r} encoder, the encoder is {own_arch!r} (choose arch={arch!r}).")
    kwargs = checkpoint.get("encoder_kwargs")
    stem = getattr(encoder, "stem", None)
    if isinstance(kwargs, Mapping) and stem is not None and kwargs.get("stem", stem) != stem:
        hints.append(f" The checkpoint was trained with stem={kwargs['stem']!r}, the encoder has stem={stem!r}.")
    return "".join(hints)


def initialise_encoder(
    encoder: nn.Module, init: str, *, logger: logging.Logger | None = None, restore_from: str | Path | None = None
) -> dict[str, Any]:
    """Initialise ``encoder`` in place from scratch, a pretraining checkpoint or local ImageNet weights.

    Args:
        encoder: the encoder to initialise (any registered architecture, e.g.
            :class:`~modan_monai.networks.ResNet18Encoder` or :class:`~modan_monai.networks.CBResNet18Encoder`;
            ImageNet weights leave the latter's context bottlenecks at random initialisation). To build the
            architecture a checkpoint records, use :func:`~modan_monai.networks.registry.build_encoder`.
        init: ``"scratch"``, ``"imagenet:<path to a torchvision-style resnet18 state_dict>"``, or the path of an
            encoder checkpoint / full training checkpoint written by a pretraining bundle (see module docstring).
        logger: where to log what was loaded and re-initialised; default ``logging.getLogger(__name__)``.
        restore_from: the file whose weights the caller loads into the model next (the evaluate / inference configs'
            ``CheckpointLoader``); with ``"scratch"`` the log then names that file instead of a random initialisation.

    Returns:
        ``{"source": str, "loaded": [keys loaded], "reinitialised": [keys left at random initialisation]}``.

    Raises:
        FileNotFoundError: when the checkpoint file does not exist.
        ValueError: when the checkpoint does not match the encoder (naming the missing, unexpected and
            shape-mismatched keys), holds NaN / Inf weights (naming the file and the first such tensor), is
            empty, truncated or corrupt (naming the file), or ``init`` is empty.
    """
    logger = logger or logging.getLogger(__name__)
    kind, path = parse_encoder_spec(init)
    keys = list(encoder.state_dict())
    if kind == "scratch":
        if restore_from is not None:
            logger.info(f"encoder built for the weights restored from {restore_from}: {len(keys)} tensors")
        else:
            logger.info(f"encoder initialised from scratch (random): {len(keys)} tensors")
        return {"source": "scratch", "loaded": [], "reinitialised": keys}

    if kind == "imagenet":
        state, reinitialised = _imagenet_state(encoder, path, logger)
        encoder.load_state_dict(state, strict=False)
        loaded = [k for k in keys if k in state]
        logger.info(
            f"encoder initialised from ImageNet weights {path}: loaded {len(loaded)} tensors, re-initialised "
            f"{reinitialised or 'none'}"
        )
        return {"source": f"imagenet:{path}", "loaded": loaded, "reinitialised": reinitialised}

    checkpoint = read_checkpoint(path)
    _extract_encoder_state(checkpoint, f"checkpoint {path}")  # names the file for a missing or non-finite state
    try:
        load_encoder_state(encoder, checkpoint, strict=True)
    except ValueError as err:
        raise ValueError(f"checkpoint {path}: {err}{_stem_hint(encoder, checkpoint)}") from err
    what = "encoder checkpoint" if "format" in checkpoint else "training checkpoint"
    logger.info(f"encoder initialised from {what} {path}: loaded all {len(keys)} tensors")
    return {"source": str(path), "loaded": keys, "reinitialised": []}
