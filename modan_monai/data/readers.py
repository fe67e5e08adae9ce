"""Image readers for manifest rows: DICOM, NIfTI, PNG/JPEG/TIFF/BMP, MedMNIST ``.npz`` and MRNet ``.npy``.

Every reader returns a float32 array plus a metadata dictionary with the same set of keys
(:data:`META_KEYS`, empty strings where a format has no such field), so that images of different
formats can be collated into one batch (``monai.data.utils.collate_meta_tensor`` keeps only the
keys common to a batch and cannot collate ``None``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader, NibabelReader
from monai.utils import ensure_tuple, optional_import

pydicom, _HAS_PYDICOM = optional_import("pydicom")
Image, _HAS_PIL = optional_import("PIL.Image")

__all__ = [
    "DICOM_SUFFIXES",
    "META_KEYS",
    "NIFTI_SUFFIXES",
    "PIL_SUFFIXES",
    "DicomReader",
    "NpzReader",
    "is_dicom_file",
    "read_image_row",
    "row_context",
]

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
PIL_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

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
)

# ITU-R BT.601 luma weights, the same ones PIL uses for mode "L".
_LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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
    return meta


def _suffix(path: str | os.PathLike) -> str:
    name = str(path).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


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


class DicomReader(ImageReader):
    """Read DICOM files with pydicom, returning modality values (e.g. Hounsfield units for CT).

    Decoding goes through pydicom's pixel-data plugins, so compressed transfer syntaxes (JPEG
    baseline / lossless, JPEG-LS, JPEG 2000, RLE) work when the pylibjpeg plugins are installed.
    Steps: decode -> Modality LUT (``RescaleSlope``/``RescaleIntercept`` or a Modality LUT
    Sequence, :func:`pydicom.pixels.apply_modality_lut`) -> MONOCHROME1 inversion -> colour to grey.
    Multi-frame images are kept as ``(frames, H, W)`` unless ``index`` selects one frame.

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
            if not Path(name).is_file():
                raise FileNotFoundError(f"DICOM file not found: {name}")
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
            img: a ``pydicom.Dataset`` or a sequence of them (stacked on a new first axis).

        Returns:
            ``(array, meta)``: float32 array ``(H, W)`` or ``(frames, H, W)``; meta with
            :data:`META_KEYS` plus ``RescaleSlope``/``RescaleIntercept``/``NumberOfFrames``.

        Raises:
            ValueError: pixel data cannot be decoded (names path, transfer syntax UID and name),
                or ``index`` is out of range.
        """
        datasets = img if isinstance(img, (list, tuple)) else [img]
        arrays, metas = zip(*(self._get_one(ds) for ds in datasets))
        if len(arrays) == 1:
            return arrays[0], metas[0]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            names = [m["filename_or_obj"] for m in metas]
            raise ValueError(f"cannot stack DICOM files of different shapes {sorted(shapes)}: {names}")
        meta = dict(metas[0])
        stacked = np.stack(arrays)
        meta["spatial_shape"] = np.asarray(stacked.shape)
        return stacked, meta

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
        arr = np.asarray(arr, dtype=np.float32)
        if self.invert_monochrome1 and photometric == "MONOCHROME1":
            lo, hi = self._value_range(ds, arr, rescaled)
            arr = np.float32(lo + hi) - arr
        modality = str(ds.get("Modality", "") or "")
        meta = _base_meta(path, "dicom")
        meta.update(
            {
                "source_dtype": source_dtype,
                "spatial_shape": np.asarray(arr.shape),
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
        return arr, meta

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


@functools.lru_cache(maxsize=16)
def _cached_npz_array(path: str, key: str, mtime_ns: int) -> np.ndarray:
    # npz members are zip entries that cannot be memory-mapped, so reading one image would
    # decompress the whole array every time; cache the last few arrays (keyed on mtime).
    with np.load(path, allow_pickle=False) as npz:
        if key not in npz.files:
            raise KeyError(key)
        return npz[key]


class NpzReader(ImageReader):
    """Read one image (or the whole array) from a NumPy ``.npz`` container such as MedMNIST.

    Arrays are cached per ``(path, key)`` (a small LRU) because npz members cannot be
    memory-mapped and datasets read one index at a time.

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

    def __init__(self, key: str | None = None, index: int | None = None) -> None:
        super().__init__()
        self.key = key
        self.index = index

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Accept names ending in ``.npz``.

        Args:
            filename: a file name or a sequence of them.

        Returns:
            whether every name ends in ``.npz``.
        """
        return all(_suffix(n) == ".npz" for n in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Load the selected array(s) (cached).

        Args:
            data: an ``.npz`` file name or a sequence of them.
            kwargs: unused (kept for the ``ImageReader`` interface).

        Returns:
            ``(path, array)`` or a list of such pairs.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the key is missing or ambiguous (message names file and known keys).
        """
        out = []
        for name in ensure_tuple(data):
            path = Path(name)
            if not path.is_file():
                raise FileNotFoundError(f"npz file not found: {name}")
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
        """Select ``index`` and convert to float32.

        Args:
            img: output of :meth:`read`.

        Returns:
            ``(array, meta)``; colour images ``(H, W, 3)`` are reduced to grey.

        Raises:
            ValueError: ``index`` out of range (message names file and key).
        """
        items = img if isinstance(img, list) else [img]
        results = [self._get_one(*item) for item in items]
        if len(results) == 1:
            return results[0]
        arrays, metas = zip(*results)
        meta = dict(metas[0])
        stacked = np.stack(arrays)
        meta["spatial_shape"] = np.asarray(stacked.shape)
        return stacked, meta

    def _get_one(self, name: str, key: str, arr: np.ndarray) -> tuple[np.ndarray, dict]:
        meta = _base_meta(name, "npz")
        meta["source_dtype"] = str(arr.dtype)
        if self.index is not None:
            if not 0 <= int(self.index) < arr.shape[0]:
                raise ValueError(f"{name}: index {self.index} out of range for array {key!r} of shape {arr.shape}")
            arr = arr[int(self.index)]
            meta["slice_index"] = int(self.index)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and self.index is not None:
            arr, meta["color_conversion"] = _to_grey(arr, channel_axis=-1)
        out = np.asarray(arr, dtype=np.float32)
        meta["spatial_shape"] = np.asarray(out.shape)
        return out, meta


