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
MR         knee       NIfTI volumes of 4 slices, one manifest row per slice
MR         head       NIfTI volumes of 4 slices, one manifest row per slice
CT         abdomen    NIfTI volumes of 4 slices in HU, one manifest row per slice
US         breast     8-bit PNG
=========  =========  ========================================================================

DICOM rows leave ``modality`` and ``anatomy`` empty in the manifest: their labels come from the
``Modality`` and ``BodyPartExamined`` header tags, as they would for a user's DICOM folder.

Every image (every volume for NIfTI) draws its acquisition settings at random, independently of its
class, as scans from different sites and protocols would: field of view (zoom 0.6-1.4), in-plane
rotation (±30°) and position, noise level (0.5-6 times the nominal one), blur, a linear intensity
gradient (coil, heel effect, depth gain) and an intensity response (a gamma of 0.5-2; CT: soft-tissue
enhancement). A randomly initialised encoder, whose pooled features mostly follow intensity and noise
statistics, therefore separates the classes only partly, and what pretraining adds can be measured
(the k-NN monitor of the pretraining bundle). A ``val`` split holds out the last quarter of the cases
of every pair (whole volumes for NIfTI) for that monitor; the pretraining bundle trains on ``train``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DEMO_VERSION", "default_demo_dir", "demo_corpus_settings", "ensure_demo_corpus", "make_demo_corpus"]

DEMO_VERSION = "2"
_MANIFEST = "manifest.csv"


