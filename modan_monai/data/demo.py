"""The embedded demo corpus: small DICOM, NIfTI and PNG files written on first use.

The default of every pretraining bundle runs on this corpus, so that ``python -m monai.bundle run``
works on a fresh machine with no download. It holds seven (modality, anatomy) pairs in three file
formats, with synthetic phantom-like content that differs by anatomy and by modality:

=========  =========  ========================================================================
modality   anatomy    files
=========  =========  ========================================================================
CT         chest      DICOM, int16 + RescaleIntercept -1024, BodyPartExamined ``CHEST``
CT         head       DICOM, implicit VR, BodyPartExamined ``HEAD``
DX (XR)    chest      DICOM, uint16, MONOCHROME1 for half of the files, BodyPartExamined ``CHEST``
MR         knee       NIfTI volumes, one manifest row per slice
MR         head       NIfTI volumes, one manifest row per slice
CT         abdomen    NIfTI volumes in HU, one manifest row per slice
US         breast     8-bit PNG
=========  =========  ========================================================================

DICOM rows leave ``modality`` and ``anatomy`` empty in the manifest: their labels come from the
``Modality`` and ``BodyPartExamined`` header tags, as they would for a user's DICOM folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DEMO_VERSION", "default_demo_dir", "ensure_demo_corpus", "make_demo_corpus"]

DEMO_VERSION = "1"
_MANIFEST = "manifest.csv"


def default_demo_dir() -> Path:
    """``$MODAN_MONAI_DEMO_DIR`` if set, else ``~/.cache/modan_monai/demo_v{DEMO_VERSION}``."""
    env = os.environ.get("MODAN_MONAI_DEMO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "modan_monai" / f"demo_v{DEMO_VERSION}"


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    return np.meshgrid(ax, ax, indexing="ij")


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _phantom(anatomy: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Tissue map in [0, 1] (0 air, ~0.3 soft tissue, 1 bone) with random jitter of the shapes."""
    yy, xx = _grid(size)
    j = lambda s=0.05: float(rng.uniform(-s, s))  # noqa: E731 - small random jitter
    img = np.zeros((size, size), np.float32)
    if anatomy == "chest":
        img[_ellipse(yy, xx, j(), j(), 0.75 + j(), 0.9 + j())] = 0.35
        for side in (-1, 1):
            img[_ellipse(yy, xx, -0.05 + j(), side * 0.42 + j(), 0.55 + j(), 0.3 + j())] = 0.02
        img[_ellipse(yy, xx, 0.15 + j(), -0.1 + j(), 0.25, 0.2)] = 0.4  # heart
        img[_ellipse(yy, xx, j(), j(), 0.08, 0.08)] = 1.0  # spine / sternum
    elif anatomy == "head":
        outer = _ellipse(yy, xx, j(), j(), 0.85 + j(), 0.7 + j())
        inner = _ellipse(yy, xx, j(0.02), j(0.02), 0.75, 0.6)
        img[outer] = 1.0
        img[inner] = 0.3
        img[_ellipse(yy, xx, j(0.2), j(0.2), 0.12, 0.05)] = 0.15  # ventricle
    elif anatomy == "knee":
        img[_ellipse(yy, xx, j(), j(), 0.9, 0.55 + j())] = 0.3
        img[_ellipse(yy, xx, -0.45 + j(), j(), 0.4, 0.3)] = 1.0  # femur
        img[_ellipse(yy, xx, 0.5 + j(), j(), 0.35, 0.28)] = 1.0  # tibia
    elif anatomy == "abdomen":
        img[_ellipse(yy, xx, j(), j(), 0.7 + j(), 0.92)] = 0.3
        img[_ellipse(yy, xx, -0.1 + j(), -0.35 + j(), 0.3, 0.35)] = 0.45  # liver
        img[_ellipse(yy, xx, 0.3 + j(), 0.4 + j(), 0.12, 0.1)] = 0.4  # kidney
        img[_ellipse(yy, xx, 0.45, j(), 0.1, 0.1)] = 1.0  # vertebra
    elif anatomy == "breast":
        img[:] = 0.3
        img[_ellipse(yy, xx, j(0.3), j(0.3), 0.2 + j(), 0.3 + j())] = 0.05  # hypoechoic lesion
        img[yy < -0.7] = 0.6  # skin / fat layer
    else:
        raise ValueError(f"demo corpus has no phantom for anatomy '{anatomy}'")
    return img


def _to_modality(tissue: np.ndarray, modality: str, rng: np.random.Generator) -> np.ndarray:
    """Render a tissue map as the raw values of a modality (HU, MR signal, detector counts, echo)."""
    noise = rng.normal(0.0, 1.0, tissue.shape).astype(np.float32)
    if modality == "CT":  # HU: air -1000, soft tissue ~40, bone ~1000
        hu = np.interp(tissue, [0.0, 0.3, 0.45, 1.0], [-1000.0, 20.0, 60.0, 1000.0])
        return (hu + 15.0 * noise).astype(np.float32)
    if modality == "MR":  # bone dark, soft tissue bright
        sig = np.interp(tissue, [0.0, 0.3, 1.0], [0.0, 900.0, 150.0])
        return np.clip(sig + 30.0 * noise, 0, None).astype(np.float32)
    if modality == "DX":  # attenuation projected along columns, blurred: a radiograph-like image
        from scipy.ndimage import gaussian_filter

        att = gaussian_filter(tissue, 1.5) + 0.3 * gaussian_filter(np.cumsum(tissue, axis=0) / tissue.shape[0], 2)
        return np.clip(att * 3000.0 + 40.0 * noise, 0, 4095).astype(np.float32)
    if modality == "US":  # multiplicative speckle
        speckle = rng.rayleigh(1.0, tissue.shape).astype(np.float32)
        return np.clip(tissue * speckle * 200.0, 0, 255).astype(np.float32)
    raise ValueError(f"demo corpus has no renderer for modality '{modality}'")


