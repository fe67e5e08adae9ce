"""Build the downstream classifier (encoder + linear head) from any supported initialisation."""

from __future__ import annotations

import logging

from .init import initialise_encoder
from .nets import ClassificationModel, ResNet18Encoder

__all__ = ["build_classifier"]


def build_classifier(
    init: str = "scratch",
    num_classes: int = 2,
    stem: str = "3x3",
    freeze_encoder: bool = False,
    dropout: float = 0.0,
    spatial_dims: int = 2,
    in_channels: int = 1,
    logger: logging.Logger | None = None,
) -> ClassificationModel:
    """A ``ClassificationModel`` on a ``ResNet18Encoder`` initialised by :func:`initialise_encoder`.

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
    encoder = ResNet18Encoder(spatial_dims=spatial_dims, in_channels=in_channels, stem=stem)
    initialise_encoder(encoder, init, logger=logger)
    return ClassificationModel(encoder, num_classes=num_classes, dropout=dropout, freeze_encoder=freeze_encoder)
