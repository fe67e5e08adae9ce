"""From a MONAI Label request to the datalist rows the bundles' preprocessing reads.

A request names one file (a datastore image or an upload kept under its suffix). 2D files (PNG, JPEG, TIFF,
single-frame DICOM, a 2D NIfTI) are one row. A NIfTI volume is one row per slice (``index``), the rows the
bundles were trained on; the request parameter ``slice`` selects one of them. ``modality`` (a request parameter,
or the app's ``--conf modality``) picks the intensity normalisation as a manifest's modality column does.
Nothing here imports monailabel.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from modan_monai.apps.monailabel.lib.bundle import ServingError

__all__ = ["VOLUME_SUFFIXES", "request_rows", "volume_affine"]

VOLUME_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(path: str) -> bool:
    return path.lower().endswith(VOLUME_SUFFIXES)


def volume_affine(path: str) -> np.ndarray:
    """The NIfTI header's affine (RAS, as MONAI's readers report it), read without the pixel data."""
    return np.asarray(nib.load(path).affine, dtype=np.float64)


def _slice_param(value: Any, image: str, num_slices: int | None) -> int | None:
    if value is None or value == "" or value == -1:
        return None
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise ServingError(422, f"image {image}: parameter slice={value!r} is not an integer") from None
    if num_slices is None:
        raise ServingError(422, f"image {image}: parameter slice={index} applies to NIfTI volumes; this is a 2D image")
    if not 0 <= index < num_slices:
        raise ServingError(422, f"image {image}: slice {index} is out of range, the volume has {num_slices} slices")
    return index


def request_rows(request: Mapping[str, Any], default_modality: str = "") -> tuple[list[dict[str, Any]], bool]:
    """Datalist rows for a request, and whether the result is a whole volume.

    Args:
        request: the task's request (``image``: a file path; optional ``slice``, ``modality``).
        default_modality: modality when the request names none (empty: chosen from the file, see
            :class:`modan_monai.transforms.NormalizeByModalityd`).

    Returns:
        ``(rows, whole_volume)``: one row per slice of a NIfTI volume without ``slice`` (``whole_volume`` True),
        else a single row.

    Raises:
        ServingError: (422) the file does not exist, is not a file, is a NIfTI with more than 3 dimensions, or
            ``slice`` is not a valid index; the message names the image.
    """
    image = request.get("image")
    if not isinstance(image, str) or not image:
        raise ServingError(422, f"request has no image file (image={image!r})")
    if not Path(image).is_file():
        raise ServingError(422, f"image {image}: file not found")
    modality = str(request.get("modality") or default_modality or "")
    base = {"image": image, "filename": image, "modality": modality}
    num_slices = None
    if _is_nifti(image):
        try:
            shape = nib.load(image).shape
        except Exception as err:  # noqa: BLE001 - nibabel raises several types for a damaged header
            raise ServingError(422, f"image {image}: cannot read the NIfTI header ({type(err).__name__}: {err})") from err
        if len(shape) > 3:
            raise ServingError(422, f"image {image}: a {len(shape)}D NIfTI {tuple(shape)}; 2D images and 3D volumes "
                                    "are served")
        num_slices = int(shape[2]) if len(shape) == 3 else None
    index = _slice_param(request.get("slice"), image, num_slices)
    if index is not None:
        return [{**base, "index": index}], False
    if num_slices is None:
        return [base], False
    if num_slices == 1:
        return [{**base, "index": 0}], False
    return [{**base, "index": k} for k in range(num_slices)], True
