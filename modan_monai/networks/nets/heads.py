"""Projection head and the models that wrap an encoder for pretraining and for classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassificationModel", "ContrastiveModel", "ProjectionHead"]


class ProjectionHead(nn.Module):
    """MLP projection head ``Linear -> ReLU -> Linear`` with L2-normalised output (MulSupCon reference).

    Args:
        in_features: encoder feature size (512 for ResNet-18).
        hidden_features: hidden width.
        out_features: projection size ``D``.

    Shapes:
        - input: ``(B, in_features)``; output: ``(B, out_features)`` with unit-norm rows.

    Example:
        >>> head = ProjectionHead(512, 512, 128)
        >>> head(torch.randn(4, 512)).norm(dim=1)
        tensor([1.0000, 1.0000, 1.0000, 1.0000], grad_fn=<LinalgVectorNormBackward0>)
    """

    def __init__(self, in_features: int = 512, hidden_features: int = 512, out_features: int = 128) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden_features),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_features, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project and L2-normalise ``x (B, in_features)`` -> ``(B, out_features)``."""
        return F.normalize(self.mlp(x), p=2.0, dim=1)


def _check_image_batch(x: torch.Tensor, name: str) -> None:
    if x.ndim < 3:
        raise ValueError(f"{name} expects (B, C, *spatial) or (B, V, C, *spatial) input, got shape {tuple(x.shape)}.")


class ContrastiveModel(nn.Module):
    """Encoder + projection head applied to every view of a multi-view batch.

    The ``B * V`` views are encoded in one pass (``(B, V, C, H, W) -> (B * V, C, H, W)``, image-major) and the
    projections are reshaped back so that ``output[b, v]`` is view ``v`` of image ``b``: the layout
    :class:`modan_monai.losses.MulSupConLoss` expects.

    Args:
        encoder: feature extractor mapping ``(B, C, *spatial)`` to ``(B, F)`` (e.g. ``ResNet18Encoder``).
        head: projection head mapping ``(B, F)`` to ``(B, D)`` (e.g. ``ProjectionHead``).

    Shapes:
        - input: ``(B, V, C, *spatial)``, or ``(B, C, *spatial)`` which is treated as ``V = 1``. The number of
          dimensions tells them apart, using ``encoder.spatial_dims`` (default 2).
        - output: ``(B, V, D)``.

    Example:
        >>> from modan_monai.networks.nets import ResNet18Encoder
        >>> model = ContrastiveModel(ResNet18Encoder(), ProjectionHead(512, 512, 128))
        >>> model(torch.zeros(2, 2, 1, 32, 32)).shape
        torch.Size([2, 2, 128])
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode and project every view; returns ``(B, V, D)``."""
        _check_image_batch(x, "ContrastiveModel")
        spatial_dims = getattr(self.encoder, "spatial_dims", 2)
        if x.ndim == spatial_dims + 2:
            x = x.unsqueeze(1)
        elif x.ndim != spatial_dims + 3:
            raise ValueError(
                f"ContrastiveModel expects (B, V, C, *spatial) or (B, C, *spatial) with {spatial_dims} spatial "
                f"dims, got shape {tuple(x.shape)}."
            )
        batch, views = x.shape[:2]
        projections = self.head(self.encoder(x.reshape(batch * views, *x.shape[2:])))
        return projections.reshape(batch, views, -1)


class ClassificationModel(nn.Module):
    """Encoder + linear classifier (optionally with dropout) for fine-tuning and linear probing.

    Linear probing (``freeze_encoder=True``): the encoder's parameters get ``requires_grad=False`` and the
    encoder stays in eval mode even when ``model.train()`` is called, so its BatchNorm running statistics do not
    move (the official MulSupCon code let them update during "linear" evaluation). Only the classifier trains.

    Args:
        encoder: feature extractor mapping ``(B, C, *spatial)`` to ``(B, F)``; ``F`` is read from
            ``encoder.out_features``.
        num_classes: number of output logits.
        dropout: dropout probability before the linear layer.
        freeze_encoder: freeze the encoder (weights and BatchNorm statistics) for linear probing.

    Shapes:
        - input: ``(B, C, *spatial)``, or a multi-view batch ``(B, V, C, *spatial)`` of which view 0 is used.
        - output: ``(B, num_classes)`` logits.

    Raises:
        ValueError: when ``num_classes < 1`` or the encoder has no ``out_features``.

    Example:
        >>> from modan_monai.networks.nets import ResNet18Encoder
        >>> model = ClassificationModel(ResNet18Encoder(), num_classes=3)
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 3])
    """

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.0, freeze_encoder: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        in_features = getattr(encoder, "out_features", None)
        if not isinstance(in_features, int):
            raise ValueError(f"encoder {type(encoder).__name__} has no integer attribute out_features.")
        self.encoder = encoder
        self.dropout = nn.Dropout(p=dropout)
        self.classifier = nn.Linear(in_features, num_classes)
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> ClassificationModel:
        """Set training mode; a frozen encoder (linear probing) is kept in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for ``x (B, C, *spatial)`` (or view 0 of ``(B, V, C, *spatial)``)."""
        _check_image_batch(x, "ClassificationModel")
        spatial_dims = getattr(self.encoder, "spatial_dims", 2)
        if x.ndim == spatial_dims + 3:
            x = x[:, 0]
        elif x.ndim != spatial_dims + 2:
            raise ValueError(
                f"ClassificationModel expects (B, C, *spatial) or (B, V, C, *spatial) with {spatial_dims} spatial "
                f"dims, got shape {tuple(x.shape)}."
            )
        return self.classifier(self.dropout(self.encoder(x)))