def _read_pil(path: str, index: int | None) -> tuple[np.ndarray, dict]:
    meta = _base_meta(path, "pil")
    with Image.open(path) as im:
        n_frames = int(getattr(im, "n_frames", 1))
        if n_frames > 1:
            if index is None:
                raise ValueError(f"{path}: multi-page image with {n_frames} pages; give the page in the 'index' column")
            if not 0 <= index < n_frames:
                raise ValueError(f"{path}: page index {index} out of range for {n_frames} pages")
            im.seek(index)
            meta["slice_index"] = int(index)
        elif index not in (None, 0):
            raise ValueError(f"{path}: index {index} given for a single 2D image")
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
    out = np.asarray(arr, dtype=np.float32)
    meta["spatial_shape"] = np.asarray(out.shape)
    return out, meta


def _read_nifti(path: str, index: int | None) -> tuple[np.ndarray, dict]:
    reader = NibabelReader(squeeze_non_spatial_dims=True)
    img = reader.read(path)
    arr, nmeta = reader.get_data(img)
    source_dtype = str(img.get_data_dtype()) if hasattr(img, "get_data_dtype") else str(arr.dtype)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"{path}: NIfTI image of shape {arr.shape}; only 2D images and 3D volumes are supported")
    meta = _base_meta(path, "nifti")
    meta["source_dtype"] = source_dtype
    if arr.ndim == 3 and index is not None:
        if not 0 <= index < arr.shape[-1]:
            raise ValueError(f"{path}: slice index {index} out of range for volume of shape {arr.shape}")
        # MONAI keeps NIfTI voxel order (x, y, z): a slice is arr[..., z] with axes (x, y).
        arr = arr[..., index]
        meta["slice_index"] = int(index)
    elif arr.ndim == 2 and index not in (None, 0):
        raise ValueError(f"{path}: slice index {index} given for a 2D NIfTI image")
    out = np.asarray(arr, dtype=np.float32)
    meta["spatial_shape"] = np.asarray(out.shape)
    return out, meta


