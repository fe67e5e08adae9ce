"""Tests for modan_monai.transforms.io (LoadManifestImaged, RandSliced)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from modan_monai.data.slicing import expand_volume_slices
from modan_monai.transforms.io import LoadManifestImaged, RandSliced


@pytest.fixture
def volume(tmp_path):
    vol = np.random.default_rng(0).integers(0, 256, size=(9, 256, 256), dtype=np.uint8)
    path = tmp_path / "0002.npy"
    np.save(path, vol)
    return vol, {"image": str(path), "index": None, "label": 1, "manifest": "k.csv", "row": 0}


def test_load_slice(volume):
    vol, row = volume
    out = LoadManifestImaged()({**row, "index": 4})
    img = out["image"]
    assert isinstance(img, MetaTensor) and img.shape == (1, 256, 256) and img.dtype == torch.float32
    np.testing.assert_allclose(img[0].numpy(), vol[4])
    assert img.meta["source_dtype"] == "uint8" and img.meta["slice_index"] == 4
    assert out["label"] == 1 and row["image"].endswith(".npy")


def test_rand_sliced_determinism_and_range(volume):
    vol, row = volume
    (rand_row,) = expand_volume_slices([row], mode="random")

    def draws(seed):
        t = RandSliced()
        t.set_random_state(seed=seed)
        return [t(rand_row)["index"] for _ in range(30)]

    a, b, c = draws(1), draws(1), draws(2)
    assert a == b and a != c and all(0 <= i < 9 for i in a) and len(set(a)) > 3
    assert rand_row["index"] is None  # input not modified


def test_rand_sliced_in_compose(volume):
    vol, row = volume
    (rand_row,) = expand_volume_slices([row], mode="random")
    pipe = Compose([RandSliced(), LoadManifestImaged()])
    pipe.set_random_state(seed=3)
    out = pipe(rand_row)
    np.testing.assert_allclose(out["image"][0].numpy(), vol[out["index"]])
    passthrough = RandSliced()({"image": "x.png", "index": None})
    assert passthrough["index"] is None


def test_rand_sliced_bad_num_slices():
    with pytest.raises(ValueError, match="manifest m.csv row 2"):
        RandSliced()({"image": "v.npy", "index": None, "num_slices": 0, "manifest": "m.csv", "row": 2})
