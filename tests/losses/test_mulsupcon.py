"""Tests for MulSupConLoss: exact identities of methods.md section 1 and a plain per-pair reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modan_monai.losses import MulSupConLoss, jaccard_similarity
from modan_monai.losses.mulsupcon import positive_weights

NUM_MODALITIES, NUM_ANATOMIES = 4, 8


def reference_mulsupcon(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    threshold: float,
    base_temperature: float | None = None,
    weighting: str = "jaccard",
) -> float:
    """Plain per-pair implementation of methods.md section 1 (Python loops, float64)."""
    base_temperature = temperature if base_temperature is None else base_temperature
    z = F.normalize(features.detach().double(), dim=-1)
    num_images, num_views, _ = z.shape
    rows = [(v, i) for v in range(num_views) for i in range(num_images)]  # view-major
    sets = None if labels is None else [set(torch.nonzero(row > 0).flatten().tolist()) for row in labels]

    def dot(a: int, b: int) -> float:
        (va, ia), (vb, ib) = rows[a], rows[b]
        return float(z[ia, va] @ z[ib, vb])

    total = 0.0
    for a in range(len(rows)):
        denominator = sum(math.exp(dot(a, k) / temperature) for k in range(len(rows)) if k != a)
        acc, count = 0.0, 0
        for b in range(len(rows)):
            if b == a:
                continue
            ia, ib = rows[a][1], rows[b][1]
            if ia == ib:
                jac = 1.0
            elif sets is None:
                jac = 0.0
            else:
                union = sets[ia] | sets[ib]
                jac = len(sets[ia] & sets[ib]) / len(union) if union else 0.0
            if jac >= threshold:
                weight = jac if weighting == "jaccard" else 1.0
                acc += weight * math.log(math.exp(dot(a, b) / temperature) / denominator)
                count += 1
        total += -(temperature / base_temperature) * acc / count if count else 0.0
    return total / len(rows)


def reference_supcon(features: torch.Tensor, classes: torch.Tensor, temperature: float) -> float:
    """SupCon (Khosla et al. 2020, L_out) on integer classes, written in the style of its official code."""
    z = F.normalize(features.double(), dim=-1)
    num_images, num_views, _ = z.shape
    rows = torch.cat(torch.unbind(z, dim=1), dim=0)
    row_classes = classes.repeat(num_views)
    logits = rows @ rows.T / temperature
    not_self = ~torch.eye(len(rows), dtype=torch.bool)
    positive = (row_classes[:, None] == row_classes[None, :]) & not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    per_anchor = -(log_prob * positive).sum(1) / positive.sum(1)
    return float(per_anchor.mean())


def random_metadata_labels(num_images: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-hot modality+anatomy labels and the combined class index."""
    modality = torch.randint(0, NUM_MODALITIES, (num_images,), generator=generator)
    anatomy = torch.randint(0, NUM_ANATOMIES, (num_images,), generator=generator)
    labels = torch.zeros(num_images, NUM_MODALITIES + NUM_ANATOMIES)
    labels[torch.arange(num_images), modality] = 1
    labels[torch.arange(num_images), NUM_MODALITIES + anatomy] = 1
    return labels, modality * NUM_ANATOMIES + anatomy


def make_features(num_images: int, num_views: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_images, num_views, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_jaccard_similarity_values() -> None:
    labels = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]])
    expected = np.array(
        [
            [1, 1 / 3, 0, 0, 1],
            [1 / 3, 1, 0, 0, 1 / 3],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [1, 1 / 3, 0, 0, 1],
        ]
    )
    result = jaccard_similarity(labels)
    assert result.shape == (5, 5)
    assert torch.isfinite(result).all()
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
def test_no_labels_equals_monai_contrastive_loss(temperature: float) -> None:
    # imported here: the spawned workers of the distributed test import this module, and monai is slow to import
    from monai.losses import ContrastiveLoss

    features = make_features(10, 2, 16, seed=1)
    ours = MulSupConLoss(temperature=temperature)(features, None)
    # monai's ContrastiveLoss takes the two views as (B, D) tensors and normalises by cosine similarity
    theirs = ContrastiveLoss(temperature=temperature)(features[:, 0], features[:, 1])
    # monai turns the temperature into a float32 tensor, hence the float32-level tolerance
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-6)


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("weighting", ["jaccard", "none"])
def test_one_hot_labels_equal_supcon(threshold: float, weighting: str) -> None:
    generator = torch.Generator().manual_seed(2)
    classes = torch.randint(0, 3, (12,), generator=generator)
    features = make_features(12, 2, 8, seed=3)
    labels = F.one_hot(classes, 3)
    ours = MulSupConLoss(temperature=0.1, threshold=threshold, weighting=weighting)(features, labels)
    np.testing.assert_allclose(ours.item(), reference_supcon(features, classes, 0.1), rtol=1e-10)