def _read_npy_volume(path: str, index: int | None) -> tuple[np.ndarray, dict]:
    vol = np.load(path, mmap_mode="r", allow_pickle=False)
    if vol.ndim != 3:
        raise ValueError(
            f"{path}: .npy is read as an MRNet-style volume (slices, H, W), got an array of shape {vol.shape}"
        )
    meta = _base_meta(path, "npy")
    meta["source_dtype"] = str(vol.dtype)
    if index is not None:
        if not 0 <= index < vol.shape[0]:
            raise ValueError(f"{path}: slice index {index} out of range for volume of shape {vol.shape}")
        arr = np.asarray(vol[index], dtype=np.float32)
        meta["slice_index"] = int(index)
    else:
        arr = np.asarray(vol, dtype=np.float32)
    meta["spatial_shape"] = np.asarray(arr.shape)
    return arr, meta


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


def read_image_row(row: Mapping[str, Any], image_key: str = "image") -> tuple[np.ndarray, dict]:
    """Read the image a datalist row points at, dispatching on the file suffix.

    ``.dcm``/``.dicom``/suffix-less DICOM -> :class:`DicomReader`; ``.nii``/``.nii.gz`` ->
    MONAI ``NibabelReader`` (3D volumes sliced along the last axis by ``index``);
    ``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff``/``.bmp`` -> PIL (RGB-encoded grey -> one
    channel, true colour -> ITU-R 601 luminance noted in ``meta["color_conversion"]``);
    ``.npz`` -> :class:`NpzReader` (``key``, ``index``); ``.npy`` -> MRNet volume
    ``(slices, H, W)``, slice ``index`` (memory-mapped).

    Args:
        row: datalist dictionary with the file under ``image_key`` (or ``path``), optional
            ``key``/``index``, and ``manifest``/``row`` used in error messages.
        image_key: key holding the file path.

    Returns:
        ``(array, meta)``: float32 ``(H, W)`` (or ``(D, H, W)`` for a volume without index) and
        metadata with at least :data:`META_KEYS`.

    Raises:
        FileNotFoundError: the file does not exist (message names manifest row and path).
        ValueError: unsupported suffix, undecodable file or bad ``key``/``index`` (message names
            manifest row and path).
    """
    ctx = row_context(row)
    path = row.get(image_key, row.get("path"))
    if path is None or (isinstance(path, str) and not path.strip()):
        raise ValueError(f"{ctx}no image path under {image_key!r} or 'path'")
    path = str(path)
    index = _optional_int(row.get("index"), f"{ctx}{path}: 'index'")
    key = row.get("key")
    key = None if key is None or (isinstance(key, float) and np.isnan(key)) or str(key).strip() == "" else str(key)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{ctx}file not found: {path}")
    suffix = _suffix(path)
    try:
        if suffix in DICOM_SUFFIXES or (suffix == "" and is_dicom_file(path)):
            reader = DicomReader(index=index)
            return reader.get_data(reader.read(path))
        if suffix in NIFTI_SUFFIXES:
            return _read_nifti(path, index)
        if suffix in PIL_SUFFIXES:
            return _read_pil(path, index)
        if suffix == ".npz":
            npz_reader = NpzReader(key=key, index=index)
            return npz_reader.get_data(npz_reader.read(path))
        if suffix == ".npy":
            return _read_npy_volume(path, index)
    except (ValueError, FileNotFoundError) as e:
        msg = str(e) if path in str(e) else f"{path}: {e}"
        error_type = FileNotFoundError if isinstance(e, FileNotFoundError) else ValueError
        raise error_type(f"{ctx}{msg}") from e
    except Exception as e:  # PIL / nibabel raise their own error types on corrupt files
        raise ValueError(f"{ctx}{path}: cannot read image: {type(e).__name__}: {e}") from e
    raise ValueError(
        f"{ctx}{path}: unsupported file type {suffix or '(no suffix, not DICOM)'}; supported: "
        f"{', '.join(DICOM_SUFFIXES + NIFTI_SUFFIXES + PIL_SUFFIXES + ('.npz', '.npy'))}"
    )
