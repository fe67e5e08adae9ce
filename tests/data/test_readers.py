"""Tests for modan_monai.data.readers (real shared DICOM/PNG/npz files, pydicom test files, tmp files).

Arrays are in MONAI's ``(x, y)`` order: the transpose of the row-major arrays PIL, pydicom and NumPy hold.
"""

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

from modan_monai.data.readers import (
    IMAGE_READERS,
    META_KEYS,
    DicomReader,
    NiftiReader,
    NpyVolumeReader,
    NpzReader,
    PILImageReader,
    read_image_row,
    select_reader,
)

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def pydicom_file(name: str) -> str:
    """Path of a pydicom / pydicom-data test file, never downloading; skip if not installed locally."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available locally (pydicom-data not installed)")
    return str(path)


def grey_dataset(shape: tuple[int, int]) -> Dataset:
    """A minimal single-frame grey Secondary Capture dataset (explicit VR little endian), without pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def write_dicom(path: Path, pixels: np.ndarray, **tags) -> Path:
    """Write a minimal uncompressed single-frame grey DICOM file."""
    ds = grey_dataset(pixels.shape)
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
    assert arr.shape == (512, 512) and arr.dtype == np.float32 and arr.flags.c_contiguous
    assert set(META_KEYS) <= set(meta)
    assert meta["TransferSyntaxUID"] == uid and meta["TransferSyntaxName"] == UID(uid).name
    assert meta["Modality"] == "CT" and meta["BodyPartExamined"] in ("CHEST", "LUNG")
    assert meta["intensity_unit"] == "HU" and meta["source_format"] == "dicom"
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(arr, expected.T, atol=1e-3)  # (rows, cols) -> (x, y)
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
    np.testing.assert_allclose(ref, (rgb @ np.array([0.299, 0.587, 0.114], np.float32)).T, atol=1e-3)


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "JPEG2000.dcm"])
def test_other_compressed_syntaxes_decode(name):
    arr, meta = read_image_row({"image": pydicom_file(name)})
    ds = pydicom.dcmread(pydicom_file(name))
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    assert arr.shape == (int(ds.Columns), int(ds.Rows)) and arr.dtype == np.float32
    assert np.isfinite(arr).all() and arr.std() > 0


def test_multiframe_frame_index():
    path = pydicom_file("emri_small.dcm")
    full, _ = read_image_row({"image": path})
    frame, meta = read_image_row({"image": path, "index": 3})
    assert full.shape == (64, 64, 10) and frame.shape == (64, 64) and meta["slice_index"] == 3
    np.testing.assert_allclose(frame, full[..., 3])
    np.testing.assert_allclose(frame, pydicom.dcmread(path).pixel_array[3].T)
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
    np.testing.assert_allclose(arr, expected.T)
    assert meta["PhotometricInterpretation"] == "MONOCHROME1" and meta["intensity_unit"] == ""


def test_signed_dicom_rescale(tmp_path):
    pixels = np.array([[-5, 0], [7, 100]], dtype=np.int16)
    path = write_dicom(tmp_path / "ct.dcm", pixels, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024)
    arr, meta = DicomReader().get_data(DicomReader().read(str(path)))
    np.testing.assert_allclose(arr, (pixels - 1024.0).T)
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
    assert arr.shape == (3, 2) and meta["source_format"] == "dicom"  # (Columns, Rows)


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
    assert arr.shape == rgb.shape[1::-1] and arr.dtype == np.float32  # (width, height)
    np.testing.assert_allclose(arr, rgb[..., 0].T)
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
    np.testing.assert_allclose(arr, expected.T)
    assert meta["color_conversion"] == "luminance_itu_r_601"


def test_gif_masks_and_frames(tmp_path):
    """Retina datasets ship masks as palette GIFs; an animated GIF is read frame by frame like a TIFF."""
    mask = np.zeros((6, 7), np.uint8)
    mask[1:4, 2:6] = 255
    palette = Image.fromarray(mask).convert("P")
    path = tmp_path / "01_manual1.GIF"  # suffixes are matched case-insensitively
    palette.save(path)
    arr, meta = read_image_row({"image": str(path)})
    np.testing.assert_array_equal(arr, mask.T.astype(np.float32))
    assert tuple(int(v) for v in meta["spatial_shape"][:2]) == (7, 6)
    frames = [Image.fromarray(np.full((4, 5), v, np.uint8)) for v in (10, 200)]
    animated = tmp_path / "anim.gif"
    frames[0].save(animated, save_all=True, append_images=frames[1:])
    second, _ = read_image_row({"image": str(animated), "index": 1})
    assert second.shape == (5, 4) and float(second.mean()) == pytest.approx(200, abs=2)
    with pytest.raises(ValueError, match="multi-page image with 2 pages"):
        read_image_row({"image": str(animated)})


