"""Image readers for manifest rows: one MONAI ``ImageReader`` per format, chosen by file suffix.

=====================  =========================  ==========================================================
suffix                 reader                     notes
=====================  =========================  ==========================================================
``.dcm``, ``.dicom``,  :class:`DicomReader`       pydicom 3: Modality LUT / rescale, MONOCHROME1, colour ->
no suffix + ``DICM``                              grey, multi-frame, compressed transfer syntaxes
``.nii``, ``.nii.gz``  :class:`NiftiReader`       MONAI ``NibabelReader`` subclass: slice ``index`` of a 3D
                                                  volume; the affine is kept (and moved to the slice)
``.png`` ``.jpg``      :class:`PILImageReader`    PIL: RGB-encoded grey -> one channel, colour -> luminance,
``.jpeg`` ``.tif``                                page ``index`` of a multi-page TIFF
``.tiff`` ``.bmp``                                frame ``index`` of an animated GIF; palette GIF masks (retina
``.gif``                                          sets) read as grey
``.npz``               :class:`NpzReader`         e.g. MedMNIST: array ``key``, image ``index``
``.npy``               :class:`NpyVolumeReader`   MRNet volume ``(slices, H, W)``, slice ``index``
=====================  =========================  ==========================================================

**Axis order.** Every reader returns arrays in MONAI's spatial order, the one ``NibabelReader``, ``PILReader``
(``reverse_indexing=True``) and ``PydicomReader`` (``swap_ij=True``) use: a 2D image is ``(x, y)`` =
``(width, height)`` (the transpose of the row-major ``(rows, columns)`` array PIL, pydicom and NumPy files hold), a
volume is ``(x, y, slices)``. In this order MONAI's writers (``SaveImage``: ``PILWriter`` swaps the two axes back,
``NibabelWriter`` writes voxel order with the affine) and ``Invertd`` round-trip an image: a PNG read and written
back has the same size and orientation, and a NIfTI mask written for a NIfTI input carries the input's affine.
A network therefore sees images transposed with respect to a picture viewer: a horizontal (left-right) flip is
along spatial axis 0, and TensorBoard (which draws ``(C, H, W)``) needs ``img.transpose(-1, -2)`` to show them
upright.

Every reader returns a float32 array plus a metadata dictionary with the same set of keys (:data:`META_KEYS`,
empty strings where a format has no such field), so that images of different formats can be collated into one
batch (``monai.data.utils.collate_meta_tensor`` keeps only the keys common to a batch and cannot collate ``None``).
The readers also work with MONAI's ``LoadImage(reader=...)``.

**Non-finite pixels.** :func:`read_image_row` (and so ``LoadManifestImaged``) checks every decoded image, whatever
its format, with :func:`replace_non_finite`: NaN / +-Inf in a float TIFF, a NIfTI, a float ``.npy`` / ``.npz``, a
DICOM with Float Pixel Data, or a DICOM whose rescale overflows float32 raise a ``ValueError`` naming the manifest
row and the file (``nan_policy="replace"`` writes ``fill_value`` instead and logs the count). PNG, JPEG and BMP hold
integers only. A row whose path is a folder, and an ``.npz`` row without ``index`` whose array is a stack of images,
raise a ``ValueError`` naming the row and the file.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader, NibabelReader
from monai.utils import ensure_tuple, optional_import

pydicom, _HAS_PYDICOM = optional_import("pydicom")
Image, _HAS_PIL = optional_import("PIL.Image")
nib, _HAS_NIB = optional_import("nibabel")

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_READERS",
    "META_KEYS",
    "NAN_POLICIES",
    "NIFTI_SUFFIXES",
    "PIL_SUFFIXES",
    "DicomReader",
    "NiftiReader",
    "NpyVolumeReader",
    "NpzReader",
    "PILImageReader",
    "is_dicom_file",
    "read_image_row",
    "replace_non_finite",
    "row_context",
    "select_reader",
]

logger = logging.getLogger(__name__)

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
PIL_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")

#: What :func:`read_image_row` does with NaN / +-Inf pixels: raise a ``ValueError`` or replace them.
NAN_POLICIES: tuple[str, ...] = ("error", "replace")

#: Metadata keys every reader fills (``""`` when the format has no such field).
META_KEYS: tuple[str, ...] = (
    "filename_or_obj",
    "source_format",
    "source_dtype",
    "spatial_shape",
    "slice_index",
    "Modality",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "TransferSyntaxUID",
    "TransferSyntaxName",
    "intensity_unit",
    "color_conversion",
    "affine",
    "original_affine",
    "original_channel_dim",
    "non_finite_replaced",
)

# ITU-R BT.601 luma weights, the same ones PIL uses for mode "L".
_LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_NO_CHANNEL = "no_channel"


def row_context(row: Mapping[str, Any] | None) -> str:
    """Describe a manifest row for error messages.

    Args:
        row: a datalist dictionary (keys ``manifest`` and ``row`` are used when present).

    Returns:
        ``"manifest <m> row <r>: "`` or ``""`` when the row carries no provenance.
    """
    if not row:
        return ""
    manifest, index = row.get("manifest"), row.get("row")
    if manifest is None and index is None:
        return ""
    return f"manifest {manifest} row {index}: "


def _base_meta(path: str | os.PathLike, source_format: str) -> dict[str, Any]:
    meta: dict[str, Any] = {k: "" for k in META_KEYS}
    meta["filename_or_obj"] = str(path)
    meta["source_format"] = source_format
    meta["slice_index"] = -1
    meta["affine"] = np.eye(4)
    meta["original_affine"] = np.eye(4)
    meta["original_channel_dim"] = _NO_CHANNEL
    meta["non_finite_replaced"] = 0
    return meta


def _finish(arr: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """float32, C-contiguous, ``spatial_shape`` filled in."""
    out = np.ascontiguousarray(arr, dtype=np.float32)
    meta["spatial_shape"] = np.asarray(out.shape)
    return out, meta


def _to_monai_order(arr: np.ndarray) -> np.ndarray:
    """Row-major ``(rows, cols)`` -> ``(x, y)``; ``(slices, rows, cols)`` -> ``(x, y, slices)``."""
    if arr.ndim == 2:
        return arr.T
    if arr.ndim == 3:
        return np.transpose(arr, (2, 1, 0))
    raise ValueError(f"expected a 2D image or a 3D volume, got an array of shape {arr.shape}")


def _stack_results(results: Sequence[tuple[np.ndarray, dict]]) -> tuple[np.ndarray, dict]:
    """Several files of one image: stack on a new first (channel) axis, MONAI-style; metadata of the first."""
    if len(results) == 1:
        return results[0]
    arrays, metas = zip(*results)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        names = [m["filename_or_obj"] for m in metas]
        raise ValueError(f"cannot stack images of different shapes {sorted(shapes)}: {names}")
    meta = dict(metas[0])
    meta["original_channel_dim"] = 0
    return np.stack(arrays), meta


def _suffix(path: str | os.PathLike) -> str:
    name = str(path).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def _all_suffix(filename: Sequence[str | os.PathLike] | str | os.PathLike, suffixes: Sequence[str]) -> bool:
    return all(_suffix(name) in suffixes for name in ensure_tuple(filename))


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Return True if ``path`` is an existing file with the DICOM Part 10 ``DICM`` marker at byte 128.

    Args:
        path: file to check.

    Returns:
        whether the file carries the DICOM preamble marker.
    """
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _to_grey(arr: np.ndarray, channel_axis: int = -1) -> tuple[np.ndarray, str]:
    """Collapse a colour axis: equal channels -> first channel, true colour -> ITU-R 601 luminance."""
    first = np.take(arr, 0, axis=channel_axis)
    channels = [np.take(arr, c, axis=channel_axis) for c in range(1, arr.shape[channel_axis])]
    if all(np.array_equal(first, c) for c in channels):
        return first, "equal_channels"
    rgb = np.moveaxis(arr, channel_axis, -1)[..., :3].astype(np.float32)
    return rgb @ _LUMA_601, "luminance_itu_r_601"


