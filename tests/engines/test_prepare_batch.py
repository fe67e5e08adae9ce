"""``PrepareViewGroups``: multi-view batches and named view groups of different sizes for the engine."""

from __future__ import annotations

import pytest
import torch

from modan_monai.engines import PrepareViewGroups


@pytest.mark.parametrize("target_key", ["label", "class", None])
def test_returns_views_and_target(target_key: str | None) -> None:
    batch = {"views": torch.rand(4, 2, 1, 8, 8), "label": torch.ones(4, 3), "class": torch.arange(4)}
    views, target = PrepareViewGroups(target_key=target_key)(batch, torch.device("cpu"))
    assert views.shape == (4, 2, 1, 8, 8)
    if target_key is None:
        assert target is None
    else:
        torch.testing.assert_close(target, batch[target_key])


def test_view_groups_of_different_sizes_become_a_dict() -> None:
    batch = {"teacher": torch.rand(3, 1, 1, 32, 32), "locals": torch.rand(3, 8, 1, 12, 12), "other": 1}
    views, target = PrepareViewGroups(views_key=["teacher", "locals"], target_key=None)(batch)
    assert list(views) == ["teacher", "locals"] and target is None
    assert views["teacher"].shape == (3, 1, 1, 32, 32) and views["locals"].shape == (3, 8, 1, 12, 12)


def test_missing_key_names_the_keys_present() -> None:
    with pytest.raises(KeyError, match="keys present"):
        PrepareViewGroups(target_key="label")({"views": torch.rand(2, 2, 1, 4, 4)})
    with pytest.raises(KeyError, match="'locals'"):
        PrepareViewGroups(views_key=["views", "locals"], target_key=None)({"views": torch.rand(2, 2, 1, 4, 4)})


def test_views_must_be_5d_and_groups_share_the_batch_size() -> None:
    with pytest.raises(ValueError, match=r"\(B, V, C, H, W\)"):
        PrepareViewGroups(target_key=None)({"views": torch.rand(2, 1, 4, 4)})
    with pytest.raises(ValueError, match="batch size"):
        PrepareViewGroups(views_key=["a", "b"], target_key=None)(
            {"a": torch.rand(2, 1, 1, 4, 4), "b": torch.rand(3, 1, 1, 4, 4)}
        )