def test_pneumoniamnist_npz(shared_datasets):
    path = shared_datasets / "pneumoniamnist" / "pneumoniamnist.npz"
    with np.load(path) as npz:
        expected = npz["val_images"][5]
    arr, meta = read_image_row({"image": str(path), "key": "val_images", "index": 5.0})
    np.testing.assert_allclose(arr, expected.T)
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
    np.testing.assert_allclose(arr, np.arange(12, 24).reshape(3, 4).T)
    assert meta["source_dtype"] == "int16"
    whole, _ = NpzReader().get_data(NpzReader().read(str(path)))
    np.testing.assert_allclose(whole, np.arange(24).reshape(2, 3, 4).transpose(2, 1, 0))  # (x, y, N)


def test_mrnet_npy(tmp_path):
    vol = np.random.default_rng(1).integers(0, 256, size=(6, 256, 256), dtype=np.uint8)
    path = tmp_path / "0000.npy"
    np.save(path, vol)
    arr, meta = read_image_row({"image": str(path), "index": 4})
    np.testing.assert_allclose(arr, vol[4].T)
    whole, _ = read_image_row({"image": str(path)})
    assert whole.shape == (256, 256, 6)
    np.testing.assert_allclose(whole[..., 4], arr)
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


# --- one ImageReader per format, chosen by suffix --------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.dcm", DicomReader), ("b.DICOM", DicomReader), ("c.nii", NiftiReader), ("d.nii.gz", NiftiReader),
        ("e.png", PILImageReader), ("f.JPG", PILImageReader), ("g.jpeg", PILImageReader),
        ("h.tif", PILImageReader), ("i.tiff", PILImageReader), ("j.bmp", PILImageReader),
        ("k.npz", NpzReader), ("l.npy", NpyVolumeReader), ("m.txt", None), ("n.gz", None),
    ],
)
def test_reader_chosen_by_suffix(name, expected):
    reader = select_reader(name, key="train_images", index=3)
    if expected is None:
        assert reader is None
        assert not any(cls(index=None).verify_suffix(name) for cls in IMAGE_READERS)
        return
    assert type(reader) is expected and reader.index == 3
    others = [cls for cls in IMAGE_READERS if cls is not expected]
    assert not any(cls(index=None).verify_suffix(name) for cls in others)
    if expected is NpzReader:
        assert reader.key == "train_images"


def test_suffixless_file_chosen_by_dicom_marker(tmp_path):
    dicom = write_dicom(tmp_path / "IM0002", np.ones((2, 3), np.uint16))
    other = tmp_path / "README"
    other.write_text("not an image")
    assert isinstance(select_reader(dicom), DicomReader) and select_reader(other) is None
    with pytest.raises(ValueError, match=r"manifest m\.csv row 1: .*README: unsupported file type \(no suffix"):
        read_image_row({"image": str(other), "manifest": "m.csv", "row": 1})


def test_axis_order_matches_monai_readers(tmp_path, tcga_by_syntax):
    """The same arrays as MONAI's own PILReader / NibabelReader / PydicomReader (all in (x, y) order)."""
    from monai.data import NibabelReader, PILReader, PydicomReader

    grey = np.random.default_rng(3).integers(0, 256, size=(7, 11), dtype=np.uint8)  # 7 rows, 11 columns
    png = tmp_path / "grey.png"
    Image.fromarray(grey).save(png)
    vol = np.random.default_rng(4).normal(size=(6, 5, 4)).astype(np.float32)
    nii = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.5, 0.7, 2.0, 1.0])), nii)
    dcm = str(tcga_by_syntax[EXPLICIT_VR_LE])
    for path, monai_reader, ours in [
        (png, PILReader(), PILImageReader()),
        (nii, NibabelReader(), NiftiReader()),
        (dcm, PydicomReader(), DicomReader()),
    ]:
        expected, monai_meta = monai_reader.get_data(monai_reader.read(str(path)))
        arr, meta = ours.get_data(ours.read(str(path)))
        assert arr.shape == expected.shape, path
        np.testing.assert_allclose(arr, expected, atol=1e-4)
        np.testing.assert_array_equal(meta["spatial_shape"], monai_meta["spatial_shape"])
    assert PILImageReader().get_data(PILImageReader().read(str(png)))[0].shape == (11, 7)  # (width, height)