def default_demo_dir() -> Path:
    """``$MODAN_MONAI_DEMO_DIR`` if set, else ``~/.cache/modan_monai/demo_v{DEMO_VERSION}``."""
    env = os.environ.get("MODAN_MONAI_DEMO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "modan_monai" / f"demo_v{DEMO_VERSION}"


#: ranges of the acquisition settings drawn per image (per volume for NIfTI), independently of its class
_ACQUISITION: dict[str, tuple[float, float]] = {
    "zoom": (0.6, 1.4),  # field of view: > 1 shows the anatomy larger (and cut off)
    "angle": (-30.0, 30.0),  # in-plane rotation, degrees
    "shift": (-0.2, 0.2),  # centre offset, fraction of the half field of view
    "noise": (0.5, 6.0),  # noise level relative to the modality's nominal one (log-uniform)
    "blur": (0.0, 1.5),  # Gaussian blur sigma in pixels of a 64 px image (reconstruction kernel / resolution)
    "gradient": (-0.4, 0.4),  # linear intensity gradient across the image (coil, heel effect, depth gain)
    "response": (0.5, 2.0),  # gamma of the intensity response (log-uniform): contrast, weighting, processing
}


def _acquisition(rng: np.random.Generator) -> dict[str, float]:
    """Random acquisition settings of one image: field of view, position, noise, sharpness, intensity response."""
    r = _ACQUISITION
    log_uniform = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # noqa: E731
    return {
        "zoom": float(rng.uniform(*r["zoom"])),
        "angle": float(np.deg2rad(rng.uniform(*r["angle"]))),
        "shift_y": float(rng.uniform(*r["shift"])),
        "shift_x": float(rng.uniform(*r["shift"])),
        "noise": log_uniform(*r["noise"]),
        "blur": float(rng.uniform(*r["blur"])),
        "gradient_y": float(rng.uniform(*r["gradient"])),
        "gradient_x": float(rng.uniform(*r["gradient"])),
        "response": log_uniform(*r["response"]),
    }


def _grid(size: int, acq: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Phantom coordinates of the pixels of a ``size`` x ``size`` image seen with the settings ``acq``."""
    ax = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    if acq is None:
        return yy, xx
    c, s = np.cos(acq["angle"]), np.sin(acq["angle"])
    y = (c * yy - s * xx) / acq["zoom"] - acq["shift_y"]
    x = (s * yy + c * xx) / acq["zoom"] - acq["shift_x"]
    return y.astype(np.float32), x.astype(np.float32)


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _phantom(anatomy: str, size: int, rng: np.random.Generator, acq: dict[str, float] | None = None) -> np.ndarray:
    """Tissue map in [0, 1] (0 air, ~0.3 soft tissue, 1 bone) with random jitter of the shapes."""
    yy, xx = _grid(size, acq)
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


def _to_modality(
    tissue: np.ndarray, modality: str, rng: np.random.Generator, acq: dict[str, float] | None = None
) -> np.ndarray:
    """Render a tissue map as the raw values of a modality (HU, MR signal, detector counts, echo).

    With acquisition settings ``acq`` (:func:`_acquisition`) the tissue map is blurred, passed through the
    intensity response ``tissue ** response`` (CT: contrast enhancement of soft tissue instead), scaled by a
    linear gradient and rendered with ``noise`` times the modality's nominal noise.
    """
    from scipy.ndimage import gaussian_filter

    acq = acq or {"noise": 1.0, "blur": 0.0, "gradient_y": 0.0, "gradient_x": 0.0, "response": 1.0}
    size = tissue.shape[0]
    if acq["blur"] > 0:
        tissue = gaussian_filter(tissue, acq["blur"] * size / 64.0)
    yy, xx = _grid(size)
    field = (1.0 + acq["gradient_y"] * yy + acq["gradient_x"] * xx).astype(np.float32)
    noise = acq["noise"] * rng.normal(0.0, 1.0, tissue.shape).astype(np.float32)
    if modality == "CT":  # HU: air -1000, soft tissue ~40 (up to ~200 with contrast), bone ~1000
        soft = 20.0 + 90.0 * (acq["response"] - 0.5)
        hu = np.interp(tissue, [0.0, 0.3, 0.45, 1.0], [-1000.0, soft, soft + 40.0, 1000.0])
        return (hu + 15.0 * noise).astype(np.float32)
    tissue = np.clip(tissue, 0.0, 1.0) ** acq["response"]
    if modality == "MR":  # bone dark, soft tissue bright
        sig = np.interp(tissue, [0.0, 0.3 ** acq["response"], 1.0], [0.0, 900.0, 150.0]) * field
        return np.clip(sig + 30.0 * noise, 0, None).astype(np.float32)
    if modality == "DX":  # attenuation projected along columns, blurred: a radiograph-like image
        att = gaussian_filter(tissue, 1.5) + 0.3 * gaussian_filter(np.cumsum(tissue, axis=0) / tissue.shape[0], 2)
        return np.clip(att * field * 3000.0 + 40.0 * noise, 0, 4095).astype(np.float32)
    if modality == "US":  # multiplicative speckle
        speckle = rng.rayleigh(1.0, tissue.shape).astype(np.float32)
        return np.clip(tissue * field * speckle * 200.0 + 5.0 * noise, 0, 255).astype(np.float32)
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


def _stamp(size: int, per_pair: int, seed: int, val_fraction: float) -> str:
    return f"{DEMO_VERSION} size={size} per_pair={per_pair} seed={seed} val_fraction={val_fraction}\n"


def demo_corpus_settings(manifest: str | Path) -> dict[str, float] | None:
    """The settings (``size``, ``per_pair``, ``seed``, ``val_fraction``) a demo corpus was written with, when
    ``manifest`` is the manifest of one (its folder's ``VERSION`` stamp is this version's); else ``None``.

    Example:
        >>> demo_corpus_settings("/no/such/manifest.csv") is None
        True
    """
    path = Path(manifest)
    stamp = path.parent / "VERSION"
    if path.name != _MANIFEST or not stamp.is_file():
        return None
    version, *fields = stamp.read_text().split()
    try:
        settings = {key: float(value) for key, value in (field.split("=", 1) for field in fields)}
    except ValueError:
        return None
    if version != DEMO_VERSION or set(settings) != {"size", "per_pair", "seed", "val_fraction"}:
        return None
    return {key: value if key == "val_fraction" else int(value) for key, value in settings.items()}


def _assign_val_split(rows: list[dict], val_fraction: float) -> None:
    """Move the last ``round(val_fraction * cases)`` cases of each pair to ``val`` (at least one when
    ``val_fraction`` > 0, always leaving one case in ``train``); the slices of a volume stay together."""
    cases_of: dict[str, list[str]] = {}
    for row in rows:
        pair, case = row["case_id"].rsplit("-", 1)[0], row["case_id"]
        if case not in cases_of.setdefault(pair, []):
            cases_of[pair].append(case)
    held_out: set[str] = set()
    for cases in cases_of.values():
        n_val = min(max(1, round(val_fraction * len(cases))), len(cases) - 1) if val_fraction > 0 else 0
        held_out.update(cases[len(cases) - n_val :] if n_val else [])
    for row in rows:
        if row["case_id"] in held_out:
            row["split"] = "val"


def make_demo_corpus(
    root: str | Path, size: int = 64, per_pair: int = 40, seed: int = 0, val_fraction: float = 0.25
) -> Path:
    """Write the demo corpus under ``root`` and return the path of its manifest.

    Args:
        root: output folder (created).
        size: image side in pixels.
        per_pair: images per (modality, anatomy) pair; NIfTI pairs get ``per_pair // 4`` volumes of
            4 slices each, so every pair has ``per_pair`` manifest rows when ``per_pair`` is a multiple of 4
            (``per_pair`` >= 4).
        seed: random seed of the phantoms, acquisition settings and noise.
        val_fraction: fraction of the cases (images; volumes for NIfTI) of each pair put in the ``val`` split:
            the last ``round(val_fraction * cases)`` ones, at least one when ``val_fraction`` > 0 and never all
            (a pair with a single volume stays in ``train``); the rest is ``train``.

    Returns:
        Path of ``manifest.csv`` (columns of :data:`modan_monai.data.MANIFEST_COLUMNS`).
    """
    import nibabel as nib
    from PIL import Image

    if per_pair < 4:
        raise ValueError(f"per_pair must be >= 4, got {per_pair}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
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
            acq = _acquisition(rng)
            tissue = _phantom(body_part.lower(), size, rng, acq)
            path = folder / f"{i:03d}.dcm"
            pixels = _to_modality(tissue, modality, rng, acq)
            _write_dicom(path, pixels, modality, body_part, i, explicit=body_part == "CHEST")
            add(path, "", "", f"{modality}-{body_part}-{i}")  # labels from the DICOM header

    for modality, anatomy in (("MR", "knee"), ("MR", "head"), ("CT", "abdomen")):
        folder = root / "nifti" / f"{modality.lower()}_{anatomy}"
        folder.mkdir(parents=True, exist_ok=True)
        for v in range(per_pair // 4):
            acq = _acquisition(rng)  # one acquisition per volume: its slices share field of view and noise
            vol = np.stack([_to_modality(_phantom(anatomy, size, rng, acq), modality, rng, acq) for _ in range(4)], -1)
            path = folder / f"{v:03d}.nii.gz"
            nib.save(nib.Nifti1Image(vol.astype(np.float32), np.diag([0.8, 0.8, 3.0, 1.0])), path)
            for s in range(4):
                add(path, modality, anatomy, f"{modality}-{anatomy}-{v}", index=s)

    folder = root / "png" / "us_breast"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(per_pair):
        acq = _acquisition(rng)
        pixels = _to_modality(_phantom("breast", size, rng, acq), "US", rng, acq).astype(np.uint8)
        path = folder / f"{i:03d}.png"
        Image.fromarray(pixels, mode="L").save(path)
        add(path, "US", "breast", f"US-breast-{i}")

    _assign_val_split(rows, val_fraction)
    manifest = root / _MANIFEST
    fd, tmp = tempfile.mkstemp(suffix=".csv", dir=root)  # write then rename: a concurrent reader never sees half
    os.close(fd)
    pd.DataFrame(rows).to_csv(tmp, index=False)
    os.replace(tmp, manifest)
    (root / "VERSION").write_text(_stamp(size, per_pair, seed, val_fraction))
    return manifest


def ensure_demo_corpus(
    root: str | Path | None = None, size: int = 64, per_pair: int = 40, seed: int = 0, val_fraction: float = 0.25
) -> str:
    """Return the demo manifest path, writing the corpus first if ``root`` does not hold it yet.

    Args:
        root: corpus folder; default :func:`default_demo_dir`.
        size: see :func:`make_demo_corpus`.
        per_pair: see :func:`make_demo_corpus`.
        seed: see :func:`make_demo_corpus`.
        val_fraction: see :func:`make_demo_corpus`.
    """
    root = Path(root) if root is not None else default_demo_dir()
    stamp = _stamp(size, per_pair, seed, val_fraction)
    version = root / "VERSION"
    if not (root / _MANIFEST).is_file() or not version.is_file() or version.read_text() != stamp:
        make_demo_corpus(root, size=size, per_pair=per_pair, seed=seed, val_fraction=val_fraction)
    return str(root / _MANIFEST)
