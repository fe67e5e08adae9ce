"""DINOLoss (Adam-v2 L_loc): the ln K identity, a per-pair loop reference, the centre, warm-up, 2-process gloo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modan_monai.losses.dino import DINOLoss, sinkhorn_knopp_probabilities, teacher_temperature


def _logits(batch: int, views: int, k: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, views, k, generator=gen, dtype=torch.float64)


def _reference(student, teacher, center, t_s, t_t, skip):
    """Plain loops: mean over kept (i, j) pairs of mean_b of -sum_k t[b,i,k] * log_softmax(s[b,j] / t_s)[k]."""
    pair_losses = []
    for i in range(teacher.shape[1]):
        for j in range(student.shape[1]):
            if skip and i == j:
                continue
            per_image = []
            for b in range(student.shape[0]):
                t = torch.softmax((teacher[b, i] - center) / t_t, dim=-1)
                s = torch.log_softmax(student[b, j] / t_s, dim=-1)
                per_image.append(-(t * s).sum())
            pair_losses.append(sum(per_image) / len(per_image))
    return (sum(pair_losses) / len(pair_losses)).item()


@pytest.mark.parametrize("skip", [False, True])
def test_uniform_student_gives_ln_k(skip: bool) -> None:
    k = 64
    loss_fn = DINOLoss(out_dim=k, skip_same_index=skip)
    for seed in range(3):  # any teacher distribution, even a sharp one, and a moved centre
        loss = loss_fn(torch.full((3, 4, k), 0.7), _logits(3, 2, k, seed, scale=10.0 * (seed + 1)))
        np.testing.assert_allclose(loss.item(), math.log(k), rtol=1e-6)


@pytest.mark.parametrize("views_t,views_s,skip", [(2, 4, True), (2, 4, False), (1, 3, False), (3, 2, True)])
def test_matches_per_pair_loop_reference(views_t: int, views_s: int, skip: bool) -> None:
    k, batch = 16, 3
    student = _logits(batch, views_s, k, seed=1).requires_grad_(True)
    teacher = _logits(batch, views_t, k, seed=2).requires_grad_(True)
    loss_fn = DINOLoss(out_dim=k, student_temp=0.2, teacher_temp=0.05, skip_same_index=skip)
    center = torch.randn(1, k, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    loss_fn.center.copy_(center)
    loss = loss_fn(student, teacher)
    assert loss.dtype == torch.float32
    expected = _reference(student.detach(), teacher.detach(), center[0], 0.2, 0.05, skip)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    loss.backward()
    assert teacher.grad is None and student.grad is not None  # stop-gradient on the teacher


def test_center_updated_after_the_loss_with_momentum() -> None:
    k = 8
    loss_fn = DINOLoss(out_dim=k, center_momentum=0.8)
    first, second = _logits(4, 2, k, seed=5), _logits(4, 2, k, seed=6)
    student = _logits(4, 3, k, seed=7)
    expected_loss = _reference(student, first, 0.0, 0.1, 0.04, False)
    np.testing.assert_allclose(loss_fn(student, first).item(), expected_loss, rtol=1e-5)
    expected_center = 0.2 * first.reshape(-1, k).mean(dim=0)  # 0.8 * zeros + 0.2 * mean of the B * Vt rows
    np.testing.assert_allclose(loss_fn.center[0].numpy(), expected_center.numpy(), rtol=1e-5, atol=1e-7)
    # the second batch's loss uses the centre left by the first, and then moves it again
    loss = loss_fn(student, second)
    np.testing.assert_allclose(loss.item(), _reference(student, second, expected_center, 0.1, 0.04, False), rtol=1e-5)
    expected_center = 0.8 * expected_center + 0.2 * second.reshape(-1, k).mean(dim=0)
    np.testing.assert_allclose(loss_fn.center[0].numpy(), expected_center.numpy(), rtol=1e-5, atol=1e-7)
    assert "center" in loss_fn.state_dict()
    loss_fn.eval()  # no update in eval mode
    loss_fn(student, first)
    np.testing.assert_allclose(loss_fn.center[0].numpy(), expected_center.numpy(), rtol=1e-5, atol=1e-7)


def test_teacher_temperature_warmup() -> None:
    # official DINO: numpy.linspace(0.01, 0.04, 3) over the warm-up epochs, then constant
    assert [teacher_temperature(e, 0.04, 0.01, 3) for e in range(5)] == pytest.approx([0.01, 0.025, 0.04, 0.04, 0.04])
    assert teacher_temperature(0, 0.04, None, 3) == 0.04  # no warm-up
    loss_fn = DINOLoss(out_dim=8, warmup_teacher_temp=0.02, warmup_teacher_temp_epochs=5)
    assert loss_fn.current_teacher_temp == pytest.approx(0.02)
    loss_fn.set_epoch(2)
    assert loss_fn.current_teacher_temp == pytest.approx(0.03)
    student, teacher = _logits(2, 2, 8, seed=8), _logits(2, 1, 8, seed=9)
    np.testing.assert_allclose(
        loss_fn(student, teacher).item(), _reference(student, teacher, 0.0, 0.1, 0.03, False), rtol=1e-5
    )
    loss_fn.set_epoch(9)
    assert loss_fn.current_teacher_temp == pytest.approx(0.04)
    with pytest.raises(ValueError, match="epoch"):
        loss_fn.set_epoch(-1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"student_temp": 0.0}, "student_temp"),
        ({"teacher_temp": -1.0}, "teacher_temp"),
        ({"center_momentum": 1.0}, "center_momentum"),
        ({"warmup_teacher_temp": 0.0}, "warmup_teacher_temp"),
        ({"warmup_teacher_temp_epochs": -2}, "warmup_teacher_temp_epochs"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DINOLoss(out_dim=8, **kwargs)


@pytest.mark.parametrize(
    "student_shape,teacher_shape,match",
    [
        ((2, 3, 8), (2, 8), r"\(2, 8\)"),
        ((2, 3, 8), (3, 1, 8), r"\(3, 1, 8\)"),
        ((2, 3, 6), (2, 1, 6), "out_dim=8"),
        ((2, 1, 8), (2, 1, 8), "leaves no"),
    ],
)
def test_shape_errors_name_the_shapes(student_shape, teacher_shape, match) -> None:
    loss_fn = DINOLoss(out_dim=8, skip_same_index=True)
    with pytest.raises(ValueError, match=match):
        loss_fn(torch.zeros(student_shape), torch.zeros(teacher_shape))


def _distributed_worker(rank: int, world_size: int, init_file: str, results: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        student, teacher = _logits(8, 3, 16, seed=11), _logits(8, 2, 16, seed=12)
        loss_fn = DINOLoss(out_dim=16, skip_same_index=True)
        rows = slice(rank * 4, rank * 4 + 4)
        losses = [loss_fn(student[rows], teacher[rows]).item() for _ in range(2)]  # step 2 uses the shared centre
        uneven = DINOLoss(out_dim=16)
        uneven(student[:3] if rank == 0 else student[3:], teacher[:3] if rank == 0 else teacher[3:])
        results[rank] = (losses, loss_fn.center.clone(), uneven.center.clone())
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_gloo_matches_one_process(tmp_path, run_on_ranks) -> None:
    results = run_on_ranks(_distributed_worker, tmp_path, 2)
    student, teacher = _logits(8, 3, 16, seed=11), _logits(8, 2, 16, seed=12)
    loss_fn = DINOLoss(out_dim=16, skip_same_index=True)
    global_losses = [loss_fn(student, teacher).item() for _ in range(2)]
    uneven = DINOLoss(out_dim=16)
    uneven(student, teacher)
    for rank in range(2):
        np.testing.assert_allclose(results[rank][1].numpy(), loss_fn.center.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(results[rank][2].numpy(), uneven.center.numpy(), rtol=1e-5, atol=1e-6)
    # each rank's loss is its shard's mean: with equal shards their mean is the whole batch's loss
    rank_mean = np.mean([results[0][0], results[1][0]], axis=0)
    np.testing.assert_allclose(rank_mean, global_losses, rtol=1e-5)


def _sinkhorn_reference(teacher: torch.Tensor, temperature: float, iterations: int) -> torch.Tensor:
    """DINOv2's ``sinkhorn_knopp_teacher`` written plainly: Q = exp(t / T).T, then row / column scalings."""
    q = torch.exp(teacher.reshape(-1, teacher.shape[-1]).double() / temperature).t()
    num_prototypes, num_rows = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / num_prototypes
        q = q / q.sum(dim=0, keepdim=True) / num_rows
    return (q * num_rows).t().reshape(teacher.shape)


