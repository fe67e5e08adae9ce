"""``PrepareMultiViewBatch``: multi-view batches for MONAI's SupervisedTrainer."""

from __future__ import annotations

import pytest
import torch

from modan_monai.engines import PrepareMultiViewBatch


@pytest.mark.parametrize("target_key", ["label", "class", None])
def test_returns_views_and_target(target_key: str | None) -> None:
    batch = {"views": torch.rand(4, 2, 1, 8, 8), "label": torch.ones(4, 3), "class": torch.arange(4)}
    views, target = PrepareMultiViewBatch(target_key=target_key)(batch, torch.device("cpu"))
    assert views.shape == (4, 2, 1, 8, 8)
    if target_key is None:
        assert target is None
    else:
        torch.testing.assert_close(target, batch[target_key])


def test_missing_key_names_the_keys_present() -> None:
    with pytest.raises(KeyError, match="keys present"):
        PrepareMultiViewBatch(target_key="label")({"views": torch.rand(2, 2, 1, 4, 4)})


def test_views_must_be_5d() -> None:
    with pytest.raises(ValueError, match=r"\(B, V, C, H, W\)"):
        PrepareMultiViewBatch(target_key=None)({"views": torch.rand(2, 1, 4, 4)})
