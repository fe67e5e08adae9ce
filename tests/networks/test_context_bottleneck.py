"""Context-bottleneck block (MLVICX): gate identities, shapes and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modan_monai.networks import ContextBottleneck


def zero_weights(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.zero_()


@pytest.mark.parametrize("channel_gate", ["shared", "conv"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_zero_weights_give_a_quarter_of_the_input(channel_gate: str, spatial_dims: int) -> None:
    block = ContextBottleneck(spatial_dims, 8, reduction=2, channel_gate=channel_gate)
    zero_weights(block)
    x = torch.randn(3, 8, *([6] * spatial_dims))
    out = block(x)
    assert torch.equal(out, 0.25 * x)  # sigmoid(0) = 0.5 exactly, twice


def test_matches_plain_reference() -> None:
    torch.manual_seed(0)
    block = ContextBottleneck(2, 8, reduction=4, channel_gate="shared")
    x = torch.randn(2, 8, 5, 7)
    f = lambda v: block.channel.f[2](torch.relu(block.channel.f[0](v)))  # noqa: E731
    a_c = torch.sigmoid(f(x.mean(dim=(2, 3), keepdim=True)) + f(x.amax(dim=(2, 3), keepdim=True)))
    k = a_c * x
    a_s = torch.sigmoid(block.spatial.conv(torch.cat([k.mean(1, keepdim=True), k.amax(1, keepdim=True)], 1)))
    np.testing.assert_allclose(block(x).detach().numpy(), (a_s * k).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_paper_gate_is_a_single_conv_and_reduction_sets_the_bottleneck() -> None:
    paper = ContextBottleneck(2, 16, channel_gate="conv")
    assert [tuple(p.shape) for p in paper.channel.parameters()] == [(16, 16, 1, 1)]
    shared = ContextBottleneck(2, 16, reduction=4)
    assert [tuple(p.shape) for p in shared.channel.parameters()] == [(4, 16, 1, 1), (16, 4, 1, 1)]
    assert tuple(shared.spatial.conv.weight.shape) == (1, 2, 7, 7)
    assert all(not hasattr(m, "bias") or m.bias is None for m in shared.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"channel_gate": "mlp"}, "channel_gate"), ({"reduction": 32}, "reduction"), ({"spatial_kernel_size": 4}, "odd")],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ContextBottleneck(2, 16, **kwargs)