@pytest.mark.parametrize("iterations", [1, 3])
def test_sinkhorn_knopp_matches_dinov2_reference(iterations: int) -> None:
    teacher = _logits(6, 2, 16, seed=21, scale=1.0)
    probs = sinkhorn_knopp_probabilities(teacher, 0.05, iterations)
    assert probs.dtype == torch.float32 and probs.shape == teacher.shape
    np.testing.assert_allclose(probs.numpy(), _sinkhorn_reference(teacher, 0.05, iterations).numpy(), rtol=1e-5)
    np.testing.assert_allclose(probs.sum(dim=-1).numpy(), np.ones((6, 2)), rtol=1e-5)


def test_sinkhorn_knopp_spreads_a_batch_that_prefers_one_prototype() -> None:
    # every row prefers prototype 0: the centre-free softmax gives it all the mass, Sinkhorn-Knopp shares it out
    teacher = _logits(8, 2, 4, seed=22, scale=0.1)
    teacher[..., 0] += 1.0
    plain = torch.softmax(teacher.float() / 0.04, dim=-1).reshape(-1, 4).mean(dim=0)
    balanced = sinkhorn_knopp_probabilities(teacher, 0.04, iterations=50).reshape(-1, 4).mean(dim=0)
    assert plain[0] > 0.99
    np.testing.assert_allclose(balanced.numpy(), np.full(4, 0.25), atol=1e-3)


