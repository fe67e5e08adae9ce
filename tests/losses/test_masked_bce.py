"""MaskedBCEWithLogitsLoss, balanced_pos_weight and the classify bundle's loss factory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from modan_monai.losses import MaskedBCEWithLogitsLoss, balanced_pos_weight, classification_loss


def reference(logits: torch.Tensor, targets: torch.Tensor, pos_weight: list[float] | None = None) -> float:
    """Plain loops: the mean over the non-NaN entries of -[w y log s(x) + (1 - y) log(1 - s(x))]."""
    total, count = 0.0, 0
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            y = float(targets[i, j])
            if math.isnan(y):
                continue
            s = 1.0 / (1.0 + math.exp(-float(logits[i, j])))
            w = 1.0 if pos_weight is None else pos_weight[j]
            total += -(w * y * math.log(s) + (1 - y) * math.log(1 - s))
            count += 1
    return total / count


@pytest.mark.parametrize("pos_weight", [None, [2.0, 0.5, 3.0]])
def test_masked_entries_are_left_out(pos_weight: list[float] | None) -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 3, requires_grad=True)
    targets = torch.tensor([[1, 0, float("nan")], [0, float("nan"), 1], [1, 1, 1], [0, 0, 0], [float("nan"), 1, 0]])
    loss = MaskedBCEWithLogitsLoss(pos_weight)(logits, targets)
    assert loss.item() == pytest.approx(reference(logits.detach(), targets, pos_weight), rel=1e-5)
    loss.backward()
    assert (logits.grad[torch.isnan(targets)] == 0).all()  # an ignored label gets no gradient
    # the logit of an ignored label does not matter
    moved = logits.detach() + 5.0 * torch.isnan(targets)
    assert MaskedBCEWithLogitsLoss(pos_weight)(moved, targets).item() == pytest.approx(loss.item(), rel=1e-6)


def test_without_nan_it_is_bce_with_logits() -> None:
    torch.manual_seed(1)
    logits, targets = torch.randn(6, 4), torch.randint(0, 2, (6, 4)).float()
    weight = torch.tensor([1.0, 2.0, 0.5, 4.0])
    expected = nn.BCEWithLogitsLoss(pos_weight=weight)(logits, targets)
    torch.testing.assert_close(MaskedBCEWithLogitsLoss(weight)(logits, targets), expected)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"logits of shape \(2, 3\) but targets of shape \(2, 2\)"):
        MaskedBCEWithLogitsLoss()(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="every target of the batch"):
        MaskedBCEWithLogitsLoss()(torch.zeros(1, 2), torch.full((1, 2), float("nan")))
    with pytest.raises(ValueError, match="pos_weight must be finite and > 0"):
        MaskedBCEWithLogitsLoss([1.0, 0.0])


def test_balanced_pos_weight_counts_known_entries_only() -> None:
    y = [[1, 0], [0, 1], [0, float("nan")], [0, 0]]
    assert balanced_pos_weight(y, ["a", "b"]) == [3.0, 2.0]
    with pytest.raises(ValueError, match=r"label\(s\) \['b'\] have no positive or no negative"):
        balanced_pos_weight([[1, 0], [0, 0]], ["a", "b"])


def test_classification_loss_follows_the_task() -> None:
    assert type(classification_loss("binary")) is nn.CrossEntropyLoss
    assert type(classification_loss("multiclass")) is nn.CrossEntropyLoss
    loss = classification_loss("multilabel", "balanced", [[1, 0], [0, 1], [0, 1]], ["a", "b"])
    np.testing.assert_allclose(loss.pos_weight.numpy(), [2.0, 0.5])
    assert classification_loss("multilabel", [1.5, 2.0], None, ["a", "b"]).pos_weight.tolist() == [1.5, 2.0]
    assert classification_loss("multilabel", None, None, ["a"]).pos_weight is None
    for args, match in [(("multiclass", "balanced"), r"config id 'pos_weight' \('balanced'\) is for task 'multilabel'"),
                        (("multilabel", "heavy", [], ["a"]), r"config id 'pos_weight' is 'heavy'"),
                        (("multilabel", [1.0], [], ["a", "b"]), r"gives 1 weights \[1.0\] for 2 labels"),
                        (("multi",), r"config id 'task' is 'multi'")]:
        with pytest.raises(ValueError, match=match):
            classification_loss(*args)
