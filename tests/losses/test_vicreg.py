"""VICReg and MLVICX losses: exact identities, a plain reference, symmetry, fp32, errors, non-finite terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modan_monai.losses import MLVICXLoss, VICRegLoss, covariance_term, variance_term, vicreg_terms


def hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_batch() -> torch.Tensor:
    """8 rows, 7 columns: the Hadamard columns orthogonal to the all-ones one (zero mean, orthogonal, ±1)."""
    return hadamard(8)[:, 1:].float()


def reference_vicreg(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-4) -> float:
    """Plain element-by-element VICReg with methods.md's conventions (float64)."""
    a, b = a.double().tolist(), b.double().tolist()
    n, d = len(a), len(a[0])
    inv = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def var_cov(z: list) -> tuple[float, float]:
        mean = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        cov = [[sum((z[i][p] - mean[p]) * (z[i][q] - mean[q]) for i in range(n)) / (n - 1) for q in range(d)]
               for p in range(d)]
        var = sum(max(0.0, 1.0 - math.sqrt(cov[j][j] + eps)) for j in range(d)) / d
        off = sum(cov[p][q] ** 2 for p in range(d) for q in range(d) if p != q) / d
        return var, off

    var_a, cov_a = var_cov(a)
    var_b, cov_b = var_cov(b)
    return 25 * inv + 25 * (var_a + var_b) / 2 + (cov_a + cov_b)


def test_hadamard_batch_gives_exactly_zero() -> None:
    z = hadamard_batch()
    loss_fn = VICRegLoss()
    assert loss_fn(z, z.clone()).item() == 0.0
    assert {k: v.item() for k, v in loss_fn.terms(z, z.clone()).items()} == {
        "invariance": 0.0, "variance": 0.0, "covariance": 0.0, "loss": 0.0
    }


def test_half_scaled_hadamard_variance_part() -> None:
    z = 0.5 * hadamard_batch()
    loss = VICRegLoss()(z, z.clone())
    expected = 25 * (1 - math.sqrt(0.25 * 8 / 7 + 1e-4))
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-6)
    assert covariance_term(z).item() == 0.0


def test_constant_batch_variance_is_0_99_per_branch() -> None:
    z = torch.full((6, 5), 3.0)
    np.testing.assert_allclose(variance_term(z).item(), 0.99, rtol=1e-6)
    terms = vicreg_terms(z, torch.zeros(6, 5))
    np.testing.assert_allclose(terms["variance"].item(), 0.99, rtol=1e-6)
    assert terms["covariance"].item() == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_plain_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(7, 5, generator=gen) * 0.7, torch.randn(7, 5, generator=gen) * 1.3 + 0.2
    np.testing.assert_allclose(VICRegLoss()(a, b).item(), reference_vicreg(a, b), rtol=1e-5)


def test_invariant_to_a_constant_shift_and_symmetric() -> None:
    gen = torch.Generator().manual_seed(2)
    a, b, shift = torch.randn(9, 6, generator=gen), torch.randn(9, 6, generator=gen), torch.randn(6, generator=gen)
    loss_fn = VICRegLoss()
    base = loss_fn(a, b).item()
    np.testing.assert_allclose(loss_fn(a + shift, b + shift).item(), base, rtol=1e-5)
    np.testing.assert_allclose(loss_fn(b, a).item(), base, rtol=1e-6)


def test_weights_scale_the_terms() -> None:
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    terms = vicreg_terms(a, b)
    loss = VICRegLoss(sim_weight=2.0, var_weight=3.0, cov_weight=4.0)(a, b)
    expected = 2 * terms["invariance"] + 3 * terms["variance"] + 4 * terms["covariance"]
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-6)


def test_half_precision_is_computed_in_float32() -> None:
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    loss = VICRegLoss()(a.half(), b.half())
    assert loss.dtype == torch.float32
    np.testing.assert_allclose(loss.item(), VICRegLoss()(a.half().float(), b.half().float()).item(), rtol=1e-6)