def _check_file(name: str | os.PathLike, what: str) -> None:
    if Path(name).is_dir():
        raise ValueError(f"{name}: is a directory, not a {what} file")
    if not Path(name).is_file():
        raise FileNotFoundError(f"{what} file not found: {name}")


class _SuffixReader(ImageReader):
    """An ``ImageReader`` that accepts the file names ending in one of its class's ``suffixes``."""

    suffixes: tuple[str, ...] = ()

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Accept names that end in one of ``self.suffixes`` (case-insensitive).

        Args:
            filename: a file name or a sequence of them.

        Returns:
            whether every name has one of the suffixes.
        """
        return _all_suffix(filename, self.suffixes)


class DicomReader(ImageReader):
    """Read DICOM files with pydicom, returning modality values (e.g. Hounsfield units for CT).

    Decoding goes through pydicom's pixel-data plugins, so compressed transfer syntaxes (JPEG
    baseline / lossless, JPEG-LS, JPEG 2000, RLE) work when the pylibjpeg plugins are installed.
    Steps: decode -> Modality LUT (``RescaleSlope``/``RescaleIntercept`` or a Modality LUT
    Sequence, :func:`pydicom.pixels.apply_modality_lut`) -> MONOCHROME1 inversion -> colour to grey
    -> MONAI axis order (columns first, as ``PydicomReader(swap_ij=True)``): a single frame is
    ``(Columns, Rows)``, a multi-frame image ``(Columns, Rows, frames)`` unless ``index`` selects one frame.
    The affine is the identity (pixel units).

    MONOCHROME1 (low values shown bright) is inverted as ``lo + hi - x`` where ``[lo, hi]`` is
    the range the stored bits can represent after the rescale (the data range when a Modality
    LUT Sequence is used), so the inversion does not depend on image content.

    Args:
        index: frame to return from a multi-frame image (``None`` = all frames).
        apply_modality_lut: apply the Modality LUT / rescale.
        invert_monochrome1: invert MONOCHROME1 images so that high values are bright.
        kwargs: passed to :func:`pydicom.dcmread`.

    Example:
        >>> reader = DicomReader()
        >>> arr, meta = reader.get_data(reader.read("ct.dcm"))  # doctest: +SKIP
        >>> meta["intensity_unit"], arr.dtype  # doctest: +SKIP
        ('HU', dtype('float32'))
    """

    def __init__(
        self,
        index: int | None = None,
        apply_modality_lut: bool = True,
        invert_monochrome1: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not _HAS_PYDICOM:
            raise ImportError("DicomReader requires pydicom (pip install pydicom).")
        self.index = index
        self.apply_modality_lut = apply_modality_lut
        self.invert_monochrome1 = invert_monochrome1
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Accept ``.dcm``/``.dicom`` names, and suffix-less files that carry the ``DICM`` marker.

        Args:
            filename: a file name or a sequence of them.

        Returns:
            whether every name looks like DICOM.
        """
        for name in ensure_tuple(filename):
            suffix = _suffix(name)
            if suffix in DICOM_SUFFIXES:
                continue
            if suffix == "" and is_dicom_file(name):
                continue
            return False
        return True

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Parse DICOM file(s) (pixel data is decoded later, in :meth:`get_data`).

        Args:
            data: a file name or a sequence of them.
            kwargs: extra arguments for :func:`pydicom.dcmread`.

        Returns:
            a ``pydicom.Dataset`` or a list of them.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is not a readable DICOM file (the message names the path).
        """
        from pydicom.errors import InvalidDicomError

        options = {**self.kwargs, **kwargs}
        out = []
        for name in ensure_tuple(data):
            _check_file(name, "DICOM")
            try:
                out.append(pydicom.dcmread(name, **options))
            except InvalidDicomError as e:
                raise ValueError(f"{name}: not a DICOM file (no 'DICM' marker after the preamble): {e}") from e
            except Exception as e:  # pydicom raises assorted errors on truncated/corrupt headers
                raise ValueError(f"{name}: cannot parse DICOM header: {type(e).__name__}: {e}") from e
        return out if len(out) > 1 else out[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Decode pixel data and build the metadata dictionary.

        Args:
            img: a ``pydicom.Dataset`` or a sequence of them (stacked on a new first, channel axis).

        Returns:
            ``(array, meta)``: float32 array ``(x, y)`` or ``(x, y, frames)``; meta with
            :data:`META_KEYS` plus ``RescaleSlope``/``RescaleIntercept``/``NumberOfFrames``.

        Raises:
            ValueError: pixel data cannot be decoded (names path, transfer syntax UID and name),
                or ``index`` is out of range.
        """
        datasets = img if isinstance(img, (list, tuple)) else [img]
        return _stack_results([self._get_one(ds) for ds in datasets])

    def _get_one(self, ds: Any) -> tuple[np.ndarray, dict]:
        from pydicom.pixels import apply_modality_lut, pixel_array
        from pydicom.uid import UID

        path = str(getattr(ds, "filename", "") or "<in-memory dataset>")
        file_meta = getattr(ds, "file_meta", None)
        tsyntax = UID(str(file_meta.get("TransferSyntaxUID", ""))) if file_meta is not None else UID("")
        ts_desc = f"transfer syntax {tsyntax or '<missing>'} ({tsyntax.name if tsyntax else 'unknown'})"
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise ValueError(f"{path}: DICOM file has no pixel data ({ts_desc})")
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if self.index is not None and not 0 <= int(self.index) < n_frames:
            raise ValueError(f"{path}: frame index {self.index} out of range for {n_frames} frame(s)")
        try:
            if self.index is not None and n_frames > 1:
                raw = pixel_array(ds, index=int(self.index))
            else:
                raw = ds.pixel_array
        except Exception as e:  # decoders raise ValueError/RuntimeError/NotImplementedError/...
            raise ValueError(f"{path}: cannot decode pixel data with {ts_desc}: {type(e).__name__}: {e}") from e
        source_dtype = str(raw.dtype)
        photometric = str(ds.get("PhotometricInterpretation", ""))
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        color_conversion = ""
        arr = raw
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
            samples = 3
        if samples > 1:
            # pydicom 3 converts YBR_* to RGB while decoding (as_rgb=True by default).
            arr, color_conversion = _to_grey(arr, channel_axis=-1)
        rescaled = False
        if self.apply_modality_lut and samples == 1 and photometric != "PALETTE COLOR":
            has_lut = "ModalityLUTSequence" in ds
            if has_lut or "RescaleSlope" in ds or "RescaleIntercept" in ds:
                arr = apply_modality_lut(arr, ds)
                rescaled = True
        with np.errstate(over="ignore"):  # a rescale beyond float32 gives +-Inf, reported by read_image_row
            arr = np.asarray(arr, dtype=np.float32)
        if self.invert_monochrome1 and photometric == "MONOCHROME1":
            lo, hi = self._value_range(ds, arr, rescaled)
            arr = np.float32(lo + hi) - arr
        modality = str(ds.get("Modality", "") or "")
        meta = _base_meta(path, "dicom")
        meta.update(
            {
                "source_dtype": source_dtype,
                "slice_index": -1 if self.index is None else int(self.index),
                "Modality": modality,
                "BodyPartExamined": str(ds.get("BodyPartExamined", "") or ""),
                "PhotometricInterpretation": photometric,
                "TransferSyntaxUID": str(tsyntax),
                "TransferSyntaxName": tsyntax.name if tsyntax else "",
                "intensity_unit": "HU" if (modality.upper() == "CT" and rescaled) else "",
                "color_conversion": color_conversion,
                "RescaleSlope": float(ds.get("RescaleSlope", 1.0) or 1.0),
                "RescaleIntercept": float(ds.get("RescaleIntercept", 0.0) or 0.0),
                "NumberOfFrames": n_frames,
            }
        )
        return _finish(_to_monai_order(arr), meta)

    @staticmethod
    def _value_range(ds: Any, arr: np.ndarray, rescaled: bool) -> tuple[float, float]:
        """Range of values the stored bits can take, mapped through the rescale."""
        if rescaled and "ModalityLUTSequence" in ds:
            return float(arr.min()), float(arr.max())
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
        if int(ds.get("PixelRepresentation", 0)) == 1:
            lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        else:
            lo, hi = 0, 2**bits - 1
        if rescaled:
            slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
            intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
            lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
        return float(lo), float(hi)


