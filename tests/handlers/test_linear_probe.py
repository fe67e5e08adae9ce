"""The linear probe: a plainly written standardise + logistic-regression reference, offset invariance, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from modan_monai.handlers import linear_probe_accuracy


def blobs(seed: int, n: int, classes: int = 3, dims: int = 16, scale: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(100).normal(size=(classes, dims))
    labels = rng.integers(0, classes, n)
    return centres[labels] + rng.normal(scale=scale, size=(n, dims)), labels


def reference(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, c: float) -> float:
    """Standardise with the training mean and (population) standard deviation, fit, count the hits."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=1000).fit((x_train - mean) / std, y_train)
    return float(np.mean(model.predict((x_test - mean) / std) == y_test))


@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_accuracy_matches_reference(c: float) -> None:
    x_train, y_train = blobs(0, 60)
    x_test, y_test = blobs(1, 30)
    tensors = [torch.tensor(a) for a in (x_train, y_train, x_test, y_test)]
    got = linear_probe_accuracy(*tensors, c=c)
    assert got == pytest.approx(reference(x_train, y_train, x_test, y_test, c))
    assert 0.0 < got < 1.0  # a task neither trivial nor hopeless at this noise


def test_separable_classes_and_shared_offset() -> None:
    """Well separated classes are all found; a large offset shared by every feature vector changes nothing."""
    x_train, y_train = blobs(0, 40, scale=0.05)
    x_test, y_test = blobs(1, 20, scale=0.05)
    assert linear_probe_accuracy(x_train, y_train, x_test, y_test) == 1.0
    x_train, y_train = blobs(0, 60)
    x_test, y_test = blobs(1, 30)
    plain = linear_probe_accuracy(x_train, y_train, x_test, y_test)
    assert linear_probe_accuracy(x_train + 50.0, y_train, x_test + 50.0, y_test) == pytest.approx(plain)


def test_a_query_class_absent_from_the_bank_counts_as_wrong() -> None:
    x_train, y_train = blobs(0, 40, scale=0.05)
    x_test, y_test = blobs(1, 20, scale=0.05)
    keep = y_train != 2
    expected = float(np.mean(y_test != 2))
    assert linear_probe_accuracy(x_train[keep], y_train[keep], x_test, y_test) == pytest.approx(expected)


def test_errors() -> None:
    x, y = torch.randn(6, 4), torch.tensor([0, 1] * 3)
    with pytest.raises(ValueError, match="same D"):
        linear_probe_accuracy(x, y, torch.randn(2, 5), y[:2])
    with pytest.raises(ValueError, match="labels must have shapes"):
        linear_probe_accuracy(x, y[:4], x, y)
    with pytest.raises(ValueError, match="empty"):
        linear_probe_accuracy(x, y, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"single class \(\[1\]\)"):
        linear_probe_accuracy(x, torch.ones(6, dtype=torch.long), x, y)
    with pytest.raises(ValueError, match="c must be > 0"):
        linear_probe_accuracy(x, y, x, y, c=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        linear_probe_accuracy(x, y, x, y, max_iter=0)