@pytest.mark.parametrize("threshold", [0.34, 0.5, 1.0])
@pytest.mark.parametrize("weighting", ["jaccard", "none"])
def test_modality_anatomy_labels_equal_supcon_on_combined_class(threshold: float, weighting: str) -> None:
    labels, combined = random_metadata_labels(16, torch.Generator().manual_seed(4))
    features = make_features(16, 2, 8, seed=5)
    ours = MulSupConLoss(temperature=0.2, threshold=threshold, weighting=weighting)(features, labels)
    np.testing.assert_allclose(ours.item(), reference_supcon(features, combined, 0.2), rtol=1e-10)


@pytest.mark.parametrize("num_images", [2, 5, 16])
@pytest.mark.parametrize("with_labels", [True, False])
def test_identical_features_give_log_2n_minus_1(num_images: int, with_labels: bool) -> None:
    features = torch.ones(num_images, 2, 6, dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0, 1.0]]).repeat(num_images, 1) if with_labels else None
    loss = MulSupConLoss(temperature=0.07)(features, labels)
    np.testing.assert_allclose(loss.item(), math.log(2 * num_images - 1), rtol=1e-10)


@pytest.mark.parametrize("weighting", ["jaccard", "none"])
@pytest.mark.parametrize("num_views", [1, 2, 3])
@pytest.mark.parametrize("sparse_labels", [False, True])
def test_matches_per_pair_reference(weighting: str, num_views: int, sparse_labels: bool) -> None:
    generator = torch.Generator().manual_seed(6)
    labels = (torch.rand(9, 6, generator=generator) < (0.2 if sparse_labels else 0.5)).float()
    features = make_features(9, num_views, 5, seed=7)
    loss = MulSupConLoss(temperature=0.3, threshold=0.3, weighting=weighting)(features, labels)
    expected = reference_mulsupcon(features, labels, temperature=0.3, threshold=0.3, weighting=weighting)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-10)


@pytest.mark.parametrize("num_views", [2, 3])
def test_no_labels_matches_per_pair_reference(num_views: int) -> None:
    features = make_features(7, num_views, 5, seed=25)
    expected = reference_mulsupcon(features, None, temperature=0.2, threshold=0.3)
    np.testing.assert_allclose(MulSupConLoss(temperature=0.2)(features, None).item(), expected, rtol=1e-10)