def test_sinkhorn_knopp_centering_in_the_loss_leaves_the_centre() -> None:
    k = 16
    student, teacher = _logits(4, 3, k, seed=23), _logits(4, 2, k, seed=24, scale=1.0)
    loss_fn = DINOLoss(out_dim=k, teacher_temp=0.05, skip_same_index=True, centering="sinkhorn_knopp")
    loss = loss_fn(student, teacher)
    probs = _sinkhorn_reference(teacher, 0.05, 3)
    log_probs = torch.log_softmax(student / 0.1, dim=-1)
    pairs = [-(probs[:, i] * log_probs[:, j]).sum(-1).mean() for i in range(2) for j in range(3) if i != j]
    np.testing.assert_allclose(loss.item(), (sum(pairs) / len(pairs)).item(), rtol=1e-5)
    assert torch.count_nonzero(loss_fn.center) == 0  # the running centre is not used
    assert "sinkhorn_knopp" in repr(loss_fn)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"centering": "mean"}, "centering"), ({"sinkhorn_iterations": 0}, "sinkhorn_iterations")],
)
def test_bad_centering_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DINOLoss(out_dim=8, **kwargs)


def _sinkhorn_worker(rank: int, world_size: int, init_file: str, results: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        teacher = _logits(7, 2, 16, seed=25, scale=1.0)
        results[rank] = sinkhorn_knopp_probabilities(teacher[:3] if rank == 0 else teacher[3:], 0.05)
    finally:
        torch.distributed.destroy_process_group()


def test_sinkhorn_knopp_two_process_gloo_matches_one_process(tmp_path, run_on_ranks) -> None:
    results = run_on_ranks(_sinkhorn_worker, tmp_path, 2)  # uneven shards: 3 and 4 images
    teacher = _logits(7, 2, 16, seed=25, scale=1.0)
    whole = sinkhorn_knopp_probabilities(teacher, 0.05)
    np.testing.assert_allclose(torch.cat([results[0], results[1]]).numpy(), whole.numpy(), rtol=1e-5)
