"""Tests for modan_monai.data.readers (real shared DICOM/PNG/npz files, pydicom test files, tmp files)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from modan_monai.data.readers import META_KEYS, DicomReader, NpzReader, read_image_row

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def pydicom_file(name: str) -> str:
    """Path of a pydicom / pydicom-data test file, never downloading; skip if not installed locally."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available locally (pydicom-data not installed)")
    return str(path)


def write_dicom(path: Path, pixels: np.ndarray, **tags) -> Path:
    """Write a minimal uncompressed single-frame grey DICOM file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype(pixels.dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def tcga_by_syntax(shared_datasets: Path) -> dict[str, Path]:
    """First TCGA DICOM file for each transfer syntax in the folder."""
    folder = shared_datasets / "ct_tcga_dicom" / "dicom_dir"
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*.dcm")):
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        found.setdefault(uid, path)
    return found


def test_tcga_has_both_transfer_syntaxes(tcga_by_syntax):
    assert set(tcga_by_syntax) == {IMPLICIT_VR_LE, EXPLICIT_VR_LE}


@pytest.mark.parametrize("uid", [IMPLICIT_VR_LE, EXPLICIT_VR_LE])
def test_tcga_ct_in_hounsfield_units(tcga_by_syntax, uid):
    path = tcga_by_syntax[uid]
    arr, meta = read_image_row({"image": str(path), "manifest": "m.csv", "row": 0})
    assert arr.shape == (512, 512) and arr.dtype == np.float32
    assert set(META_KEYS) <= set(meta)
    assert meta["TransferSyntaxUID"] == uid and meta["TransferSyntaxName"] == UID(uid).name
    assert meta["Modality"] == "CT" and meta["BodyPartExamined"] in ("CHEST", "LUNG")
    assert meta["intensity_unit"] == "HU" and meta["source_format"] == "dicom"
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(arr, expected, atol=1e-3)
    # air around the patient (and outside the reconstruction circle) is around -1000 HU
    assert -1100.0 <= np.percentile(arr, 1) <= -900.0
    assert arr.max() > 0.0


@pytest.mark.parametrize(
    "compressed, reference",
    [
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("SC_rgb_rle.dcm", "SC_rgb.dcm"),
    ],
)
def test_lossless_compressed_matches_uncompressed(compressed, reference):
    arr, meta = read_image_row({"image": pydicom_file(compressed)})
    ref, ref_meta = read_image_row({"image": pydicom_file(reference)})
    assert meta["TransferSyntaxUID"] == str(pydicom.dcmread(pydicom_file(compressed)).file_meta.TransferSyntaxUID)
    assert ref_meta["TransferSyntaxUID"] == EXPLICIT_VR_LE
    assert arr.shape == ref.shape and arr.dtype == np.float32
    np.testing.assert_allclose(arr, ref, atol=0)


@pytest.mark.parametrize(
    "compressed, reference, atol",
    [("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb.dcm", 3.0), ("SC_rgb_dcmtk_+eb+cr.dcm", "SC_rgb.dcm", 3.0)],
)
def test_jpeg_baseline_colour_to_grey(compressed, reference, atol):
    arr, meta = read_image_row({"image": pydicom_file(compressed)})
    ref, _ = read_image_row({"image": pydicom_file(reference)})
    assert meta["TransferSyntaxUID"] == "1.2.840.10008.1.2.4.50"
    assert arr.shape == (100, 100) and meta["color_conversion"] == "luminance_itu_r_601"
    np.testing.assert_allclose(arr, ref, atol=atol)  # lossy: small differences only
    rgb = pydicom.dcmread(pydicom_file(reference)).pixel_array.astype(np.float32)
    np.testing.assert_allclose(ref, rgb @ np.array([0.299, 0.587, 0.114], np.float32), atol=1e-3)


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "JPEG2000.dcm"])
def test_other_compressed_syntaxes_decode(name):
    arr, meta = read_image_row({"image": pydicom_file(name)})
    ds = pydicom.dcmread(pydicom_file(name))
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    assert arr.shape == (int(ds.Rows), int(ds.Columns)) and arr.dtype == np.float32
    assert np.isfinite(arr).all() and arr.std() > 0


def test_multiframe_frame_index():
    path = pydicom_file("emri_small.dcm")
    full, _ = read_image_row({"image": path})
    frame, meta = read_image_row({"image": path, "index": 3})
    assert full.shape == (10, 64, 64) and frame.shape == (64, 64) and meta["slice_index"] == 3
    np.testing.assert_allclose(frame, full[3])
    with pytest.raises(ValueError, match="out of range"):
        read_image_row({"image": path, "index": 10})


@pytest.mark.parametrize("slope, intercept", [(None, None), (2.0, -10.0)])
def test_monochrome1_inverted(tmp_path, slope, intercept):
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    tags = {"PhotometricInterpretation": "MONOCHROME1", "BitsStored": 12, "HighBit": 11}
    if slope is not None:
        tags.update(RescaleSlope=slope, RescaleIntercept=intercept)
    path = write_dicom(tmp_path / "mono1.dcm", pixels, **tags)
    arr, meta = read_image_row({"image": str(path)})
    if slope is None:
        expected = 4095.0 - pixels
    else:
        lo, hi = intercept, 4095 * slope + intercept
        expected = lo + hi - (pixels * slope + intercept)
    np.testing.assert_allclose(arr, expected)
    assert meta["PhotometricInterpretation"] == "MONOCHROME1" and meta["intensity_unit"] == ""


def test_signed_dicom_rescale(tmp_path):
    pixels = np.array([[-5, 0], [7, 100]], dtype=np.int16)
    path = write_dicom(tmp_path / "ct.dcm", pixels, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024)
    arr, meta = DicomReader().get_data(DicomReader().read(str(path)))
    np.testing.assert_allclose(arr, pixels - 1024.0)
    assert meta["intensity_unit"] == "HU" and meta["source_dtype"] == "int16"


def test_truncated_native_pixel_data_names_path_and_syntax(tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.PixelData = ds.PixelData[:100]
    path = tmp_path / "short.dcm"
    ds.save_as(path)
    with pytest.raises(ValueError) as err:
        read_image_row({"image": str(path), "manifest": "m.csv", "row": 7})
    msg = str(err.value)
    assert str(path) in msg and "manifest m.csv row 7" in msg
    assert EXPLICIT_VR_LE in msg and "Explicit VR Little Endian" in msg


@pytest.mark.parametrize(
    "name, uid",
    [("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"), ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5")],
)
def test_corrupt_compressed_pixel_data_names_path_and_syntax(tmp_path, name, uid):
    ds = pydicom.dcmread(pydicom_file(name))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    path = tmp_path / "corrupt.dcm"
    ds.save_as(path)
    with pytest.raises(ValueError) as err:
        read_image_row({"image": str(path)})
    msg = str(err.value)
    assert str(path) in msg and uid in msg and UID(uid).name in msg


def test_non_dicom_given_to_dicom_reader(tmp_path):
    path = tmp_path / "fake.dcm"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
    with pytest.raises(ValueError, match=str(path)):
        DicomReader().read(str(path))
    with pytest.raises(ValueError, match="manifest m.csv row 3"):
        read_image_row({"image": str(path), "manifest": "m.csv", "row": 3})
    assert not DicomReader().verify_suffix(str(tmp_path / "a.png"))
    assert DicomReader().verify_suffix([str(path), "b.DCM"])


def test_suffixless_dicom(tmp_path):
    path = write_dicom(tmp_path / "IM0001", np.ones((2, 3), np.uint16))
    path_nosuffix = path
    assert DicomReader().verify_suffix(str(path_nosuffix))
    arr, meta = read_image_row({"image": str(path_nosuffix)})
    assert arr.shape == (2, 3) and meta["source_format"] == "dicom"


def test_missing_file_and_unsupported_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest m\.csv row 5: file not found"):
        read_image_row({"image": str(tmp_path / "nope.png"), "manifest": "m.csv", "row": 5})
    other = tmp_path / "x.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match="unsupported file type .txt"):
        read_image_row({"image": str(other)})


def test_head_ct_png_rgb_grey_is_one_channel(shared_datasets):
    path = shared_datasets / "head_ct_hemorrhage" / "head_ct" / "000.png"
    rgb = np.asarray(Image.open(path))
    assert rgb.ndim == 3 and rgb.shape[-1] >= 3
    arr, meta = read_image_row({"image": str(path)})
    assert arr.shape == rgb.shape[:2] and arr.dtype == np.float32
    np.testing.assert_allclose(arr, rgb[..., 0])
    assert meta["color_conversion"] == "equal_channels" and meta["source_dtype"] == "uint8"
    assert meta["source_format"] == "pil"


def test_jsrt_png_grey(shared_datasets):
    path = next(iter(sorted((shared_datasets / "jsrt_scr" / "images_1024").glob("*.png"))))
    arr, meta = read_image_row({"image": str(path)})
    assert arr.shape == (1024, 1024) and meta["color_conversion"] == ""


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_png_to_luminance(tmp_path, mode):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(8, 9, len(mode)), dtype=np.uint8)
    path = tmp_path / "colour.png"
    Image.fromarray(data, mode=mode).save(path)
    arr, meta = read_image_row({"image": str(path)})
    expected = np.asarray(Image.fromarray(data[..., :3], mode="RGB").convert("L"), dtype=np.float32)
    np.testing.assert_allclose(arr, expected)
    assert meta["color_conversion"] == "luminance_itu_r_601"


def test_pneumoniamnist_npz(shared_datasets):
    path = shared_datasets / "pneumoniamnist" / "pneumoniamnist.npz"
    with np.load(path) as npz:
        expected = npz["val_images"][5]
    arr, meta = read_image_row({"image": str(path), "key": "val_images", "index": 5.0})
    np.testing.assert_allclose(arr, expected)
    assert arr.shape == (28, 28) and meta["source_dtype"] == "uint8" and meta["slice_index"] == 5
    with pytest.raises(ValueError, match="train_labels"):
        read_image_row({"image": str(path), "key": "nope", "index": 0})
    with pytest.raises(ValueError, match=r"manifest p\.csv row 9: .*out of range"):
        read_image_row({"image": str(path), "key": "val_images", "index": 524, "manifest": "p.csv", "row": 9})


def test_npz_reader_interface(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, only=np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    reader = NpzReader(index=1)
    assert reader.verify_suffix(str(path)) and not reader.verify_suffix("a.npy")
    arr, meta = reader.get_data(reader.read(str(path)))
    np.testing.assert_allclose(arr, np.arange(12, 24).reshape(3, 4))
    assert meta["source_dtype"] == "int16"


def test_mrnet_npy(tmp_path):
    vol = np.random.default_rng(1).integers(0, 256, size=(6, 256, 256), dtype=np.uint8)
    path = tmp_path / "0000.npy"
    np.save(path, vol)
    arr, meta = read_image_row({"image": str(path), "index": 4})
    np.testing.assert_allclose(arr, vol[4])
    assert meta["source_dtype"] == "uint8" and meta["source_format"] == "npy"
    bad = tmp_path / "bad.npy"
    np.save(bad, vol[0])
    with pytest.raises(ValueError, match=r"manifest k\.csv row 1: .*bad\.npy.*\(slices, H, W\)"):
        read_image_row({"image": str(bad), "index": 0, "manifest": "k.csv", "row": 1})


def test_nifti_volume_and_2d(tmp_path):
    vol = np.random.default_rng(2).normal(size=(12, 10, 5)).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    arr, meta = read_image_row({"image": str(path), "index": 2})
    np.testing.assert_allclose(arr, vol[..., 2])
    assert meta["source_format"] == "nifti" and meta["source_dtype"] == "float32"
    full, _ = read_image_row({"image": str(path)})
    assert full.shape == (12, 10, 5)
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(vol[..., :1], np.eye(4)), flat)
    arr2d, _ = read_image_row({"image": str(flat)})
    np.testing.assert_allclose(arr2d, vol[..., 0])