@pytest.mark.parametrize("reader_cls", [PILImageReader, NiftiReader, DicomReader])
def test_readers_work_with_monai_load_image(tmp_path, reader_cls):
    from monai.transforms import LoadImage

    from modan_monai.transforms import LoadManifestImaged

    rng = np.random.default_rng(5)
    if reader_cls is PILImageReader:
        path = tmp_path / "a.png"
        Image.fromarray(rng.integers(0, 256, size=(6, 9), dtype=np.uint8)).save(path)
    elif reader_cls is NiftiReader:
        path = tmp_path / "a.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(size=(9, 6)).astype(np.float32), np.diag([2.0, 3.0, 1.0, 1.0])), path)
    else:
        path = write_dicom(tmp_path / "a.dcm", rng.integers(0, 4000, size=(6, 9)).astype(np.uint16))
    loaded = LoadImage(reader=reader_cls(), image_only=True, ensure_channel_first=True)(str(path))
    ours = LoadManifestImaged()({"image": str(path)})["image"]
    assert loaded.shape == ours.shape == (1, 9, 6)
    np.testing.assert_allclose(loaded.numpy(), ours.numpy())
    np.testing.assert_allclose(loaded.affine.numpy(), ours.affine.numpy())


def test_nifti_reader_keeps_affine_and_moves_it_to_the_slice(tmp_path):
    vol = np.random.default_rng(6).normal(size=(8, 6, 5)).astype(np.float32)
    affine = np.array([[0.0, -0.8, 0.0, 12.0], [0.9, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1]])
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), path)
    full, meta = read_image_row({"image": str(path)})
    np.testing.assert_allclose(meta["affine"], affine)
    np.testing.assert_allclose(meta["original_affine"], affine)
    assert meta["space"] == "RAS" and full.shape == (8, 6, 5)
    arr, smeta = read_image_row({"image": str(path), "index": 3})
    np.testing.assert_allclose(arr, vol[:, :, 3])
    assert smeta["slice_index"] == 3
    # voxel (i, j) of the slice is voxel (i, j, 3) of the volume in world space
    for i, j in [(0, 0), (7, 5), (2, 4)]:
        np.testing.assert_allclose(smeta["affine"] @ [i, j, 0, 1], affine @ [i, j, 3, 1])
    np.testing.assert_allclose(smeta["original_affine"], smeta["affine"])
    with pytest.raises(ValueError, match=r"manifest n\.csv row 2: .*vol\.nii\.gz: slice index 5 out of range"):
        read_image_row({"image": str(path), "index": 5, "manifest": "n.csv", "row": 2})
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(vol[..., :1], affine), flat)
    arr2d, fmeta = read_image_row({"image": str(flat)})
    assert arr2d.shape == (8, 6)
    np.testing.assert_allclose(fmeta["affine"], affine)
    four_d = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4)), four_d)
    with pytest.raises(ValueError, match=r"4d\.nii\.gz: NIfTI image of shape \(4, 4, 3, 2\)"):
        read_image_row({"image": str(four_d)})


def test_every_reader_fills_the_same_meta_keys(tmp_path, shared_datasets):
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), nii)
    npy = tmp_path / "v.npy"
    np.save(npy, np.zeros((2, 4, 4), np.uint8))
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png)
    rows = [
        {"image": str(write_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16)))},
        {"image": str(nii), "index": 1}, {"image": str(png)}, {"image": str(npy), "index": 0},
        {"image": str(shared_datasets / "pneumoniamnist" / "pneumoniamnist.npz"), "key": "val_images", "index": 0},
    ]
    formats = set()
    for row in rows:
        _, meta = read_image_row(row)
        assert set(META_KEYS) <= set(meta), row
        assert all(meta[k] is not None for k in META_KEYS)
        assert np.shape(meta["affine"]) == (4, 4) and meta["original_channel_dim"] == "no_channel"
        assert meta["non_finite_replaced"] == 0
        formats.add(meta["source_format"])
    assert formats == {"dicom", "nifti", "pil", "npy", "npz"}


def test_multipage_and_float_tiff(tmp_path):
    pages = [np.full((3, 5), v, np.uint8) for v in (10, 20, 30)]
    path = tmp_path / "stack.tif"
    Image.fromarray(pages[0]).save(path, save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]])
    arr, meta = read_image_row({"image": str(path), "index": 2})
    assert arr.shape == (5, 3) and float(arr[0, 0]) == 30.0 and meta["slice_index"] == 2
    with pytest.raises(ValueError, match=r"multi-page image with 3 pages; give the page"):
        read_image_row({"image": str(path)})
    data = np.linspace(-2.5, 7.25, 12, dtype=np.float32).reshape(3, 4)
    floats = tmp_path / "f.tiff"
    Image.fromarray(data).save(floats)
    arr, meta = read_image_row({"image": str(floats)})
    np.testing.assert_array_equal(arr, data.T)
    assert meta["source_dtype"] == "float32" and meta["PhotometricInterpretation"] == "F"


# --- non-finite pixels --------------------------------------------------------------------------------------------


