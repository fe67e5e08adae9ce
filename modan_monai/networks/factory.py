"""Build the downstream classifier (encoder + linear head) from any supported initialisation."""

from __future__ import annotations

import logging
import os
from typing import Any

from .nets import ClassificationModel
from .registry import build_encoder

__all__ = ["build_classifier"]


def build_classifier(
    init: str = "scratch",
    num_classes: int = 2,
    stem: str | None = None,
    freeze_encoder: bool = False,
    dropout: float = 0.0,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    logger: logging.Logger | None = None,
    arch: str | None = None,
    restore_from: str | os.PathLike | None = None,
    **encoder_kwargs: Any,
) -> ClassificationModel:
    """A ``ClassificationModel`` on the encoder that :func:`~modan_monai.networks.registry.build_encoder` builds.

    Args:
        init: ``"scratch"``, ``"imagenet:<torchvision resnet18 state_dict file>"`` or the path of an encoder /
            training checkpoint of any pretraining method.
        num_classes: number of logits (2 for the binary downstream tasks).
        stem: encoder stem, ``"3x3"`` or ``"7x7"``; ``None``: the checkpoint's (``"3x3"`` for ``"scratch"`` and
            ImageNet weights). A stem other than the checkpoint's is an error naming the keys.
        freeze_encoder: linear probing (frozen encoder, BatchNorm in eval mode).
        dropout: dropout before the linear layer.
        spatial_dims: spatial dimensions of the encoder; ``None``: the checkpoint's (2 otherwise).
        in_channels: input channels of the encoder; ``None``: the checkpoint's (1 otherwise).
        logger: receives what was loaded / re-initialised.
        arch: a registered architecture (``"resnet18"``, ``"cb_resnet18"`` (MLVICX), ...) overriding the one
            recorded in (or recognised from) the checkpoint; ``None``: the checkpoint's, ``"resnet18"`` for
            ``"scratch"`` and ImageNet weights.
        restore_from: the file whose weights the caller loads into the model right after (the classify bundle's
            evaluate / inference configs: ``model.pt`` through a ``CheckpointLoader``); only changes the log, which
            then names this file rather than a random initialisation.
        encoder_kwargs: further encoder arguments overriding the checkpoint's (e.g. ``reduction``).

    Returns:
        The model (in training mode, on the CPU); ``model.encoder.init_report`` says what was loaded.

    Raises:
        FileNotFoundError: when a checkpoint file does not exist.
        ValueError: when the checkpoint does not match the encoder (naming the keys), or for bad arguments.

    Example:
        >>> import torch
        >>> model = build_classifier("scratch", num_classes=2, freeze_encoder=True)
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 2])
    """
    encoder = build_encoder(
        init,
        arch,
        logger=logger,
        restore_from=restore_from,
        stem=stem,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        **encoder_kwargs,
    )
    return ClassificationModel(encoder, num_classes=num_classes, dropout=dropout, freeze_encoder=freeze_encoder)
