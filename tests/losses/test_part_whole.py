"""CompositionLoss / DecompositionLoss (Adam-v2 L_comp, L_dec) and the combined AdamV2Loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modan_monai.losses.adamv2 import AdamV2Loss
from modan_monai.losses.dino import DINOLoss
from modan_monai.losses.part_whole import CompositionLoss, DecompositionLoss


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_composition_equals_two_minus_two_cos_over_d() -> None:
    batch, dim = 3, 10
    composed, whole = _randn(batch, dim, seed=0).requires_grad_(True), _randn(batch, dim, seed=1).requires_grad_(True)
    cosines = [_cosine(composed[b].detach(), whole[b].detach()) for b in range(batch)]
    loss = CompositionLoss()(composed, whole)
    assert loss.dtype == torch.float32
    np.testing.assert_allclose(loss.item(), np.mean([(2 - 2 * c) / dim for c in cosines]), rtol=1e-5)
    per_sample = CompositionLoss(reduction="per_sample")(composed, whole)
    np.testing.assert_allclose(per_sample.item(), np.mean([2 - 2 * c for c in cosines]), rtol=1e-5)
    loss.backward()
    assert whole.grad is None and composed.grad is not None  # stop-gradient on the teacher


@pytest.mark.parametrize("reduction,scale", [("mean", 1.0), ("per_sample", None)])
def test_per_part_decomposition_equals_two_minus_two_cos(reduction: str, scale: float | None) -> None:
    batch, parts, dim = 2, 4, 6
    pred, target = _randn(batch, parts, dim, seed=2), _randn(batch, parts, dim, seed=3)
    terms = [2 - 2 * _cosine(pred[b, i], target[b, i]) for b in range(batch) for i in range(parts)]
    expected = np.mean(terms) / (dim if reduction == "mean" else 1)
    np.testing.assert_allclose(DecompositionLoss(reduction=reduction)(pred, target).item(), expected, rtol=1e-5)


def test_per_part_decomposition_is_zero_at_a_perfect_prediction() -> None:
    target = _randn(3, 4, 8, seed=4)
    scales = torch.tensor([0.5, 2.0, 7.0, 0.1], dtype=torch.float64).reshape(1, 4, 1)  # unequal part norms
    assert DecompositionLoss()(scales * target, target).item() == pytest.approx(0.0, abs=1e-7)
    assert DecompositionLoss()(_randn(3, 4, 8, seed=5), target).item() > 1e-3


@pytest.mark.parametrize("parts", [2, 4])
def test_concat_decomposition_at_equal_chunk_norms(parts: int) -> None:
    dim = 8
    target = _randn(2, parts, dim, seed=6)
    # chunks of equal norm pointing along their targets: after normalising the concatenation each has norm 1/sqrt(n)
    pred = 3.0 * torch.nn.functional.normalize(target, dim=-1)
    value = DecompositionLoss(norm="concat")(pred, target).item()
    np.testing.assert_allclose(value, (1 - 1 / math.sqrt(parts)) ** 2 / dim, rtol=1e-5)
    assert DecompositionLoss(norm="per_part")(pred, target).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    "loss_fn,pred_shape,target_shape,match",
    [
        (CompositionLoss(), (2, 8), (2, 4, 8), r"teacher_whole.*\(2, 4, 8\)"),
        (CompositionLoss(), (2, 8), (3, 8), r"composed \(2, 8\) and teacher_whole \(3, 8\)"),
        (DecompositionLoss(), (2, 32), (2, 4, 8), r"decomposed.*\(2, 32\)"),
        (DecompositionLoss(), (2, 4, 8), (2, 3, 8), r"\(2, 3, 8\)"),
    ],
)
def test_shape_errors_name_the_arguments(loss_fn, pred_shape, target_shape, match) -> None:
    with pytest.raises(ValueError, match=match):
        loss_fn(torch.zeros(pred_shape), torch.zeros(target_shape))


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="reduction"):
        CompositionLoss(reduction="sum")
    with pytest.raises(ValueError, match="norm"):
        DecompositionLoss(norm="global")
    with pytest.raises(ValueError, match="comp_weight"):
        AdamV2Loss(DINOLoss(8), comp_weight=-1.0)


def _pred(k: int = 8, dim: int = 5) -> dict[str, torch.Tensor]:
    return {
        "student_logits": _randn(2, 3, k, seed=10),
        "teacher_logits": _randn(2, 1, k, seed=11),
        "composed": _randn(2, dim, seed=12),
        "teacher_whole": _randn(2, dim, seed=13),
        "decomposed": _randn(2, 4, dim, seed=14),
        "teacher_parts": _randn(2, 4, dim, seed=15),
    }


def test_adamv2_terms_and_weighted_total() -> None:
    pred = _pred()
    out = AdamV2Loss(DINOLoss(8), CompositionLoss(), DecompositionLoss(), 0.5, 2.0, 3.0)(pred)
    loc = DINOLoss(8)(pred["student_logits"], pred["teacher_logits"])
    comp = CompositionLoss()(pred["composed"], pred["teacher_whole"])
    dec = DecompositionLoss()(pred["decomposed"], pred["teacher_parts"])
    assert set(out) == {"loss", "loc", "comp", "dec", "ln_K"}
    for name, value in (("loc", loc), ("comp", comp), ("dec", dec)):
        np.testing.assert_allclose(out[name].item(), value.item(), rtol=1e-6)
    np.testing.assert_allclose(out["loss"].item(), 0.5 * loc.item() + 2.0 * comp.item() + 3.0 * dec.item(), rtol=1e-6)
    np.testing.assert_allclose(out["ln_K"].item(), math.log(8), rtol=1e-6)


def test_adamv2_dino_phase_and_missing_keys() -> None:
    pred = _pred()
    loss_fn = AdamV2Loss(DINOLoss(8, skip_same_index=True))
    loss_fn.set_epoch(1)
    out = loss_fn({"student_logits": pred["student_logits"], "teacher_logits": pred["teacher_logits"]}, None)
    assert set(out) == {"loss", "loc", "ln_K"}
    assert loss_fn.dino.epoch == 1
    with pytest.raises(KeyError, match=r"\['teacher_parts'\].*decomposed.*student_logits"):
        AdamV2Loss(DINOLoss(8), CompositionLoss(), DecompositionLoss())(
            {k: v for k, v in pred.items() if k != "teacher_parts"}
        )
