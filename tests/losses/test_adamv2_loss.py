"""AdamV2Loss's optional KoLeo term (DINOv2) and :func:`koleo_loss` against a plain nearest-neighbour loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modan_monai.losses.adamv2 import AdamV2Loss, koleo_loss
from modan_monai.losses.dino import DINOLoss
from modan_monai.losses.part_whole import CompositionLoss, DecompositionLoss


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _koleo_reference(features: torch.Tensor) -> float:
    """-mean_i log(min_{j != i} ||x_i - x_j||) over the L2-normalised rows, with plain loops."""
    rows = [r / r.norm() for r in features.double()]
    logs = []
    for i, row in enumerate(rows):
        logs.append(math.log(min(float((row - other).norm()) for j, other in enumerate(rows) if j != i)))
    return -sum(logs) / len(logs)


@pytest.mark.parametrize("n,d", [(2, 3), (7, 5), (16, 32)])
def test_koleo_matches_nearest_neighbour_loop(n: int, d: int) -> None:
    features = _randn(n, d, seed=n)
    np.testing.assert_allclose(koleo_loss(features).item(), _koleo_reference(features), rtol=1e-5)


def test_koleo_identity_and_it_pushes_a_collapsed_batch_apart() -> None:
    # orthogonal unit rows are sqrt(2) apart: the loss is exactly -log(sqrt(2))
    np.testing.assert_allclose(koleo_loss(3.0 * torch.eye(4)).item(), -0.5 * math.log(2.0), rtol=1e-6)
    collapsed = (torch.ones(6, 8) + 1e-3 * _randn(6, 8, seed=1).float()).requires_grad_(True)
    assert koleo_loss(collapsed).item() > koleo_loss(_randn(6, 8, seed=2)).item()
    koleo_loss(collapsed).backward()
    stepped = collapsed.detach() - 1e-4 * collapsed.grad
    assert koleo_loss(stepped).item() < koleo_loss(collapsed.detach()).item()


def test_koleo_term_of_adamv2_loss() -> None:
    k, dim = 8, 5
    pred = {
        "student_logits": _randn(4, 3, k, seed=10), "teacher_logits": _randn(4, 1, k, seed=11),
        "composed": _randn(4, dim, seed=12), "teacher_whole": _randn(4, dim, seed=13),
        "decomposed": _randn(4, 4, dim, seed=14), "teacher_parts": _randn(4, 4, dim, seed=15),
        "student_global_features": _randn(4, 2, 6, seed=16),
    }
    out = AdamV2Loss(DINOLoss(k), CompositionLoss(), DecompositionLoss(), koleo_weight=0.1)(pred)
    assert set(out) == {"loss", "loc", "comp", "dec", "koleo", "ln_K"}
    koleo = sum(_koleo_reference(pred["student_global_features"][:, v]) for v in range(2))  # DINOv2: summed over views
    np.testing.assert_allclose(out["koleo"].item(), koleo, rtol=1e-5)
    np.testing.assert_allclose(
        out["loss"].item(), (out["loc"] + out["comp"] + out["dec"] + 0.1 * out["koleo"]).item(), rtol=1e-6
    )
    default = AdamV2Loss(DINOLoss(k), CompositionLoss(), DecompositionLoss())
    assert "student_global_features" not in default.required_keys and "koleo" not in default(pred)


def test_koleo_errors_are_named() -> None:
    with pytest.raises(ValueError, match="koleo_weight"):
        AdamV2Loss(DINOLoss(8), koleo_weight=-0.1)
    with pytest.raises(ValueError, match=r"\(1, 4\)"):
        koleo_loss(torch.zeros(1, 4))
    one_image = {"student_logits": torch.zeros(1, 2, 8), "teacher_logits": torch.zeros(1, 1, 8),
                 "student_global_features": torch.zeros(1, 2, 4)}
    with pytest.raises(ValueError, match=r"koleo_weight 0.1 needs at least 2 images per batch.*batch of 1"):
        AdamV2Loss(DINOLoss(8), koleo_weight=0.1)(one_image)
    with pytest.raises(KeyError, match="student_global_features"):
        AdamV2Loss(DINOLoss(8), koleo_weight=0.1)(
            {"student_logits": torch.zeros(2, 2, 8), "teacher_logits": torch.zeros(2, 1, 8)}
        )
