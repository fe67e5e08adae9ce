"""Weights written by the network tests (imported by them; nothing is committed or downloaded)."""

from __future__ import annotations

import torch

__all__ = ["torchvision_resnet18_state"]


def torchvision_resnet18_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's ResNet-18 key names and shapes (RGB 7x7 conv1, 1000-class fc)."""
    gen = torch.Generator().manual_seed(seed)

    def conv(o: int, i: int, k: int) -> torch.Tensor:
        return torch.randn(o, i, k, k, generator=gen)

    def bn(prefix: str, c: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": torch.rand(c, generator=gen) + 0.5,
            f"{prefix}.bias": torch.randn(c, generator=gen),
            f"{prefix}.running_mean": torch.randn(c, generator=gen),
            f"{prefix}.running_var": torch.rand(c, generator=gen) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(100),
        }

    state = {"conv1.weight": conv(64, 3, 7), **bn("bn1", 64)}
    inplanes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            in_c = inplanes if block == 0 else planes
            state[f"{p}.conv1.weight"] = conv(planes, in_c, 3)
            state.update(bn(f"{p}.bn1", planes))
            state[f"{p}.conv2.weight"] = conv(planes, planes, 3)
            state.update(bn(f"{p}.bn2", planes))
            if block == 0 and layer > 1:
                state[f"{p}.downsample.0.weight"] = conv(planes, in_c, 1)
                state.update(bn(f"{p}.downsample.1", planes))
        inplanes = planes
    state["fc.weight"] = torch.randn(1000, 512, generator=gen)
    state["fc.bias"] = torch.randn(1000, generator=gen)
    return state
