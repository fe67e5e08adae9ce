"""LARS: parameter groups, exclusion of 1-D parameters, trust ratio, state for resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from modan_monai.optimizers import LARS, lars_param_groups


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))


def test_param_groups_split_1d_parameters() -> None:
    net = model()
    net[0].bias.requires_grad_(False)
    groups = lars_param_groups(net, weight_decay=0.1)
    assert [g["lars_exclude"] for g in groups] == [False, True]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    assert len(groups[1]["params"]) == 2  # BatchNorm weight and bias; the frozen bias is left out


@pytest.mark.parametrize("use_groups", [True, False])
def test_excluded_and_regular_updates(use_groups: bool) -> None:
    net = model()
    lr, wd, eta = 0.5, 0.1, 0.001
    params = lars_param_groups(net, wd) if use_groups else net.parameters()
    optimizer = LARS(params, lr=lr, momentum=0.9, weight_decay=wd, eta=eta)
    net(torch.randn(5, 4)).pow(2).sum().backward()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
    optimizer.step()
    for name, param in net.named_parameters():
        w, g = before[name], grads[name]
        if param.ndim == 1:  # bias / norm: plain momentum SGD (first step), no weight decay, no trust ratio
            expected = w - lr * g
        else:
            update = g + wd * w
            expected = w - lr * (eta * w.norm() / update.norm()) * update
        np.testing.assert_allclose(param.detach().numpy(), expected.numpy(), rtol=1e-5, atol=1e-7, err_msg=name)


def test_zero_norm_parameter_uses_trust_ratio_one() -> None:
    weight = nn.Parameter(torch.zeros(2, 2))
    optimizer = LARS([weight], lr=0.1, weight_decay=0.0)
    weight.grad = torch.ones(2, 2)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((2, 2), -0.1))


def test_state_dict_round_trip_keeps_momentum() -> None:
    net = model()
    optimizer = LARS(lars_param_groups(net, 1e-6), lr=0.1)
    net(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    restored = LARS(lars_param_groups(net, 1e-6), lr=0.1)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.param_groups[1]["lars_exclude"] is True
    for p in net.parameters():
        torch.testing.assert_close(restored.state[p]["momentum_buffer"], optimizer.state[p]["momentum_buffer"])


def test_negative_hyper_parameters_raise() -> None:
    with pytest.raises(ValueError, match="eta"):
        LARS(model().parameters(), eta=-1.0)
