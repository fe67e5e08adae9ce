"""Tests for modan_monai.data.slicing.expand_volume_slices."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from modan_monai.data.slicing import expand_volume_slices, volume_num_slices


@pytest.fixture
def mrnet_row(tmp_path):
    vol = np.random.default_rng(0).integers(0, 256, size=(7, 256, 256), dtype=np.uint8)
    path = tmp_path / "0001.npy"
    np.save(path, vol)
    return {"image": str(path), "key": None, "index": None, "case_id": "0001", "manifest": "k.csv", "row": 0}


@pytest.mark.parametrize(
    "mode, k, expected",
    [("all", 1, list(range(7))), ("central", 1, [3]), ("central", 3, [2, 3, 4]), ("central", 20, list(range(7)))],
)
def test_mrnet_modes(tmp_path, mrnet_row, mode, k, expected):
    png = tmp_path / "flat.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png)
    rows = expand_volume_slices([mrnet_row, {**mrnet_row, "index": 2}, {"image": str(png), "index": None}], mode, k)
    assert [r["index"] for r in rows[:-2]] == expected
    assert all(r["num_slices"] == 7 and r["case_id"] == "0001" for r in rows[:-2])
    assert rows[-2]["index"] == 2 and "num_slices" not in rows[-2]
    assert rows[-1] == {"image": str(png), "index": None}


def test_mrnet_random_mode(mrnet_row):
    rows = expand_volume_slices([mrnet_row], mode="random")
    assert rows == [{**mrnet_row, "index": None, "num_slices": 7}]


def test_nifti_and_2d(tmp_path):
    vol_path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), vol_path)
    flat_path = tmp_path / "f.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1), np.float32), np.eye(4)), flat_path)
    assert volume_num_slices(vol_path) == 4 and volume_num_slices(flat_path) is None
    rows = expand_volume_slices([{"image": str(vol_path)}, {"image": str(flat_path)}], mode="all")
    assert [r.get("index") for r in rows] == [0, 1, 2, 3, None]


def test_multiframe_dicom():
    path = get_testdata_file("emri_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data test file emri_small.dcm not available locally")
    rows = expand_volume_slices([{"image": path, "index": None}], mode="central", k=2)
    assert [r["index"] for r in rows] == [4, 5]


def test_errors(tmp_path, mrnet_row):
    with pytest.raises(ValueError, match="mode"):
        expand_volume_slices([mrnet_row], mode="middle")
    with pytest.raises(ValueError, match="k must be"):
        expand_volume_slices([mrnet_row], mode="central", k=0)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"manifest k\.csv row 3: .*bad\.npy"):
        expand_volume_slices([{"image": str(bad), "manifest": "k.csv", "row": 3}])
    with pytest.raises(FileNotFoundError, match="row 4"):
        expand_volume_slices([{"image": str(tmp_path / "gone.npy"), "manifest": "k.csv", "row": 4}])
