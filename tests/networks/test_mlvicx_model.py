"""MLVICX model: aggregation modes, expanders, output layout, trained aggregation parameters."""

from __future__ import annotations

import pytest
import torch

from modan_monai.losses import MLVICXLoss
from modan_monai.networks import CBResNet18Encoder, Expander, MLVICXModel, MultiLevelAggregation
from modan_monai.optimizers import LARS, lars_param_groups

LEVELS = [torch.randn(2, c, s, s) for c, s in zip((64, 64, 128, 256, 512), (32, 16, 8, 4, 2))]


@pytest.mark.parametrize("mode, channels", [("concat", 1024), ("sum", 96)])
@pytest.mark.parametrize("size, expected", [(None, 2), (4, 4)])
def test_aggregation_shapes(mode: str, channels: int, size: int | None, expected: int) -> None:
    agg = MultiLevelAggregation(2, (64, 64, 128, 256, 512), mode=mode, out_channels=96, size=size)
    assert agg.out_channels == channels
    assert agg(LEVELS).shape == (2, channels, expected, expected)


def test_concat_is_resize_then_concatenate() -> None:
    agg = MultiLevelAggregation(2, (64, 64, 128, 256, 512), mode="concat")
    expected = torch.cat(
        [torch.nn.functional.interpolate(f, size=(2, 2), mode="bilinear", align_corners=False) for f in LEVELS], 1
    )
    torch.testing.assert_close(agg(LEVELS), expected)
    with pytest.raises(ValueError, match="channels"):
        agg([f[:, :8] for f in LEVELS])


def test_expander_layout() -> None:
    expander = Expander(16, 32, 8)
    kinds = [type(m).__name__ for m in expander]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert expander(torch.randn(4, 16)).shape == (4, 8)
    assert Expander(16).out_features == 2048


@pytest.mark.parametrize("aggregation", ["concat", "sum"])
def test_output_layout(aggregation: str) -> None:
    model = MLVICXModel(CBResNet18Encoder(), aggregation=aggregation, expander_features=32).eval()
    x = torch.randn(3, 2, 1, 32, 32)
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"global": (3, 2, 32), "multilevel": (3, 2, 32)}
    single = model(x[:, 1])  # (B, C, H, W) is one view; eval-mode BatchNorm: per-sample results
    torch.testing.assert_close(single["global"][:, 0], out["global"][:, 1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="expects"):
        model(torch.zeros(2, 32, 32))


def test_aggregation_parameters_are_optimised_and_change() -> None:
    torch.manual_seed(0)
    model = MLVICXModel(CBResNet18Encoder(), aggregation="sum", aggregation_channels=16, expander_features=16)
    optimizer = LARS(lars_param_groups(model, 1e-6), lr=0.5)
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    agg_params = list(model.aggregation.parameters())
    assert agg_params and all(id(p) in optimised for p in agg_params)
    assert {id(p) for p in model.parameters()} == optimised
    before = [p.detach().clone() for p in agg_params]
    terms = MLVICXLoss()(model(torch.randn(4, 2, 1, 32, 32)))  # {"loss": total, "<term>": ...}
    terms["loss"].backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, agg_params))