@pytest.mark.parametrize(
    "weighting, expected_weights",
    [
        ("jaccard", [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        ("none", [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
    ],
)
def test_positive_weights(weighting: str, expected_weights: list) -> None:
    similarity = torch.tensor([[0.0, 0.5, 0.25], [0.5, 0.0, 0.0], [0.25, 0.0, 0.0]])  # diagonal 0: empty label sets
    positives, weights = positive_weights(similarity, threshold=0.3, weighting=weighting)
    np.testing.assert_array_equal(positives.numpy(), np.array(expected_weights) > 0)
    np.testing.assert_allclose(weights.numpy(), expected_weights)


def test_half_precision_input_is_computed_in_float32() -> None:
    labels, _ = random_metadata_labels(12, torch.Generator().manual_seed(26))
    features = make_features(12, 2, 8, seed=27).half()
    loss = MulSupConLoss()(features, labels)
    assert loss.dtype == torch.float32
    np.testing.assert_allclose(loss.item(), reference_mulsupcon(features.float(), labels, 0.07, 0.3), rtol=1e-5)


def test_float32_matches_reference_at_default_temperature() -> None:
    labels, _ = random_metadata_labels(20, torch.Generator().manual_seed(8))
    features = make_features(20, 2, 16, seed=9)
    loss = MulSupConLoss()(features.float(), labels)
    np.testing.assert_allclose(loss.item(), reference_mulsupcon(features, labels, 0.07, 0.3), rtol=1e-5)


def test_no_positives_gives_zero_loss_and_finite_gradients() -> None:
    features = make_features(6, 1, 4, seed=10).requires_grad_(True)
    labels = torch.eye(6)  # V = 1 and every image has its own label: no anchor has a positive
    loss = MulSupConLoss()(features, labels)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert torch.isfinite(features.grad).all()


def test_empty_label_rows_equal_simclr() -> None:
    features = make_features(8, 2, 4, seed=11).requires_grad_(True)
    loss_fn = MulSupConLoss(temperature=0.1)
    loss = loss_fn(features, torch.zeros(8, 12))
    loss.backward()
    assert torch.isfinite(features.grad).all()
    np.testing.assert_allclose(loss.item(), loss_fn(features, None).item(), rtol=1e-12)


def test_extreme_logits_stay_finite() -> None:
    features = make_features(8, 2, 4, seed=12).float().requires_grad_(True)
    labels, _ = random_metadata_labels(8, torch.Generator().manual_seed(12))
    loss = MulSupConLoss(temperature=1e-3)(features, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()


@pytest.mark.parametrize("labelled", [True, False])
def test_invariant_to_swapping_views(labelled: bool) -> None:
    labels, _ = random_metadata_labels(10, torch.Generator().manual_seed(13))
    labels = labels if labelled else None
    features = make_features(10, 2, 8, seed=14)
    loss_fn = MulSupConLoss(temperature=0.1)
    np.testing.assert_allclose(loss_fn(features.flip(1), labels).item(), loss_fn(features, labels).item(), rtol=1e-12)


def test_invariant_to_permuting_the_batch() -> None:
    labels, _ = random_metadata_labels(10, torch.Generator().manual_seed(15))
    features = make_features(10, 2, 8, seed=16)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(17))
    loss_fn = MulSupConLoss(temperature=0.1)
    permuted = loss_fn(features[perm], labels[perm])
    np.testing.assert_allclose(permuted.item(), loss_fn(features, labels).item(), rtol=1e-12)


@pytest.mark.parametrize("base_temperature", [0.07, 0.14, 1.0])
def test_base_temperature_scales_the_loss(base_temperature: float) -> None:
    labels, _ = random_metadata_labels(8, torch.Generator().manual_seed(18))
    features = make_features(8, 2, 8, seed=19)
    plain = MulSupConLoss(temperature=0.07)(features, labels)
    scaled = MulSupConLoss(temperature=0.07, base_temperature=base_temperature)(features, labels)
    np.testing.assert_allclose(scaled.item(), plain.item() * 0.07 / base_temperature, rtol=1e-12)


def test_gather_distributed_without_process_group_is_plain_loss() -> None:
    labels, _ = random_metadata_labels(8, torch.Generator().manual_seed(20))
    features = make_features(8, 2, 8, seed=21)
    np.testing.assert_allclose(
        MulSupConLoss(gather_distributed=True)(features, labels).item(), MulSupConLoss()(features, labels).item()
    )


@pytest.mark.parametrize(
    "features_shape, labels_shape, match",
    [
        ((8, 16), (8, 12), "features must have shape"),
        ((8, 2, 4, 4), (8, 12), "features must have shape"),
        ((8, 2, 16), (7, 12), "does not match"),
        ((8, 2, 16), (8,), "labels must have shape"),
        ((8, 1, 16), None, "single view"),
        ((1, 1, 16), (1, 12), "fewer than 2 rows"),
        ((8, 0, 16), (8, 12), "N, V, D >= 1"),
    ],
)
def test_invalid_shapes_raise(features_shape: tuple, labels_shape: tuple | None, match: str) -> None:
    labels = None if labels_shape is None else torch.zeros(labels_shape)
    with pytest.raises(ValueError, match=match):
        MulSupConLoss()(torch.zeros(features_shape), labels)


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0.0}, {"threshold": 0.0}, {"threshold": 1.5}, {"base_temperature": -1.0}, {"weighting": "x"}],
)
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MulSupConLoss(**kwargs)


def test_loss_decreases_on_toy_problem() -> None:
    torch.manual_seed(22)
    labels, _ = random_metadata_labels(16, torch.Generator().manual_seed(22))
    inputs = torch.randn(16, 2, 10)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = MulSupConLoss(temperature=0.1)
    losses = []
    for _ in range(15):
        optimiser.zero_grad()
        loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def _distributed_worker(rank: int, world_size: int, init_file: str, results: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        labels, _ = random_metadata_labels(8, torch.Generator().manual_seed(23))
        features = make_features(8, 2, 6, seed=24)
        local = slice(rank * 4, rank * 4 + 4)
        local_features = features[local].clone().requires_grad_(True)
        loss = MulSupConLoss(temperature=0.1, gather_distributed=True)(local_features, labels[local])
        loss.backward()
        results[rank] = (loss.item(), local_features.grad.clone())
    finally:
        torch.distributed.destroy_process_group()


def test_gather_distributed_matches_global_batch(tmp_path, run_on_ranks) -> None:
    world_size = 2
    results = run_on_ranks(_distributed_worker, tmp_path, world_size)
    labels, _ = random_metadata_labels(8, torch.Generator().manual_seed(23))
    features = make_features(8, 2, 6, seed=24).requires_grad_(True)
    global_loss = MulSupConLoss(temperature=0.1)(features, labels)
    global_loss.backward()
    # each rank returns the mean over its own anchors; their average is the global mean
    np.testing.assert_allclose(np.mean([results[r][0] for r in range(world_size)]), global_loss.item(), rtol=1e-10)
    # all_gather's backward sums every rank's gradient: world_size x the gradient of the global mean
    for rank in range(world_size):
        np.testing.assert_allclose(
            results[rank][1].numpy(), world_size * features.grad[rank * 4 : rank * 4 + 4].numpy(), rtol=1e-8, atol=1e-12
        )
