"""Tests for modan_monai.transforms.views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, RandFlipd

from modan_monai.transforms.views import MultiViewd, RandResizedCrop, RandResizedCropd, SimCLRViewsd


def ramp(h=48, w=64):
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (0.5 * x + 0.5 * y)[None]


@pytest.mark.parametrize("size, shape", [(16, (1, 48, 64)), ((12, 20), (1, 30, 30)), (8, (3, 10, 200))])
def test_crop_shapes(size, shape):
    crop = RandResizedCrop(size)
    crop.set_random_state(seed=0)
    out = crop(torch.rand(shape))
    expected = (size, size) if isinstance(size, int) else size
    assert out.shape == (shape[0], *expected) and out.dtype == torch.float32
    assert not isinstance(out, MetaTensor)


@pytest.mark.parametrize("scale", [(0.2, 1.0), (0.08, 0.3), (0.5, 0.5)])
def test_crop_scale_and_ratio_bounds(scale):
    crop = RandResizedCrop(8, scale=scale)
    crop.set_random_state(seed=1)
    h_img, w_img = 100, 120
    for _ in range(200):
        top, left, h, w = crop.get_params(h_img, w_img)
        assert 0 <= top <= h_img - h and 0 <= left <= w_img - w
        area = h * w / (h_img * w_img)
        # rounding of h and w to integers moves the area a little
        assert scale[0] * 0.95 <= area <= scale[1] * 1.05
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_crop_fallback_is_centre():
    crop = RandResizedCrop(8, scale=(0.9, 1.0), ratio=(1.0, 1.0))
    crop.set_random_state(seed=0)
    # a 4x400 strip cannot hold a square of 90% of its area: centre crop, ratio clamped to 1
    assert crop.get_params(4, 400) == (0, 198, 4, 4)


def test_crop_full_image_identity():
    img = torch.rand(1, 16, 16)
    crop = RandResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(crop(img).numpy(), img.numpy(), atol=1e-6)


def test_crop_rejects_non_2d():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandResizedCrop(8)(torch.rand(8, 8))


def test_cropd_shares_box():
    img = torch.rand(1, 40, 40)
    out = RandResizedCropd(["image", "mask"], 10).set_random_state(seed=4)({"image": img, "mask": img.clone()})
    np.testing.assert_allclose(out["image"].numpy(), out["mask"].numpy())


def make_views(seed, img):
    t = SimCLRViewsd("image", spatial_size=24, num_views=3)
    t.set_random_state(seed=seed)
    return t({"image": img})["views"]


def test_simclr_views_shape_range_determinism():
    img = MetaTensor(ramp())
    a, b, c = make_views(0, img), make_views(0, img), make_views(1, img)
    assert a.shape == (3, 1, 24, 24) and a.dtype == torch.float32 and not isinstance(a, MetaTensor)
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_allclose(a.numpy(), b.numpy())
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # two views of one image differ


def test_simclr_successive_calls_differ():
    t = SimCLRViewsd("image", spatial_size=16).set_random_state(seed=0)
    img = ramp()
    assert not torch.allclose(t({"image": img})["views"], t({"image": img})["views"])


def test_simclr_jitter_semantics():
    img = ramp()
    plain = SimCLRViewsd("image", 16, scale=(1, 1), ratio=(1, 1), flip_prob=0.0, jitter_prob=0.0)
    bright = SimCLRViewsd(
        "image", 16, scale=(1, 1), ratio=(1, 1), flip_prob=0.0, jitter_prob=1.0, brightness=0.4, contrast=0.0
    )
    square = img[:, :48, :48]
    p = plain.set_random_state(seed=0)({"image": square})["views"][0]
    q = bright.set_random_state(seed=0)({"image": square})["views"][0]
    ratio = (q / p.clamp_min(1e-6))[p > 0.1]
    # brightness multiplies by one factor in [0.6, 1.4] (before clamping to 1)
    unclamped = ratio[q[p > 0.1] < 0.999]
    assert torch.allclose(unclamped, unclamped[0].expand_as(unclamped), atol=1e-4)
    assert 0.6 <= float(unclamped[0]) <= 1.4
    contrast = SimCLRViewsd(
        "image", 16, scale=(1, 1), ratio=(1, 1), flip_prob=0.0, jitter_prob=1.0, brightness=0.0, contrast=0.4
    )
    r = contrast.set_random_state(seed=0)({"image": square})["views"][0]
    factor = float((r - r.mean()).std() / (p - p.mean()).std())
    assert 0.6 <= factor <= 1.4
    np.testing.assert_allclose(float(r.mean()), float(p.mean()), atol=1e-4)


def test_simclr_flip_is_horizontal(tmp_path):
    """Images are (C, W, H) in MONAI's (x, y) order, so a left-right flip is along spatial axis 0."""
    from PIL import Image

    from modan_monai.transforms import LoadManifestImaged

    pixels = np.zeros((32, 32), np.uint8)
    pixels[:, :8] = 255  # bright left edge (columns 0-7) of the picture
    Image.fromarray(pixels).save(tmp_path / "left.png")
    img = LoadManifestImaged()({"image": str(tmp_path / "left.png")})["image"].as_tensor() / 255.0
    t = SimCLRViewsd("image", 32, scale=(1, 1), ratio=(1, 1), flip_prob=1.0, jitter_prob=0.0)
    v = t({"image": img})["views"][0]
    np.testing.assert_allclose(v.numpy(), torch.flip(img, dims=(1,)).numpy(), atol=1e-6)
    np.testing.assert_allclose(v[0].numpy().T, pixels[:, ::-1] / 255.0, atol=1e-6)  # now the right edge
    row_major = SimCLRViewsd("image", 32, scale=(1, 1), ratio=(1, 1), flip_prob=1.0, jitter_prob=0.0, flip_axis=1)
    w = row_major({"image": img.transpose(1, 2)})["views"][0]
    np.testing.assert_allclose(w.numpy(), torch.flip(img.transpose(1, 2), dims=(2,)).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="flip_axis must be 0 or 1"):
        SimCLRViewsd("image", 32, flip_axis=2)


def test_simclr_collate_and_keep_source():
    data = [{"image": torch.rand(1, 30 + 4 * i, 40), "label": i} for i in range(4)]
    t = SimCLRViewsd("image", spatial_size=16, keep_source=False)
    batch = next(iter(DataLoader(Dataset(data, t), batch_size=4)))
    assert batch["views"].shape == (4, 2, 1, 16, 16) and "image" not in batch


def test_simclr_invalid_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        SimCLRViewsd(["a", "b"], 8)
    with pytest.raises(ValueError, match="jitter_prob"):
        SimCLRViewsd("image", 8, jitter_prob=1.5)


def test_multiviewd_generic_and_seeded():
    inner = Compose([RandResizedCropd("image", 8), RandFlipd("image", prob=0.5, spatial_axis=1)])

    def run(seed):
        t = MultiViewd("image", inner, num_views=4)
        t.set_random_state(seed=seed)
        return t({"image": torch.rand(1, 20, 20, generator=torch.Generator().manual_seed(0))})

    a, b = run(5), run(5)
    assert a["views"].shape == (4, 1, 8, 8) and not isinstance(a["views"], MetaTensor)
    np.testing.assert_allclose(a["views"].numpy(), b["views"].numpy())
    assert not torch.allclose(a["views"][0], a["views"][1])
    assert a["image"].shape == (1, 20, 20)
    assert math.isclose(float(run(6)["views"].sum()), float(run(6)["views"].sum()))
