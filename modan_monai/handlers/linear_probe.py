"""Linear probe on frozen features: the accuracy of a logistic regression fitted on the bank, read on the queries.

The second instrument of the online monitors of self-supervised pretraining (solo-learn and lightly train a
linear classifier beside the k-NN; CLIP, Radford et al. ICML 2021, fits scikit-learn's L-BFGS logistic regression
on frozen features): the pooled features of the bank split are standardised (mean 0, variance 1 per feature,
estimated on the bank), a logistic regression (L-BFGS, L2 penalty ``C``) is fitted on them, and its accuracy on the
standardised query features is the value. Unlike the cosine k-NN vote, it does not see a feature offset shared by
every image (the standardisation removes it) and it weighs the features by how well they separate the classes.
:class:`~modan_monai.handlers.KNNMonitor` computes both from one pass of the encoder.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

__all__ = ["linear_probe_accuracy"]


def linear_probe_accuracy(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray,
    test_features: torch.Tensor | np.ndarray,
    test_labels: torch.Tensor | np.ndarray,
    c: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Fit a standardised logistic regression on ``train_*`` and return its accuracy on ``test_*``.

    Args:
        train_features: ``(N, D)`` features of the fitted (bank) set.
        train_labels: ``(N,)`` integer classes, at least two distinct.
        test_features: ``(Q, D)`` features of the evaluated (query) set.
        test_labels: ``(Q,)`` integer classes (a class absent from the bank is never predicted: it counts as wrong).
        c: inverse L2 regularisation strength of scikit-learn's ``LogisticRegression`` (> 0).
        max_iter: L-BFGS iterations (>= 1).

    Returns:
        The fraction of ``test_features`` whose predicted class equals ``test_labels``.

    Raises:
        ValueError: on mismatched shapes, an empty set, fewer than two classes in ``train_labels``, ``c`` <= 0 or
            ``max_iter`` < 1.

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]])
        >>> linear_probe_accuracy(x, torch.tensor([0, 0, 1, 1]), x, torch.tensor([0, 0, 1, 1]))
        1.0
    """
    x_train, x_test = (np.asarray(torch.as_tensor(f).detach().cpu().double()) for f in (train_features, test_features))
    y_train, y_test = (np.asarray(torch.as_tensor(y).detach().cpu().long()) for y in (train_labels, test_labels))
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"linear probe: features must be (N, D) and (Q, D) with the same D, got {x_train.shape} and {x_test.shape}"
        )
    if y_train.shape != (x_train.shape[0],) or y_test.shape != (x_test.shape[0],):
        raise ValueError(
            f"linear probe: labels must have shapes ({x_train.shape[0]},) and ({x_test.shape[0]},), got "
            f"{y_train.shape} and {y_test.shape}"
        )
    if x_train.shape[0] == 0 or x_test.shape[0] == 0:
        raise ValueError(f"linear probe: empty feature set ({x_train.shape[0]} fitted, {x_test.shape[0]} evaluated)")
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise ValueError(f"linear probe: the fitted features hold a single class ({classes.tolist()}); it needs two")
    if c <= 0:
        raise ValueError(f"linear probe: c must be > 0, got {c}")
    if max_iter < 1:
        raise ValueError(f"linear probe: max_iter must be >= 1, got {max_iter}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=float(c), max_iter=int(max_iter)))
    # one BLAS thread: on a few hundred features the threads cost more than they save (8x slower on 2 busy cores)
    with threadpool_limits(limits=1, user_api="blas"):
        probe.fit(x_train, y_train)
        return float(np.mean(probe.predict(x_test) == y_test))
