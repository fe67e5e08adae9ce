"""The localizability (DINO) head of Adam-v2: an MLP, L2 normalisation and a weight-normalised last layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead"]


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"DINOHead {name} must be a positive integer, got {value!r}.")


class DINOHead(nn.Module):
    """DINO projection head used by Adam-v2 for localizability (Hosseinzadeh Taher et al. 2024, section 3; Caron et
    al. 2021, DINO).

    ``Linear(in -> hidden) - GELU - [Linear(hidden -> hidden) - GELU] * (num_layers - 2) - Linear(hidden ->
    bottleneck)``, L2 normalisation, then a weight-normalised ``Linear(bottleneck -> out, no bias)``. With
    ``num_layers=1`` the MLP is the single ``Linear(in -> bottleneck)``. The MLP's linear weights are drawn from a
    truncated normal (std 0.02, cut at +-2) and its biases are zero. With ``use_bn`` (DINO's ``use_bn_in_head``,
    off by default as in the official release) a ``BatchNorm1d(hidden)`` follows each hidden ``Linear``, before
    its GELU.

    The last layer is ``torch.nn.utils.parametrizations.weight_norm`` of a ``Linear``: weight ``= g * v / ||v||``
    per output row, with ``g`` (``last_layer.parametrizations.weight.original0``, shape ``(out, 1)``) set to 1.
    With ``norm_last_layer`` (official default) ``g`` is not trainable, so every row of ``last_layer.weight`` has
    norm 1 and the logits are cosines; otherwise ``g`` starts at 1 and trains. ``v`` keeps PyTorch's ``Linear``
    initialisation, as in the official release, which initialises the MLP before creating the last layer. The
    parametrization (not the deprecated ``torch.nn.utils.weight_norm`` hook) survives ``copy.deepcopy`` and a
    ``state_dict`` round trip, which the EMA teacher and the checkpoints need.

    Args:
        in_features: backbone feature size ``D`` (512 for ResNet-18, 2048 for ResNet-50).
        hidden_features: MLP width (2048 official).
        bottleneck_features: size of the normalised bottleneck (256 official).
        out_features: number of prototypes ``K`` (65536 official).
        num_layers: number of MLP linear layers (3 official).
        norm_last_layer: fix the last layer's norm ``g`` to 1 (not trainable).
        use_bn: put a ``BatchNorm1d`` after each hidden ``Linear`` of the MLP (DINO ``use_bn_in_head``).

    Shapes:
        - input: ``(N, in_features)``; output: ``(N, out_features)`` logits.

    Raises:
        ValueError: a size or ``num_layers`` that is not a positive integer (naming the argument).

    Example:
        >>> head = DINOHead(512, hidden_features=32, bottleneck_features=16, out_features=64)
        >>> head(torch.randn(4, 512)).shape
        torch.Size([4, 64])
        >>> bool(torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(64)))
        True
    """

    def __init__(
        self,
        in_features: int = 512,
        hidden_features: int = 2048,
        bottleneck_features: int = 256,
        out_features: int = 65536,
        num_layers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("hidden_features", hidden_features),
            ("bottleneck_features", bottleneck_features),
            ("out_features", out_features),
            ("num_layers", num_layers),
        ):
            _check_size(name, value)
        self.in_features = in_features
        self.out_features = out_features
        self.norm_last_layer = bool(norm_last_layer)
        self.use_bn = bool(use_bn)

        def hidden(fan_in: int) -> list[nn.Module]:
            linear = nn.Linear(fan_in, hidden_features)
            return [linear, nn.BatchNorm1d(hidden_features), nn.GELU()] if self.use_bn else [linear, nn.GELU()]

        if num_layers == 1:
            self.mlp: nn.Module = nn.Linear(in_features, bottleneck_features)
        else:
            layers: list[nn.Module] = hidden(in_features)
            for _ in range(num_layers - 2):
                layers += hidden(hidden_features)
            layers.append(nn.Linear(hidden_features, bottleneck_features))
            self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_features, out_features, bias=False))
        norm = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            norm.fill_(1.0)
        norm.requires_grad_(not self.norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, out_features)`` of ``x (N, in_features)``."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"DINOHead expects (N, {self.in_features}) features, got shape {tuple(x.shape)}.")
        return self.last_layer(F.normalize(self.mlp(x), p=2.0, dim=-1))