def write_float_dicom(path: Path, pixels: np.ndarray) -> Path:
    """A DICOM file with Float Pixel Data (the only DICOM encoding that can hold NaN/Inf)."""
    ds = grey_dataset(pixels.shape)
    ds.BitsAllocated = 32
    ds.FloatPixelData = pixels.astype(np.float32).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def non_finite_image() -> np.ndarray:
    """4 x 6 float image with 2 NaN, 1 +Inf and 1 -Inf (row-major, as the files store it)."""
    data = np.arange(24, dtype=np.float32).reshape(4, 6)
    data[0, 1] = data[3, 5] = np.nan
    data[1, 2] = np.inf
    data[2, 0] = -np.inf
    return data


def write_non_finite(fmt: str, folder: Path) -> dict:
    """A row pointing at a file of format ``fmt`` holding :func:`non_finite_image`."""
    data = non_finite_image()
    if fmt == "nifti":
        path = folder / "ct.nii.gz"
        nib.save(nib.Nifti1Image(np.stack([data.T, data.T], axis=-1), np.eye(4)), path)  # (x, y, z)
        return {"image": str(path), "index": 1}
    if fmt == "tiff":
        path = folder / "float.tiff"
        Image.fromarray(data).save(path)
        return {"image": str(path)}
    if fmt == "npz":
        path = folder / "images.npz"
        np.savez(path, train_images=np.stack([data, data]))
        return {"image": str(path), "key": "train_images", "index": 1}
    if fmt == "npy":
        path = folder / "knee.npy"
        np.save(path, np.stack([data, data, data]))
        return {"image": str(path), "index": 2}
    path = write_float_dicom(folder / "float.dcm", data)
    return {"image": str(path)}


NON_FINITE_FORMATS = ["nifti", "tiff", "npz", "npy", "dicom"]


@pytest.mark.parametrize("fmt", NON_FINITE_FORMATS)
def test_non_finite_pixels_raise_naming_row_and_file(tmp_path, fmt):
    row = {**write_non_finite(fmt, tmp_path), "manifest": "/data/m.csv", "row": 4}
    with pytest.raises(ValueError) as err:
        read_image_row(row)
    msg = str(err.value)
    assert msg.startswith(f"manifest /data/m.csv row 4: {row['image']}: ")
    assert "4 non-finite pixel value(s) of 24 (NaN 2, +Inf 1, -Inf 1)" in msg and "nan_policy='replace'" in msg


@pytest.mark.parametrize("fmt", NON_FINITE_FORMATS)
def test_non_finite_pixels_replaced_on_request(tmp_path, fmt, caplog):
    row = {**write_non_finite(fmt, tmp_path), "manifest": "m.csv", "row": 0}
    with caplog.at_level("WARNING", logger="modan_monai.data.readers"):
        arr, meta = read_image_row(row, nan_policy="replace", fill_value=-1.0)
    expected = non_finite_image().T
    bad = ~np.isfinite(expected)
    np.testing.assert_array_equal(arr[bad], -1.0)
    np.testing.assert_array_equal(arr[~bad], expected[~bad])
    assert meta["non_finite_replaced"] == 4
    assert f"manifest m.csv row 0: {row['image']}: replaced 4 non-finite pixel value(s)" in caplog.text


def test_unknown_nan_policy():
    with pytest.raises(ValueError, match=r"nan_policy must be one of \('error', 'replace'\)"):
        read_image_row({"image": "x.png"}, nan_policy="ignore")


def test_dicom_rescale_overflowing_float32_is_non_finite(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.array([[0, 1], [2, 60000]], np.uint16), RescaleSlope="1e35",
                       RescaleIntercept="0")
    with pytest.raises(ValueError, match=r"row 2: .*a\.dcm: image has 1 non-finite pixel value\(s\) of 4 "
                                         r"\(NaN 0, \+Inf 1, -Inf 0\)"):
        read_image_row({"image": str(path), "manifest": "m.csv", "row": 2})


def test_directory_and_npz_stack_without_index_name_row_and_file(tmp_path):
    (tmp_path / "scans.png").mkdir()
    with pytest.raises(ValueError) as err:
        read_image_row({"image": str(tmp_path / "scans.png"), "manifest": "m.csv", "row": 3})
    assert str(err.value).startswith(f"manifest m.csv row 3: {tmp_path / 'scans.png'}: is a directory, not an image")
    path = tmp_path / "pneumoniamnist.npz"
    np.savez(path, train_images=np.zeros((4, 5, 6), np.uint8), single=np.zeros((5, 6), np.uint8))
    with pytest.raises(ValueError) as err:
        read_image_row({"image": str(path), "key": "train_images", "manifest": "m.csv", "row": 7})
    assert str(err.value).startswith(f"manifest m.csv row 7: {path}: array 'train_images' of shape (4, 5, 6)")
    assert "the index column is required for .npz rows" in str(err.value)
    arr, _ = read_image_row({"image": str(path), "key": "single"})  # one 2D image needs no index
    assert arr.shape == (6, 5)
