"""Build the downstream classifier (encoder + linear head) from any supported initialisation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoint import _ARCHITECTURES, ENCODER_CHECKPOINT_FORMAT, _extract_encoder_state, read_checkpoint
from .init import IMAGENET_PREFIX, initialise_encoder
from .nets import ClassificationModel

__all__ = ["build_classifier", "checkpoint_architecture"]

#: constructor arguments that only the context-bottleneck encoder takes (read from its checkpoints)
_CB_KWARGS = ("reduction", "channel_gate", "spatial_kernel_size")


def checkpoint_architecture(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The encoder architecture stored in a pretraining checkpoint, and its architecture-specific arguments.

    An encoder checkpoint (``modan_monai.encoder.v1``) records ``arch`` and ``encoder_kwargs``; for a full
    training checkpoint the architecture is recognised by its keys (``context_blocks.*``: ``"cb_resnet18"``).

    Args:
        path: encoder or training checkpoint file.

    Returns:
        ``(arch, extra_kwargs)``: e.g. ``("cb_resnet18", {"reduction": 2, "channel_gate": "shared",
        "spatial_kernel_size": 7})`` or ``("resnet18", {})``.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file holds no state dict or an unknown ``arch``.
    """
    checkpoint = read_checkpoint(path)
    if checkpoint.get("format") == ENCODER_CHECKPOINT_FORMAT and "arch" in checkpoint:
        arch = checkpoint["arch"]
        kwargs = checkpoint.get("encoder_kwargs")
        kwargs = kwargs if isinstance(kwargs, Mapping) else {}
    else:
        state = _extract_encoder_state(checkpoint, f"checkpoint {path}")
        arch = "cb_resnet18" if any(k.startswith("context_blocks.") for k in state) else "resnet18"
        kwargs = {}
    if arch not in _ARCHITECTURES:
        raise ValueError(f"checkpoint {path}: unknown arch {arch!r}, known: {sorted(_ARCHITECTURES)}.")
    extra = {k: kwargs[k] for k in _CB_KWARGS if k in kwargs} if arch == "cb_resnet18" else {}
    return arch, extra


def build_classifier(
    init: str = "scratch",
    num_classes: int = 2,
    stem: str = "3x3",
    freeze_encoder: bool = False,
    dropout: float = 0.0,
    spatial_dims: int = 2,
    in_channels: int = 1,
    logger: logging.Logger | None = None,
    arch: str | None = None,
) -> ClassificationModel:
    """A ``ClassificationModel`` on a ResNet-18 encoder initialised by :func:`initialise_encoder`.

    Args:
        init: ``"scratch"``, ``"imagenet:<torchvision resnet18 state_dict file>"`` or the path of an encoder /
            training checkpoint written by a pretraining bundle.
        num_classes: number of logits (2 for the binary downstream tasks).
        stem: encoder stem, ``"3x3"`` or ``"7x7"``; must match the checkpoint's.
        freeze_encoder: linear probing (frozen encoder, BatchNorm in eval mode).
        dropout: dropout before the linear layer.
        spatial_dims: spatial dimensions of the encoder.
        in_channels: input channels of the encoder.
        logger: receives what was loaded / re-initialised.
        arch: ``"resnet18"`` (``ResNet18Encoder``) or ``"cb_resnet18"`` (``CBResNet18Encoder``, MLVICX). ``None``:
            the architecture recorded in the checkpoint given as ``init`` (with its context-bottleneck
            arguments), ``"resnet18"`` for ``"scratch"`` and ImageNet weights.

    Returns:
        The model (in training mode, on the CPU).

    Raises:
        FileNotFoundError: when a checkpoint file does not exist.
        ValueError: when the checkpoint does not match the encoder (naming the keys), or for bad arguments.

    Example:
        >>> import torch
        >>> model = build_classifier("scratch", num_classes=2, freeze_encoder=True)
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 2])
    """
    is_checkpoint = isinstance(init, str) and init.strip() not in ("", "scratch") and not init.strip().startswith(
        IMAGENET_PREFIX
    )
    extra: dict[str, Any] = {}
    if is_checkpoint:
        stored_arch, stored_extra = checkpoint_architecture(Path(init.strip()).expanduser())
        if arch is None or arch == stored_arch:
            arch, extra = stored_arch, stored_extra
    arch = "resnet18" if arch is None else arch
    if arch not in _ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(_ARCHITECTURES)}, got {arch!r}.")
    encoder = _ARCHITECTURES[arch](spatial_dims=spatial_dims, in_channels=in_channels, stem=stem, **extra)
    initialise_encoder(encoder, init, logger=logger)
    return ClassificationModel(encoder, num_classes=num_classes, dropout=dropout, freeze_encoder=freeze_encoder)