def _write_dicom(path: Path, pixels: np.ndarray, modality: str, body_part: str, idx: int, explicit: bool) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = CTImageStorage if modality == "CT" else DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = f"DEMO-{modality}-{body_part}-{idx:03d}"
    ds.PatientName = "Demo^Phantom"
    ds.Modality = modality
    ds.BodyPartExamined = body_part
    ds.StudyDescription = f"modan_monai demo {modality} {body_part}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.BitsStored = 12 if modality != "CT" else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelSpacing = [0.7, 0.7]
    if modality == "CT":
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        stored = np.round(pixels + 1024).astype(np.int16)
    else:
        monochrome1 = idx % 2 == 1
        ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
        ds.PixelRepresentation = 0
        stored = np.round(4095 - pixels if monochrome1 else pixels).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def make_demo_corpus(root: str | Path, size: int = 64, per_pair: int = 8, seed: int = 0) -> Path:
    """Write the demo corpus under ``root`` and return the path of its manifest.

    Args:
        root: output folder (created).
        size: image side in pixels.
        per_pair: images per (modality, anatomy) pair; NIfTI pairs get ``per_pair // 4`` volumes of
            4 slices each, so every pair has ``per_pair`` manifest rows (``per_pair`` >= 4).
        seed: random seed of the phantoms and noise.

    Returns:
        Path of ``manifest.csv`` (columns of :data:`modan_monai.data.MANIFEST_COLUMNS`).
    """
    import nibabel as nib
    from PIL import Image

    if per_pair < 4:
        raise ValueError(f"per_pair must be >= 4, got {per_pair}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []

    def add(path: Path, modality: str, anatomy: str, case: str, index: int | None = None) -> None:
        rows.append(
            {"path": str(path.relative_to(root)), "key": "", "index": "" if index is None else index,
             "modality": modality, "anatomy": anatomy, "split": "train", "dataset": "demo", "case_id": case}
        )

    for modality, body_part in (("CT", "CHEST"), ("CT", "HEAD"), ("DX", "CHEST")):
        folder = root / "dicom" / f"{modality.lower()}_{body_part.lower()}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_pair):
            tissue = _phantom(body_part.lower(), size, rng)
            path = folder / f"{i:03d}.dcm"
            _write_dicom(path, _to_modality(tissue, modality, rng), modality, body_part, i, explicit=body_part == "CHEST")
            add(path, "", "", f"{modality}-{body_part}-{i}")  # labels from the DICOM header

    for modality, anatomy in (("MR", "knee"), ("MR", "head"), ("CT", "abdomen")):
        folder = root / "nifti" / f"{modality.lower()}_{anatomy}"
        folder.mkdir(parents=True, exist_ok=True)
        for v in range(per_pair // 4):
            vol = np.stack([_to_modality(_phantom(anatomy, size, rng), modality, rng) for _ in range(4)], axis=-1)
            path = folder / f"{v:03d}.nii.gz"
            nib.save(nib.Nifti1Image(vol.astype(np.float32), np.diag([0.8, 0.8, 3.0, 1.0])), path)
            for s in range(4):
                add(path, modality, anatomy, f"{modality}-{anatomy}-{v}", index=s)

    folder = root / "png" / "us_breast"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(per_pair):
        pixels = _to_modality(_phantom("breast", size, rng), "US", rng).astype(np.uint8)
        path = folder / f"{i:03d}.png"
        Image.fromarray(pixels, mode="L").save(path)
        add(path, "US", "breast", f"US-breast-{i}")

    manifest = root / _MANIFEST
    pd.DataFrame(rows).to_csv(manifest, index=False)
    (root / "VERSION").write_text(f"{DEMO_VERSION} size={size} per_pair={per_pair} seed={seed}\n")
    return manifest


def ensure_demo_corpus(root: str | Path | None = None, size: int = 64, per_pair: int = 8, seed: int = 0) -> str:
    """Return the demo manifest path, writing the corpus first if ``root`` does not hold it yet.

    Args:
        root: corpus folder; default :func:`default_demo_dir`.
        size: see :func:`make_demo_corpus`.
        per_pair: see :func:`make_demo_corpus`.
        seed: see :func:`make_demo_corpus`.
    """
    root = Path(root) if root is not None else default_demo_dir()
    stamp = f"{DEMO_VERSION} size={size} per_pair={per_pair} seed={seed}\n"
    version = root / "VERSION"
    if not (root / _MANIFEST).is_file() or not version.is_file() or version.read_text() != stamp:
        make_demo_corpus(root, size=size, per_pair=per_pair, seed=seed)
    return str(root / _MANIFEST)
