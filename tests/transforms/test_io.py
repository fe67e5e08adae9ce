"""Tests for modan_monai.transforms.io (LoadManifestImaged, RandSliced): axis order, SaveImage round trips,
mixed-format batches, NaN/Inf pixels."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, Resized, SaveImage, SelectItemsd

from modan_monai.data import load_datalist, make_demo_corpus
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
    np.testing.assert_allclose(img[0].numpy(), vol[4].T)  # MONAI (x, y) order
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
    np.testing.assert_allclose(out["image"][0].numpy(), vol[out["index"]].T)
    passthrough = RandSliced()({"image": "x.png", "index": None})
    assert passthrough["index"] is None


def test_rand_sliced_bad_num_slices():
    with pytest.raises(ValueError, match="manifest m.csv row 2"):
        RandSliced()({"image": "v.npy", "index": None, "num_slices": 0, "manifest": "m.csv", "row": 2})


def _save(img: MetaTensor, folder: Path, postfix: str, ext: str, **kwargs) -> Path:
    SaveImage(output_dir=str(folder), output_postfix=postfix, output_ext=ext, separate_folder=False,
              print_log=False, **kwargs)(img)
    name = Path(str(img.meta["filename_or_obj"])).name.split(".")[0]
    return folder / f"{name}_{postfix}{ext}"


def test_png_saveimage_round_trip_keeps_size_and_orientation(tmp_path):
    from PIL import Image

    pixels = np.zeros((24, 40), np.uint8)  # 24 rows x 40 columns: not square, not symmetric
    pixels[:12, :20] = 200
    pixels[20:, 35:] = 90
    Image.fromarray(pixels).save(tmp_path / "a.png")
    img = LoadManifestImaged()({"image": str(tmp_path / "a.png")})["image"]
    assert img.shape == (1, 40, 24)
    out = _save(img, tmp_path / "out", "rt", ".png", output_dtype=np.uint8, resample=False, scale=None)
    back = Image.open(out)
    assert back.size == (40, 24)
    np.testing.assert_array_equal(np.asarray(back), pixels)


@pytest.mark.parametrize("name", ["head_ct", "jsrt"])
def test_shared_png_saveimage_round_trip(shared_datasets, tmp_path, name):
    from PIL import Image

    if name == "head_ct":
        path = shared_datasets / "head_ct_hemorrhage" / "head_ct" / "000.png"  # RGB-encoded grey, 957 x 821
    else:
        path = next(iter(sorted((shared_datasets / "jsrt_scr" / "images_1024").glob("*.png"))))
    original = Image.open(path)
    img = LoadManifestImaged()({"image": str(path)})["image"]
    out = _save(img, tmp_path, "rt", ".png", output_dtype=np.uint8, resample=False, scale=None)
    back = Image.open(out)
    assert back.size == original.size
    np.testing.assert_array_equal(np.asarray(back), np.asarray(original.convert("L")))


def test_nifti_saveimage_round_trip_keeps_affine(tmp_path):
    affine = np.array([[0.0, -0.8, 0.0, 12.0], [0.9, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1]])
    vol = np.random.default_rng(0).normal(size=(20, 12, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol[..., 1], affine), tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "vol.nii.gz")
    for name, index in [("flat", None), ("vol", 1)]:
        img = LoadManifestImaged()({"image": str(tmp_path / f"{name}.nii.gz"), "index": index})["image"]
        assert img.shape == (1, 20, 12)
        out = nib.load(_save(img, tmp_path / "out", "rt", ".nii.gz"))
        np.testing.assert_array_equal(np.asarray(out.dataobj), vol[..., 1])
        expected = affine.copy()
        if index is not None:
            expected[:3, 3] += affine[:3, 2] * index  # the slice's place in the volume
        np.testing.assert_allclose(out.affine, expected, atol=1e-6)


def test_mixed_format_batch_collates(tmp_path, shared_datasets):
    manifest = make_demo_corpus(tmp_path / "demo", size=32, per_pair=4)
    rows = load_datalist(manifest)
    by_format: dict[str, dict] = {}
    for row in rows:
        by_format.setdefault(Path(row["image"]).suffix, row)
    npy = tmp_path / "knee.npy"
    np.save(npy, np.zeros((3, 16, 16), np.uint8))
    extra = [
        {"image": str(npy), "index": 1, "modality": "MRI", "source": "npy"},
        {"image": str(shared_datasets / "pneumoniamnist" / "pneumoniamnist.npz"), "key": "val_images", "index": 0,
         "modality": "XR", "source": "npz"},
    ]
    items = [{k: r[k] for k in ("image", "key", "index", "modality", "source")} for r in by_format.values()]
    items = [{**r, "key": r.get("key")} for r in items + extra]
    assert {Path(r["image"]).suffix for r in items} == {".dcm", ".gz", ".png", ".npy", ".npz"}
    pipe = Compose(
        [LoadManifestImaged(), Resized(keys="image", spatial_size=(16, 16)), SelectItemsd(["image", "source"])]
    )
    batch = next(iter(DataLoader(Dataset(items, pipe), batch_size=len(items))))
    assert batch["image"].shape == (len(items), 1, 16, 16)
    meta = batch["image"].meta
    assert sorted(meta["source_format"]) == ["dicom", "nifti", "npy", "npz", "pil"]
    assert meta["affine"].shape == (len(items), 4, 4) and list(batch["source"]) == [r["source"] for r in items]


@pytest.mark.parametrize("policy", ["error", "replace"])
def test_load_nan_policy(tmp_path, caplog, policy):
    data = np.ones((5, 4, 2), np.float32)
    data[1, 2, 0] = np.nan
    data[3, 3, 0] = -np.inf
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    row = {"image": str(path), "index": 0, "manifest": "ct.csv", "row": 11}
    if policy == "error":
        with pytest.raises(ValueError, match=rf"^manifest ct\.csv row 11: {path}: image has 2 non-finite pixel"):
            LoadManifestImaged()(row)
        return
    with caplog.at_level("WARNING"):
        out = LoadManifestImaged(nan_policy="replace", fill_value=-1000.0)(row)["image"]
    assert torch.isfinite(out).all() and out.meta["non_finite_replaced"] == 2
    assert float(out[0, 1, 2]) == -1000.0 and float(out[0, 3, 3]) == -1000.0 and float(out[0, 0, 0]) == 1.0
    assert "manifest ct.csv row 11" in caplog.text and "replaced 2 non-finite pixel value(s)" in caplog.text


def test_load_bad_nan_policy():
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        LoadManifestImaged(nan_policy="zero")
