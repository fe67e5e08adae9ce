"""Tests for modan_monai.transforms.presets.load_preprocess_transforms (the shared load -> normalise -> resize)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, EnsureTyped, Invertd, Resized, SaveImaged
from PIL import Image

from modan_monai.data import MetadataVocabulary, load_datalist, make_demo_corpus
from modan_monai.transforms import (
    LoadManifestImaged,
    NormalizeByModalityd,
    RandSliced,
    load_preprocess_transforms,
)


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """One demo datalist: DICOM (CT chest/head, DX MONOCHROME1/2), NIfTI slices (MR, CT in HU) and PNG (US)."""
    return load_datalist(make_demo_corpus(tmp_path_factory.mktemp("demo"), size=32, per_pair=4))


def test_preset_equals_the_old_bundle_chain(demo_rows):
    """The chain the pretraining bundle wrote by hand (LoadManifestImaged -> NormalizeByModalityd -> Resized)."""
    vocabulary = MetadataVocabulary.from_file(None, unknown="error")
    ct_window = (-1000.0, 1000.0)
    old = Compose([
        LoadManifestImaged(keys="image"),
        NormalizeByModalityd(keys="image", modality_key="modality", vocabulary=vocabulary, ct_window=ct_window),
        Resized(keys="image", spatial_size=(24, 24), mode="area"),
    ])
    new = Compose(load_preprocess_transforms("image", image_size=24, vocabulary=vocabulary, ct_window=ct_window))
    suffixes = set()
    for row in demo_rows:
        a, b = old(row)["image"], new(row)["image"]
        assert b.shape == (1, 24, 24) and torch.equal(a, b), row["source"]
        torch.testing.assert_close(a.affine, b.affine)
        suffixes.add(Path(row["image"]).suffix)
    assert suffixes == {".dcm", ".gz", ".png"}


def test_preset_equals_the_old_embedding_chain(demo_rows):
    """modan_monai.evaluation.embeddings.embedding_transforms: default vocabulary and window, Resized default."""
    old = Compose([LoadManifestImaged(keys="image"), NormalizeByModalityd(keys="image"),
                   Resized(keys="image", spatial_size=(16, 16))])
    new = Compose(load_preprocess_transforms(image_size=16))
    for row in demo_rows[::5]:
        assert torch.equal(old(row)["image"], new(row)["image"])


def test_preset_composition_and_arguments():
    names = [type(t).__name__ for t in load_preprocess_transforms(image_size=8)]
    assert names == ["LoadManifestImaged", "NormalizeByModalityd", "Resized"]
    pre = load_preprocess_transforms(image_size=(8, 12), slice_mode="random", nan_policy="replace", fill_value=-5,
                                     ct_window=[-500, 500])
    assert isinstance(pre[0], RandSliced)
    load, norm, resize = pre[1:]
    assert load.nan_policy == "replace" and load.fill_value == -5.0
    assert norm.normalizer.ct_window == (-500.0, 500.0)
    assert tuple(resize.resizer.spatial_size) == (8, 12)
    seg = load_preprocess_transforms(image_size=8, structures=["heart"], label_key="masks")
    assert [type(t).__name__ for t in seg] == ["LoadManifestImaged", "LoadStructureMasksd", "NormalizeByModalityd",
                                               "Resized"]
    assert list(seg[-1].keys) == ["image", "masks"] and list(seg[-1].mode) == ["area", "nearest"]


@pytest.mark.parametrize(
    "kwargs, match",
    [({"nan_policy": "zero"}, "nan_policy must be one of"), ({"slice_mode": "middle"}, "slice_mode must be one of"),
     ({"image_size": (8, 8, 8)}, "image_size must be"), ({"image_size": 0}, "image_size must be"),
     ({"keys": ["a", "b"], "structures": ["heart"]}, "exactly one image key")],
)
def test_preset_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_preprocess_transforms(**kwargs)


def test_random_slice_preset_is_seeded(tmp_path):
    vol = np.random.default_rng(0).integers(0, 256, size=(9, 20, 20), dtype=np.uint8)
    np.save(tmp_path / "knee.npy", vol)
    (row,) = [{"image": str(tmp_path / "knee.npy"), "index": None, "num_slices": 9, "modality": "MRI"}]

    def draws(seed: int) -> list[int]:
        pipe = Compose(load_preprocess_transforms(image_size=20, slice_mode="random"))
        pipe.set_random_state(seed=seed)
        return [int(pipe(row)["index"]) for _ in range(12)]

    assert draws(1) == draws(1) and draws(1) != draws(2)
    pipe = Compose(load_preprocess_transforms(image_size=20, slice_mode="random")).set_random_state(seed=3)
    out = pipe(row)
    np.testing.assert_allclose(out["image"][0].numpy(), vol[out["index"]].T / 255.0, atol=1e-6)


def test_preset_from_bundle_json(demo_rows):
    """The wiring snippet of the bundles: a ``_target_`` returning the list, concatenated with task transforms."""
    parser = ConfigParser({
        "imports": ["$import modan_monai", "$import modan_monai.transforms", "$import modan_monai.data"],
        "image_size": 16, "ct_window": [-1000.0, 1000.0], "nan_policy": "error", "slice_mode": "all",
        "vocabulary": "$modan_monai.data.MetadataVocabulary.from_file(None, unknown='error')",
        "load_transforms": {
            "_target_": "modan_monai.transforms.load_preprocess_transforms",
            "keys": "image",
            "image_size": "@image_size",
            "vocabulary": "@vocabulary",
            "ct_window": "@ct_window",
            "nan_policy": "@nan_policy",
            "slice_mode": "@slice_mode",
        },
        "preprocessing": {
            "_target_": "Compose",
            "transforms": "$@load_transforms + [monai.transforms.SelectItemsd(keys=['image', 'source'])]",
        },
    })
    parser.get_parsed_content("imports")
    pipe = parser.get_parsed_content("preprocessing")
    direct = Compose(load_preprocess_transforms(image_size=16))
    for row in demo_rows[:3]:
        out = pipe(row)
        assert set(out) == {"image", "source"} and torch.equal(out["image"], direct(row)["image"])


def test_preset_nan_policy_reaches_the_loader(tmp_path):
    data = np.full((6, 6), 100.0, np.float32)
    data[2, 2] = np.nan
    Image.fromarray(data).save(tmp_path / "x.tiff")
    row = {"image": str(tmp_path / "x.tiff"), "modality": "XR", "manifest": "x.csv", "row": 0}
    with pytest.raises(RuntimeError, match="applying transform") as err:  # Compose wraps the reader's error
        Compose(load_preprocess_transforms(image_size=6))(row)
    cause = err.value.__cause__
    assert isinstance(cause, ValueError)
    assert str(cause).startswith(f"manifest x.csv row 0: {row['image']}: image has 1 non-finite")
    out = Compose(load_preprocess_transforms(image_size=6, nan_policy="replace"))(row)["image"]
    assert torch.isfinite(out).all() and out.meta["non_finite_replaced"] == 1


def _invert_and_save(pre: Compose, row: dict, out_dir: Path, ext: str) -> Path:
    """The segmentation-inference path: preprocess, a 'prediction' at the network size, Invertd, SaveImaged."""
    data = pre(row)
    data["pred"] = (data["image"] > 0.5).float()
    data = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(data)
    png = ext == ".png"
    SaveImaged(keys="pred", output_dir=str(out_dir), output_postfix="mask", output_ext=ext, separate_folder=False,
               resample=False, scale=255 if png else None, output_dtype=np.uint8, print_log=False)(data)
    return out_dir / f"{Path(row['image']).name.split('.')[0]}_mask{ext}"


def test_invertd_and_saveimaged_write_png_masks_in_the_input_geometry(tmp_path):
    pixels = np.zeros((24, 40), np.uint8)  # 24 rows x 40 columns
    pixels[:12, :20] = 220  # bright top-left block
    Image.fromarray(pixels).save(tmp_path / "cxr.png")
    pre = Compose(load_preprocess_transforms(image_size=16) + [EnsureTyped(keys="image", track_meta=True)])
    mask = Image.open(_invert_and_save(pre, {"image": str(tmp_path / "cxr.png"), "modality": "XR"}, tmp_path, ".png"))
    assert mask.size == (40, 24)
    np.testing.assert_array_equal(np.asarray(mask) > 0, pixels > 0)


@pytest.mark.parametrize("index", [None, 2])
def test_invertd_and_saveimaged_write_nifti_masks_with_the_input_affine(tmp_path, index):
    affine = np.array([[0.0, -0.8, 0.0, 12.0], [0.9, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1]])
    vol = np.full((20, 12, 4), -1000.0, np.float32)
    vol[:10, :6] = 800.0
    path = tmp_path / ("slice.nii.gz" if index is None else "vol.nii.gz")
    nib.save(nib.Nifti1Image(vol[..., 2] if index is None else vol, affine), path)
    pre = Compose(load_preprocess_transforms(image_size=8) + [EnsureTyped(keys="image", track_meta=True)])
    out = nib.load(_invert_and_save(pre, {"image": str(path), "index": index, "modality": "CT"}, tmp_path, ".nii.gz"))
    assert out.shape == (20, 12)
    np.testing.assert_array_equal(np.asarray(out.dataobj) > 0, vol[..., 2] > 0)
    expected = affine.copy()
    if index is not None:
        expected[:3, 3] += affine[:3, 2] * index  # the mask sits at the slice's place in world space
    np.testing.assert_allclose(out.affine, expected, atol=1e-6)