def test_gather_distributed_without_process_group_is_plain_loss() -> None:
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    assert VICRegLoss(gather_distributed=True)(a, b).item() == VICRegLoss()(a, b).item()


@pytest.mark.parametrize(
    "shape_a, shape_b, match",
    [((8,), (8,), r"\(N, D\)"), ((8, 4), (8, 5), "same shape"), ((1, 4), (1, 4), "N >= 2")],
)
def test_invalid_shapes_raise(shape_a: tuple, shape_b: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VICRegLoss()(torch.randn(*shape_a), torch.randn(*shape_b))


def test_mlvicx_is_global_plus_lambda_multilevel_and_logs_terms() -> None:
    gen = torch.Generator().manual_seed(5)
    pred = {"global": torch.randn(8, 2, 6, generator=gen), "multilevel": torch.randn(8, 2, 5, generator=gen)}
    loss_fn = MLVICXLoss(multilevel_weight=0.5)
    terms = loss_fn(pred, None)
    loss = terms["loss"]
    plain = VICRegLoss()
    expected = plain(pred["global"][:, 0], pred["global"][:, 1]) + 0.5 * plain(
        pred["multilevel"][:, 0], pred["multilevel"][:, 1]
    )
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-6)
    assert set(terms) == {
        f"{level}/{term}"
        for level in ("global", "multilevel")
        for term in ("invariance", "variance", "covariance", "loss")
    } | {"loss"}


def test_mlvicx_non_finite_input_gives_non_finite_terms_and_missing_key_is_named() -> None:
    # the engine (modan_monai.engines.Trainer) stops on these; the loss itself reports them unchanged
    pred = {"global": torch.randn(8, 2, 6), "multilevel": torch.randn(8, 2, 5)}
    pred["multilevel"][0, 0, 0] = float("nan")
    terms = MLVICXLoss()(pred)
    assert torch.isnan(terms["multilevel/invariance"]) and torch.isfinite(terms["global/loss"])
    with pytest.raises(ValueError, match="'multilevel'"):
        MLVICXLoss()({"global": pred["global"]})


def test_mlvicx_loss_decreases_on_toy_problem() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    x = torch.randn(32, 4)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = MLVICXLoss()
    losses = []
    for _ in range(30):
        views = torch.stack([x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)], 1)
        z = net(views)
        loss = loss_fn({"global": z, "multilevel": z})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def _distributed_worker(rank: int, world_size: int, init_file: str, results: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        gen = torch.Generator().manual_seed(31)
        a = torch.randn(8, 5, generator=gen, dtype=torch.float64)
        b = torch.randn(8, 5, generator=gen, dtype=torch.float64)
        local = slice(rank * 4, rank * 4 + 4)
        local_a, local_b = a[local].clone().requires_grad_(True), b[local].clone().requires_grad_(True)
        loss = VICRegLoss(gather_distributed=True)(local_a, local_b)
        loss.backward()
        results[rank] = (loss.item(), local_a.grad.clone(), local_b.grad.clone())
    finally:
        torch.distributed.destroy_process_group()


def test_gather_distributed_matches_global_batch(tmp_path, run_on_ranks) -> None:
    world_size = 2
    results = run_on_ranks(_distributed_worker, tmp_path, world_size)
    gen = torch.Generator().manual_seed(31)
    a = torch.randn(8, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(8, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    global_loss = VICRegLoss()(a, b)  # float32 inside, as on the ranks
    global_loss.backward()
    for rank in range(world_size):
        loss, grad_a, grad_b = results[rank]
        np.testing.assert_allclose(loss, global_loss.item(), rtol=1e-6)  # every rank computes the global loss
        # all_gather's backward sums the ranks' identical gradients; DDP's averaging then gives the global one
        rows = slice(rank * 4, rank * 4 + 4)
        np.testing.assert_allclose(grad_a.numpy(), world_size * a.grad[rows].numpy(), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(grad_b.numpy(), world_size * b.grad[rows].numpy(), rtol=1e-5, atol=1e-8)
