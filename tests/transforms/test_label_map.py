"""Structure channels <-> one label map (what MONAI Label clients show and submit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from modan_monai.transforms import StructuresToLabelMapd, label_map_to_structures, label_values, structures_to_label_map


def test_later_channels_win_and_order_changes_that() -> None:
    masks = torch.zeros(3, 4, 4)
    masks[0, :2] = 1  # rows 0-1
    masks[1, 1:3] = 1  # rows 1-2, overlaps channel 0 on row 1
    masks[2, 3, 3] = 1
    default = structures_to_label_map(masks)
    assert default[0, :, 0].tolist() == [1, 2, 2, 0] and default[0, 3, 3] == 3
    reordered = structures_to_label_map(masks, order=[1, 0, 2])
    assert reordered[0, :, 0].tolist() == [1, 1, 2, 0]


def test_metadata_travels_and_bad_order_is_refused() -> None:
    masks = MetaTensor(torch.ones(2, 3, 3), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0])))
    out = StructuresToLabelMapd("pred")({"pred": masks})["pred"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, masks.affine)
    with pytest.raises(ValueError, match="label_order"):
        structures_to_label_map(masks, order=[0, 0])


def test_round_trip_and_undeclared_values_are_named() -> None:
    label_map = np.array([[0, 1, 2], [2, 2, 0]])
    channels = label_map_to_structures(label_map, 2, source="labels/final/a.png")
    assert channels.shape == (2, 2, 3)
    np.testing.assert_array_equal(structures_to_label_map(torch.as_tensor(channels))[0].numpy(), label_map)
    with pytest.raises(ValueError, match=r"labels/final/a.png: label values \[3, 9\]"):
        label_map_to_structures(np.array([0, 3, 9, 1]), 2, source="labels/final/a.png")
    with pytest.raises(ValueError, match="non-integer"):
        label_map_to_structures(np.array([0.5, 1.0]), 2)
    assert label_values(["heart", "lungs"]) == {"heart": 1, "lungs": 2}
