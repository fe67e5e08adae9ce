"""Tests for modan_monai.transforms.part_whole (Adam-v2 views, methods.md §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset

from modan_monai.transforms import AdamV2Viewsd, DINOViewsd

# augmentation off: views are pure crops + resizes
PLAIN = dict(jitter_prob=0.0, blur_prob=(0.0, 0.0, 0.0), rotation_degrees=0.0)


def coords(h: int, w: int) -> torch.Tensor:
    """(2, h, w): channel 0 holds the row index, channel 1 the column index of each pixel."""
    r, c = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([r, c])


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def test_parts_tile_the_whole_row_major_remainder_dropped():
    # 33 x 35 whole: quadrants 16 x 17, the last row and column dropped; spatial_size = 16 only
    # resizes the width 17 -> 16, so compare with the quadrants resized here
    img = coords(33, 35)
    t = AdamV2Viewsd(spatial_size=16, local_size=8, num_locals=2, max_level=0, **PLAIN)
    out = t({"image": img})
    assert out["parts"].shape == (4, 2, 16, 16) and "image" not in out
    quads = [img[:, :16, :17], img[:, :16, 17:34], img[:, 16:32, :17], img[:, 16:32, 17:34]]  # TL, TR, BL, BR
    for part, quad in zip(out["parts"], quads):
        np.testing.assert_allclose(part.numpy(), resize(quad, 16).numpy(), atol=1e-4)
    # at native size (spatial_size = quadrant side) the parts are the pixels themselves
    t = AdamV2Viewsd(spatial_size=16, local_size=8, num_locals=2, max_level=0, **PLAIN)
    parts = t({"image": coords(33, 33)})["parts"]
    whole = torch.cat([torch.cat([parts[0], parts[1]], 2), torch.cat([parts[2], parts[3]], 2)], 1)
    np.testing.assert_array_equal(whole.numpy(), coords(32, 32).numpy())


def test_level_windows_have_side_h_over_2m_and_respect_the_margin():
    h = w = 128
    img = coords(h, w)
    for level in (1, 2):
        # spatial_size = window side: the teacher view (the window resized, no crop) is the window itself
        side, pad = h // 2**level, round(50 / 1024 * h)
        t = AdamV2Viewsd(spatial_size=side, local_size=8, num_locals=2, max_level=level, level=level, **PLAIN)
        tops, lefts = set(), set()
        for seed in range(60):
            teacher = t.set_random_state(seed=seed)({"image": img})["teacher"][0]
            top, left = int(teacher[0, 0, 0]), int(teacher[1, 0, 0])
            assert pad <= top <= h - side - pad and pad <= left <= w - side - pad
            np.testing.assert_array_equal(teacher.numpy(), img[:, top : top + side, left : left + side].numpy())
            tops.add(top)
            lefts.add(left)
        assert len(tops) > 5 and len(lefts) > 5  # the offset is random
    # no room for the margin: a 12 px margin (0.3 x 40) around a 20 px window leaves none, so anywhere in 0..20
    t = AdamV2Viewsd(spatial_size=8, local_size=4, num_locals=2, max_level=1, level=1, margin=0.3, **PLAIN)
    offsets = {t.set_random_state(seed=s).window(40, 40)[0] for s in range(80)}
    assert min(offsets) >= 0 and max(offsets) <= 20 and min(offsets) < 12  # anywhere, not only >= 12
    # level 0: the whole image, the teacher is the image resized
    t = AdamV2Viewsd(spatial_size=32, local_size=8, num_locals=2, max_level=2, level=0, **PLAIN)
    assert t.window(h, w) == (0, 0, h, w)
    np.testing.assert_allclose(t({"image": img})["teacher"][0].numpy(), resize(img, 32).numpy(), atol=1e-4)


def test_global_crop_is_centred_and_locals_graded():
    h = w = 64
    img = coords(h, w)
    bins = ((0.05, 0.1), (0.1, 0.2), (0.2, 0.3), (0.7, 0.8))
    t = AdamV2Viewsd(spatial_size=h, local_size=8, num_locals=4, local_area_bins=bins, max_level=0, **PLAIN)
    for seed in range(30):
        t.set_random_state(seed=seed)
        g = t({"image": img})["global"][0]  # resized to 64 = image size: crop box recoverable from the coordinates
        r0, r1, c0, c1 = g[0].min(), g[0].max(), g[1].min(), g[1].max()
        # centred: equal margins on each side (to one pixel of the resize)
        assert abs(float(r0) - (h - 1 - float(r1))) <= 1.0 and abs(float(c0) - (w - 1 - float(c1))) <= 1.0
        area = (float(r1 - r0) + 1) * (float(c1 - c0) + 1) / (h * w)
        assert 0.8 * 0.9 <= area <= 1.0
    # locals: areas of the centred crops follow the bins; drawn boxes, centred
    areas = np.zeros((30, len(bins)))
    for seed in range(30):
        t.set_random_state(seed=seed)
        for i, cropper in enumerate(t.local_croppers):
            _, _, lh, lw = cropper.get_params(h, w)
            areas[seed, i] = lh * lw / (h * w)
    for i, (lo, hi) in enumerate(bins):
        assert lo * 0.8 <= areas[:, i].min() and areas[:, i].max() <= hi * 1.2
    assert np.all(np.diff(areas.mean(0)) > 0)
    # a centred local: the coordinates of its centre pixel are the image centre
    t.set_random_state(seed=0)
    loc = t({"image": img})["local"]
    assert loc.shape == (4, 2, 8, 8)
    np.testing.assert_allclose(loc[:, :, 3:5, 3:5].mean((2, 3)).numpy(), np.full((4, 2), 31.5), atol=1.0)


def test_seed_reproduces_and_different_seeds_differ():
    img = torch.rand(1, 64, 64)
    t = AdamV2Viewsd(spatial_size=16, local_size=8, num_locals=2, max_level=1, level=1)
    a = t.set_random_state(seed=3)({"image": img})
    b = t.set_random_state(seed=3)({"image": img})
    c = t.set_random_state(seed=4)({"image": img})
    for key in ("teacher", "global", "local", "parts"):
        assert a[key].dtype == torch.float32 and type(a[key]) is torch.Tensor
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        assert not torch.equal(a[key], c[key])
    d = DINOViewsd(spatial_size=16, local_size=8, num_locals=2)
    x, y = d.set_random_state(seed=1)({"image": img}), d.set_random_state(seed=1)({"image": img})
    torch.testing.assert_close(x["local"], y["local"], rtol=0, atol=0)
    assert x["global"].shape == (2, 1, 16, 16) and x["local"].shape == (2, 1, 8, 8)
    assert not torch.equal(x["global"][0], x["global"][1])


def test_level_set_between_dataloader_passes_changes_the_windows():
    # intensity encodes the pixel row: a level-1 teacher spans about half the row range of a level-0 one
    img = coords(64, 64)[:1] / 63.0
    t = AdamV2Viewsd(spatial_size=16, local_size=8, num_locals=2, max_level=1, **PLAIN)
    loader = DataLoader(Dataset([{"image": img}] * 2, transform=t), batch_size=2, num_workers=0)

    def spans():
        teacher = next(iter(loader))["teacher"]  # (B, 1, 1, S, S)
        assert teacher.shape == (2, 1, 1, 16, 16)
        return (teacher.amax((1, 2, 3, 4)) - teacher.amin((1, 2, 3, 4))).tolist()

    assert all(s > 0.9 for s in spans())
    t.level = 1
    assert all(0.4 < s < 0.55 for s in spans())
    with pytest.raises(ValueError, match="`level`"):
        t.level = 2


def test_errors_name_the_source_and_the_fault():
    t = AdamV2Viewsd(spatial_size=32, local_size=8, num_locals=2, max_level=2)
    with pytest.raises(ValueError, match=r"manifest m\.csv row 7.*100x120.*max_level=2.*25 px.*load size.*max_level"):
        t({"image": torch.rand(1, 100, 120), "source": "manifest m.csv row 7"})
    with pytest.raises(ValueError, match=r"shape \(1, 100, 120\)"):
        t({"image": torch.rand(1, 100, 120)})
    with pytest.raises(ValueError, match="< 1 px"):
        AdamV2Viewsd(spatial_size=4, local_size=2, num_locals=1, local_area_bins=[(0.001, 0.002)], max_level=0)(
            {"image": torch.rand(1, 8, 8)}
        )
    with pytest.raises(ValueError, match="num_locals=9"):
        AdamV2Viewsd(num_locals=9)
    with pytest.raises(ValueError, match="num_parts"):
        AdamV2Viewsd(num_parts=3)
    with pytest.raises(ValueError, match="`level`"):
        AdamV2Viewsd(level=3, max_level=2)