class NiftiReader(NibabelReader):
    """MONAI's ``NibabelReader`` for manifest rows: a 2D image or one slice of a 3D volume, affine kept.

    Voxel order is NIfTI's (``(i, j)`` / ``(i, j, k)``, as ``NibabelReader``), so a 2D image stored as
    ``(x, y, 1)`` reads as ``(x, y)``. ``index`` selects slice ``k`` of a 3D volume (read lazily through
    nibabel's array proxy); its ``affine`` is the volume's affine moved to that slice
    (``affine @ translate(0, 0, k)``), so a 2D mask written by ``SaveImage`` for the slice lands at the slice's
    place in world space. ``original_affine`` equals ``affine`` (``SaveImage(resample=True)`` is then a no-op).

    Args:
        index: slice of a 3D volume along the last axis (``None`` = whole image / volume).
        as_closest_canonical: see ``NibabelReader``.
        kwargs: passed to ``nibabel.load``.

    Example:
        >>> reader = NiftiReader(index=40)
        >>> arr, meta = reader.get_data(reader.read("ct.nii.gz"))  # doctest: +SKIP
        >>> arr.shape, meta["affine"].shape  # doctest: +SKIP
        ((512, 512), (4, 4))
    """

    def __init__(self, index: int | None = None, as_closest_canonical: bool = False, **kwargs: Any) -> None:
        super().__init__(as_closest_canonical=as_closest_canonical, **kwargs)
        self.index = index

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Accept names ending in ``.nii`` or ``.nii.gz``.

        Args:
            filename: a file name or a sequence of them.

        Returns:
            whether every name is a NIfTI file name (and nibabel is installed).
        """
        return _HAS_NIB and _all_suffix(filename, NIFTI_SUFFIXES)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Open NIfTI file(s) with nibabel (data are read in :meth:`get_data`).

        Args:
            data: a file name or a sequence of them.
            kwargs: extra arguments for ``nibabel.load``.

        Returns:
            a nibabel image or a list of them.

        Raises:
            FileNotFoundError: the file does not exist.
        """
        for name in ensure_tuple(data):
            _check_file(name, "NIfTI")
        return super().read(data, **kwargs)

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Read the data (or the ``index`` slice) in voxel order with the affine.

        Args:
            img: output of :meth:`read`.

        Returns:
            ``(array, meta)``: float32 ``(x, y)`` or ``(x, y, z)``; meta with :data:`META_KEYS` (``affine``,
            ``original_affine``; voxel spacing is in the affine) plus ``space`` (``"RAS"``).

        Raises:
            ValueError: more than 3 non-singleton axes, or ``index`` out of range / given for a 2D image.
        """
        images = ensure_tuple(img)
        names = ensure_tuple(getattr(self, "filenames", ())) or tuple("<nibabel image>" for _ in images)
        return _stack_results([self._get_one(i, str(n)) for i, n in zip(images, names)])

    def _get_one(self, image: Any, path: str) -> tuple[np.ndarray, dict]:
        if self.as_closest_canonical:
            image = nib.as_closest_canonical(image)
        shape = tuple(int(s) for s in image.shape)
        while len(shape) > 2 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) not in (2, 3):
            raise ValueError(f"{path}: NIfTI image of shape {tuple(image.shape)}; only 2D images and 3D volumes "
                             "are supported")
        affine = self._get_affine(image).astype(np.float64)
        meta = _base_meta(path, "nifti")
        meta["source_dtype"] = str(image.get_data_dtype())
        index = self.index
        if len(shape) == 3 and index is not None:
            if not 0 <= int(index) < shape[2]:
                raise ValueError(f"{path}: slice index {index} out of range for volume of shape {shape}")
            arr = np.asanyarray(image.dataobj[:, :, int(index)]).reshape(shape[:2])
            affine[:3, 3] += affine[:3, 2] * int(index)
            meta["slice_index"] = int(index)
        else:
            if len(shape) == 2 and index not in (None, 0):
                raise ValueError(f"{path}: slice index {index} given for a 2D NIfTI image")
            arr = np.asanyarray(image.dataobj).reshape(shape)
        meta["affine"] = affine
        meta["original_affine"] = affine.copy()
        meta["space"] = "RAS"
        return _finish(arr, meta)


@functools.lru_cache(maxsize=16)
def _cached_npz_array(path: str, key: str, mtime_ns: int) -> np.ndarray:
    # npz members are zip entries that cannot be memory-mapped, so reading one image would
    # decompress the whole array every time; cache the last few arrays (keyed on mtime).
    with np.load(path, allow_pickle=False) as npz:
        if key not in npz.files:
            raise KeyError(key)
        return npz[key]


class NpzReader(_SuffixReader):
    """Read one image (or the whole array) from a NumPy ``.npz`` container such as MedMNIST.

    Arrays are cached per ``(path, key)`` (a small LRU) because npz members cannot be
    memory-mapped and datasets read one index at a time. Images are stored row-major
    (``(N, H, W)`` or ``(N, H, W, 3)``) and returned in MONAI order: ``(x, y)`` for one image,
    ``(x, y, N)`` for a whole array of grey images.

    Args:
        key: array name inside the container (e.g. ``"train_images"``); may be omitted when
            the file holds a single array.
        index: position along the first axis (``None`` = the whole array).

    Example:
        >>> reader = NpzReader(key="train_images", index=0)
        >>> arr, meta = reader.get_data(reader.read("pneumoniamnist.npz"))  # doctest: +SKIP
        >>> arr.shape  # doctest: +SKIP
        (28, 28)
    """

    suffixes = (".npz",)

    def __init__(self, key: str | None = None, index: int | None = None) -> None:
        super().__init__()
        self.key = key
        self.index = index

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Load the selected array(s) (cached).

        Args:
            data: an ``.npz`` file name or a sequence of them.
            kwargs: unused (kept for the ``ImageReader`` interface).

        Returns:
            ``(path, key, array)`` or a list of such triples.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the key is missing or ambiguous (message names file and known keys).
        """
        out = []
        for name in ensure_tuple(data):
            path = Path(name)
            _check_file(name, "npz")
            key = self.key
            if not key:
                with np.load(path, allow_pickle=False) as npz:
                    files = list(npz.files)
                if len(files) != 1:
                    raise ValueError(f"{name}: npz holds arrays {files}; give the array name in the 'key' column")
                key = files[0]
            try:
                arr = _cached_npz_array(str(path.resolve()), key, path.stat().st_mtime_ns)
            except KeyError:
                with np.load(path, allow_pickle=False) as npz:
                    files = list(npz.files)
                raise ValueError(f"{name}: npz has no array {key!r}; arrays present: {files}") from None
            out.append((str(name), key, arr))
        return out if len(out) > 1 else out[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Select ``index``, reduce colour to grey and convert to float32 in MONAI order.

        Args:
            img: output of :meth:`read`.

        Returns:
            ``(array, meta)``: ``(x, y)`` for one image, ``(x, y, N)`` for a whole array.

        Raises:
            ValueError: ``index`` out of range or an array that is not a grey/colour image stack (message names
                file and key).
        """
        items = img if isinstance(img, list) else [img]
        return _stack_results([self._get_one(*item) for item in items])

    def _get_one(self, name: str, key: str, arr: np.ndarray) -> tuple[np.ndarray, dict]:
        meta = _base_meta(name, "npz")
        meta["source_dtype"] = str(arr.dtype)
        colour = arr.ndim >= 3 and arr.shape[-1] in (3, 4)
        if self.index is not None:
            if not 0 <= int(self.index) < arr.shape[0]:
                raise ValueError(f"{name}: index {self.index} out of range for array {key!r} of shape {arr.shape}")
            arr = arr[int(self.index)]
            meta["slice_index"] = int(self.index)
            if arr.ndim == 3 and colour:
                arr, meta["color_conversion"] = _to_grey(arr, channel_axis=-1)
            if arr.ndim != 2:
                raise ValueError(f"{name}: array {key!r} item {self.index} has shape {arr.shape}; expected an image "
                                 "(H, W) or (H, W, 3)")
        elif arr.ndim == 4 and colour:
            arr, meta["color_conversion"] = _to_grey(arr, channel_axis=-1)
        elif arr.ndim not in (2, 3):
            raise ValueError(f"{name}: array {key!r} of shape {arr.shape} is not an image (H, W) or a stack (N, H, W)")
        return _finish(_to_monai_order(arr), meta)


class PILImageReader(_SuffixReader):
    """Read PNG / JPEG / TIFF / BMP files with PIL as one grey channel, in MONAI's ``(x, y)`` order.

    Like MONAI's ``PILReader(reverse_indexing=True)`` the array is ``(width, height)``. Palette images are
    expanded, ``1``/``CMYK`` converted, alpha dropped; RGB-encoded grey keeps one channel
    (``meta["color_conversion"] == "equal_channels"``) and true colour becomes luminance exactly as PIL's ``"L"``
    conversion (ITU-R 601-2, ``"luminance_itu_r_601"``). 16-bit and float TIFFs keep their values.

    Args:
        index: page of a multi-page TIFF (required for those; ``None`` or ``0`` for single images).

    Example:
        >>> reader = PILImageReader()
        >>> arr, meta = reader.get_data(reader.read("chest.png"))  # doctest: +SKIP
        >>> arr.shape == (meta["spatial_shape"][0], meta["spatial_shape"][1])  # (width, height)  # doctest: +SKIP
        True
    """

    suffixes = PIL_SUFFIXES

    def __init__(self, index: int | None = None) -> None:
        super().__init__()
        if not _HAS_PIL:
            raise ImportError("PILImageReader requires Pillow (pip install pillow).")
        self.index = index

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Open the file(s) and select the page (decoded in :meth:`get_data`).

        Args:
            data: a file name or a sequence of them.
            kwargs: extra arguments for ``PIL.Image.open``.

        Returns:
            a ``PIL.Image.Image`` or a list of them.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: a multi-page file without ``index``, a page out of range, or an ``index`` for a
                single image (message names the path).
        """
        out = []
        for name in ensure_tuple(data):
            _check_file(name, "image")
            try:
                im = Image.open(name, **kwargs)
            except (OSError, SyntaxError, ValueError, struct.error, EOFError) as err:
                raise ValueError(f"{name}: not a readable image, damaged or truncated ({type(err).__name__}: "
                                 f"{err}); replace the file or remove its manifest row.") from err
            n_frames = int(getattr(im, "n_frames", 1))
            if n_frames > 1:
                if self.index is None:
                    im.close()
                    raise ValueError(f"{name}: multi-page image with {n_frames} pages; give the page in the 'index' "
                                     "column")
                if not 0 <= int(self.index) < n_frames:
                    im.close()
                    raise ValueError(f"{name}: page index {self.index} out of range for {n_frames} pages")
                im.seek(int(self.index))
            elif self.index not in (None, 0):
                im.close()
                raise ValueError(f"{name}: index {self.index} given for a single 2D image")
            out.append(im)
        return out if len(out) > 1 else out[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Decode to one grey channel in ``(x, y)`` order (the PIL images are closed).

        Args:
            img: output of :meth:`read`.

        Returns:
            ``(array, meta)``: float32 ``(width, height)`` and :data:`META_KEYS`
            (``PhotometricInterpretation`` holds the PIL mode).
        """
        images = img if isinstance(img, (list, tuple)) else [img]
        results = []
        for im in images:
            try:
                results.append(self._get_one(im))
            except (OSError, SyntaxError, struct.error, EOFError, zlib.error) as err:  # PIL decodes on first access
                name = getattr(im, "filename", "") or "<PIL image>"
                raise ValueError(f"{name}: the image cannot be decoded, damaged or truncated ({type(err).__name__}: "
                                 f"{err}); replace the file or remove its manifest row.") from err
            finally:
                im.close()
        return _stack_results(results)

    def _get_one(self, im: Any) -> tuple[np.ndarray, dict]:
        meta = _base_meta(getattr(im, "filename", "") or "<PIL image>", "pil")
        if int(getattr(im, "n_frames", 1)) > 1:
            meta["slice_index"] = int(im.tell())
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode == "1":
            im = im.convert("L")
        elif mode == "CMYK":
            im = im.convert("RGB")
        arr = np.asarray(im)
        if arr.ndim == 3:
            channels = arr[..., : 3 if arr.shape[-1] >= 3 else 1]  # drop alpha (RGBA / LA)
            if channels.shape[-1] == 1:
                arr = channels[..., 0]
            elif all(np.array_equal(channels[..., 0], channels[..., c]) for c in (1, 2)):
                arr = channels[..., 0]
                meta["color_conversion"] = "equal_channels"
            else:
                # genuinely colour: luminance exactly as PIL's "L" conversion (ITU-R 601-2 luma)
                arr = np.asarray(Image.fromarray(np.ascontiguousarray(channels)).convert("L"))
                meta["color_conversion"] = "luminance_itu_r_601"
        meta["source_dtype"] = str(arr.dtype)
        meta["PhotometricInterpretation"] = mode
        return _finish(_to_monai_order(arr), meta)


class NpyVolumeReader(_SuffixReader):
    """Read an MRNet-style ``.npy`` volume ``(slices, H, W)`` (memory-mapped), whole or one slice.

    Returned in MONAI order: slice ``index`` as ``(x, y)`` = ``volume[index].T``, the whole volume as
    ``(x, y, slices)``.

    Args:
        index: slice along the first axis of the file (``None`` = the whole volume).

    Example:
        >>> reader = NpyVolumeReader(index=12)
        >>> arr, meta = reader.get_data(reader.read("0000.npy"))  # doctest: +SKIP
        >>> arr.shape  # doctest: +SKIP
        (256, 256)
    """

    suffixes = (".npy",)

    def __init__(self, index: int | None = None) -> None:
        super().__init__()
        self.index = index

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Memory-map the volume(s).

        Args:
            data: a file name or a sequence of them.
            kwargs: unused (kept for the ``ImageReader`` interface).

        Returns:
            ``(path, volume)`` or a list of such pairs.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the array is not 3D (message names the path and shape), or the file is not a numeric
                ``.npy`` (object dtype, damaged), naming it.
        """
        out = []
        for name in ensure_tuple(data):
            _check_file(name, "npy")
            try:
                vol = np.load(name, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:  # object dtype (a pickle), a damaged header, cut short
                raise ValueError(f"{name}: not a numeric .npy volume that can be read safely ({err}); save the "
                                 "volume as a numeric array (numpy.save of a float or integer array).") from err
            if vol.ndim != 3:
                raise ValueError(
                    f"{name}: .npy is read as an MRNet-style volume (slices, H, W), got an array of shape {vol.shape}"
                )
            out.append((str(name), vol))
        return out if len(out) > 1 else out[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Select slice ``index`` (or keep the volume) in MONAI order.

        Args:
            img: output of :meth:`read`.

        Returns:
            ``(array, meta)``: float32 ``(x, y)`` or ``(x, y, slices)``.

        Raises:
            ValueError: ``index`` out of range (names the path).
        """
        items = img if isinstance(img, list) else [img]
        return _stack_results([self._get_one(*item) for item in items])

    def _get_one(self, name: str, vol: np.ndarray) -> tuple[np.ndarray, dict]:
        meta = _base_meta(name, "npy")
        meta["source_dtype"] = str(vol.dtype)
        if self.index is not None:
            if not 0 <= int(self.index) < vol.shape[0]:
                raise ValueError(f"{name}: slice index {self.index} out of range for volume of shape {vol.shape}")
            arr = np.asarray(vol[int(self.index)])
            meta["slice_index"] = int(self.index)
        else:
            arr = np.asarray(vol)
        return _finish(_to_monai_order(arr), meta)


#: Reader classes in the order :func:`select_reader` tries them (DICOM first: it accepts suffix-less files).
IMAGE_READERS: tuple[type[ImageReader], ...] = (DicomReader, NiftiReader, PILImageReader, NpzReader, NpyVolumeReader)


def select_reader(path: str | os.PathLike, key: str | None = None, index: int | None = None) -> ImageReader | None:
    """The reader for ``path`` by suffix (and the ``DICM`` marker for suffix-less files).

    Args:
        path: image file.
        key: array name, passed to :class:`NpzReader` only.
        index: slice / frame / page / array position, passed to every reader.

    Returns:
        a configured :data:`IMAGE_READERS` instance, or ``None`` when no reader accepts the file.
    """
    for cls in IMAGE_READERS:
        reader = cls(key=key, index=index) if cls is NpzReader else cls(index=index)
        if reader.verify_suffix(str(path)):
            return reader
    return None


def replace_non_finite(
    arr: np.ndarray, where: str = "", nan_policy: str = "error", fill_value: float = 0.0
) -> tuple[np.ndarray, int]:
    """Check an image for NaN / +-Inf values; raise or replace them.

    Args:
        arr: float image.
        where: prefix of messages naming the manifest row and file (``"manifest m.csv row 3: a.nii.gz"``).
        nan_policy: ``"error"`` raises a ``ValueError``; ``"replace"`` writes ``fill_value`` into every
            non-finite pixel (NaN, +Inf and -Inf alike) and logs a warning with their number.
        fill_value: replacement value for ``"replace"``.

    Returns:
        ``(array, number of replaced values)`` (the input array and 0 when all values are finite).

    Raises:
        ValueError: non-finite values with ``nan_policy="error"`` (naming ``where`` and the counts), or an
            unknown policy.

    Example:
        >>> replace_non_finite(np.array([1.0, np.nan]), nan_policy="replace")[1]
        1
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    finite = np.isfinite(arr)
    if finite.all():
        return arr, 0
    bad = int(arr.size - np.count_nonzero(finite))
    counts = f"NaN {int(np.isnan(arr).sum())}, +Inf {int(np.isposinf(arr).sum())}, -Inf {int(np.isneginf(arr).sum())}"
    prefix = f"{where}: " if where else ""
    if nan_policy == "error":
        raise ValueError(
            f"{prefix}image has {bad} non-finite pixel value(s) of {arr.size} ({counts}); fix or drop the file, "
            "or load with nan_policy='replace' (and a fill_value) to replace them."
        )
    out = np.where(finite, arr, np.asarray(fill_value, dtype=arr.dtype))
    logger.warning("%sreplaced %d non-finite pixel value(s) of %d (%s) with %s.", prefix, bad, arr.size, counts,
                   fill_value)
    return out, bad


def _optional_int(value: Any, what: str) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if not as_float.is_integer():
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(as_float)


def read_image_row(
    row: Mapping[str, Any],
    image_key: str = "image",
    *,
    nan_policy: str = "error",
    fill_value: float = 0.0,
) -> tuple[np.ndarray, dict]:
    """Read the image a datalist row points at with the reader :func:`select_reader` picks by suffix.

    ``.dcm``/``.dicom``/suffix-less DICOM -> :class:`DicomReader`; ``.nii``/``.nii.gz`` -> :class:`NiftiReader`
    (3D volumes sliced along the last axis by ``index``, affine kept); ``.png``/``.jpg``/``.jpeg``/``.tif``/
    ``.tiff``/``.bmp`` -> :class:`PILImageReader`; ``.npz`` -> :class:`NpzReader` (``key``, ``index``);
    ``.npy`` -> :class:`NpyVolumeReader` (slice ``index``). Arrays are in MONAI's ``(x, y)`` order (see the
    module docstring). Non-finite pixels are handled by :func:`replace_non_finite`.

    Args:
        row: datalist dictionary with the file under ``image_key`` (or ``path``), optional
            ``key``/``index``, and ``manifest``/``row`` used in error messages.
        image_key: key holding the file path.
        nan_policy: ``"error"`` (default) or ``"replace"``, see :func:`replace_non_finite`.
        fill_value: replacement for non-finite pixels with ``nan_policy="replace"``.

    Returns:
        ``(array, meta)``: float32 ``(x, y)`` (or ``(x, y, slices)`` for a volume without index) and
        metadata with at least :data:`META_KEYS` (``non_finite_replaced``: number of replaced pixels).

    Raises:
        FileNotFoundError: the file does not exist (message names manifest row and path).
        ValueError: the path is a directory, unsupported suffix, undecodable file, bad ``key``/``index`` (an
            ``.npz`` row whose array is a stack of images needs ``index``), or NaN/Inf pixels with
            ``nan_policy="error"`` (message names manifest row and path).
    """
    ctx = row_context(row)
    path = row.get(image_key, row.get("path"))
    if path is None or (isinstance(path, str) and not path.strip()):
        raise ValueError(f"{ctx}no image path under {image_key!r} or 'path'")
    path = str(path)
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"{ctx}{path}: nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    index = _optional_int(row.get("index"), f"{ctx}{path}: 'index'")
    key = row.get("key")
    key = None if key is None or (isinstance(key, float) and np.isnan(key)) or str(key).strip() == "" else str(key)
    if Path(path).is_dir():
        raise ValueError(f"{ctx}{path}: is a directory, not an image file (a manifest row names one file)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{ctx}file not found: {path}")
    reader = select_reader(path, key=key, index=index)
    if reader is None:
        suffix = _suffix(path)
        raise ValueError(
            f"{ctx}{path}: unsupported file type {suffix or '(no suffix, not DICOM)'}; supported: "
            f"{', '.join(DICOM_SUFFIXES + NIFTI_SUFFIXES + PIL_SUFFIXES + ('.npz', '.npy'))}"
        )
    try:
        data = reader.read(path)
        if isinstance(reader, NpzReader) and index is None and data[2].ndim >= 3:
            raise ValueError(
                f"{path}: array {data[1]!r} of shape {data[2].shape} holds {data[2].shape[0]} images and the row has "
                "no 'index': the index column is required for .npz rows (the image's position in the array)"
            )
        arr, meta = reader.get_data(data)
    except (ValueError, FileNotFoundError) as e:
        msg = str(e) if path in str(e) else f"{path}: {e}"
        error_type = FileNotFoundError if isinstance(e, FileNotFoundError) else ValueError
        raise error_type(f"{ctx}{msg}") from e
    except Exception as e:  # PIL / nibabel raise their own error types on corrupt files
        raise ValueError(f"{ctx}{path}: cannot read image: {type(e).__name__}: {e}") from e
    arr, replaced = replace_non_finite(arr, f"{ctx}{path}", nan_policy, fill_value)
    meta["non_finite_replaced"] = replaced
    return arr, meta
