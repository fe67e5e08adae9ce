"""Figures of the PACS route: the app serving an Orthanc over DICOMweb against the same app on a local folder.

Usage::

    python scripts/bench_pacs.py [--images 4] [--size 256] [--repeats 5] [--epochs 1] [--no-browser] [--out DIR]

Starts a private Orthanc (:class:`~modan_monai.apps.monailabel.lib.orthanc.OrthancServer`) holding ``--images``
JSRT radiographs (``$MODAN_SHARED_DATASETS/jsrt_scr/images_1024``, resized to ``--size`` px) written as
single-frame DX DICOM with pseudonymous ids (:func:`radiograph_dicom`), and the app twice: on that Orthanc
(``--studies http://127.0.0.1:<port>/dicom-web``) and on a folder of the same images as PNG. Models are the
bundles' ``network_def`` with random weights at their default sizes (latency does not depend on the weights).
Prints, with the machine's load (CPUs, load average before and after):

- per-request latency of ``/infer/segment`` and ``/infer/classify`` on the same image through each datastore: the
  first request apart (DICOMweb: the series' download and conversion; both: the weights' loading), then the
  median and range of ``--repeats``; segment also with ``save_label`` (a DICOM SEG stored in Orthanc / a label
  file in the folder);
- one annotate -> train -> re-infer round through DICOMweb: each image's SCR heart / lung masks stored as its
  ``final`` label (``PUT /datastore/label``: a SEG in Orthanc), ``/train/segment`` for ``--epochs`` epochs
  (``run_sync``), and the next ``/infer/segment`` (which must answer from the new weights);
- the time headless Chromium's OHIF (the app's ``/ohif/``) takes to draw the study: navigation to a drawn,
  non-blank viewport, the first time and the median of three reloads (``--no-browser`` skips it).

The browser helpers (:func:`chromium_driver`, :func:`viewport_pixels`, :func:`drawn`, :func:`coloured_fraction`,
:func:`wait_for`) are those of ``tests/apps/test_monailabel_ohif.py``. Debian's ``chromium`` and ``chromedriver``
are used as installed: nothing is downloaded (the driver's path is given, so Selenium Manager does not run) and
the browser resolves no host name but ``127.0.0.1``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["BROWSER_FLAGS", "CHROMEDRIVER", "CHROMIUM", "chromium_driver", "coloured_fraction", "drawn", "main",
           "radiograph_dicom", "viewport_pixels", "wait_for"]

#: Debian's ``chromium`` and ``chromium-driver``
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: headless, no GPU, and no host name resolved but 127.0.0.1 (OHIF's page asks fonts.googleapis.com for a font)
BROWSER_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
#: the SCR structures the segment bundle serves by default, in its label order (label value = index + 1)
STRUCTURES = ("heart", "left_lung", "right_lung")


def radiograph_dicom(png: str | Path, patient_id: str, size: int = 256, study_uid: str | None = None) -> bytes:
    """A single-frame DX (for presentation) DICOM file of a grey image, as bytes.

    The image is resized to ``size`` x ``size`` and stored as 12-bit ``MONOCHROME2``. ``patient_id`` (a
    pseudonym such as ``ANON-0001``) is the PatientID and PatientName; nothing else identifies anyone (no birth
    date, sex, institution or device data). The plane geometry (``ImagePositionPatient`` 0, an identity
    ``ImageOrientationPatient``, ``PixelSpacing``, a new ``FrameOfReferenceUID``) lets a DICOM SEG reference it.

    Args:
        png: the image (any file PIL reads; colour is converted to grey).
        patient_id: the pseudonymous patient id.
        size: the side of the stored image in pixels.
        study_uid: the StudyInstanceUID (default: a new one).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(Image.open(png).convert("L").resize((size, size), Image.BILINEAR)).astype(np.uint16) * 16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID = ds.PatientName = patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality, ds.StudyDescription, ds.StudyDate = "DX", "Chest PA", "20260101"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [1.4, 1.4]
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def chromium_driver(width: int = 1280, height: int = 800) -> Any:
    """Headless Debian Chromium driven by Debian's chromedriver (Selenium; paths given, nothing downloaded).

    Raises:
        FileNotFoundError: ``chromium`` or ``chromedriver`` is not installed (naming the path and the package).
    """
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{path} not found (Debian: apt-get install {package})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*BROWSER_FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def viewport_pixels(driver: Any) -> np.ndarray | None:
    """The first OHIF viewport's canvas as the browser shows it (RGB, from the element's screenshot), or ``None``
    while there is none."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException

    try:
        canvas = driver.find_element("css selector", "canvas.cornerstone-canvas")
        if canvas.size["width"] < 2 or canvas.size["height"] < 2:
            return None
        return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"))
    except (NoSuchElementException, StaleElementReferenceException, WebDriverException):
        return None


def drawn(pixels: np.ndarray | None) -> bool:
    """Whether an image is drawn: at least 10 % of the pixels are lit (grey level > 40) and they vary (standard
    deviation > 10); an empty viewport is black."""
    if pixels is None:
        return False
    grey = pixels.mean(axis=-1)
    return bool((grey > 40).mean() > 0.1 and grey.std() > 10)


def coloured_fraction(pixels: np.ndarray | None) -> float:
    """The fraction of pixels whose channels differ by more than 30 levels: a segmentation overlay (a radiograph is
    drawn grey)."""
    if pixels is None:
        return 0.0
    channels = pixels.astype(np.int16)
    return float((channels.max(axis=-1) - channels.min(axis=-1) > 30).mean())


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """``check()``'s first true value, polled every ``every`` seconds.

    Raises:
        TimeoutError: nothing true within ``timeout`` seconds (naming ``what``).
    """
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(every)


def _median(times: list[float]) -> str:
    return (f"median {statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}, max "
            f"{max(times) * 1000:.0f}, n={len(times)})")


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) / {five:.2f} (5 min)"


def _shared() -> Path:
    env = os.environ.get("MODAN_SHARED_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _label_nifti(shared: Path, name: str, size: int, out: Path) -> Path:
    """The SCR masks of JSRT image ``name`` as one label map (``STRUCTURES`` order, later wins), ``size`` px, as a
    one-slice NIfTI in the series' (columns, rows, instances) order."""
    import nibabel as nib

    label = np.zeros((size, size), np.uint8)
    for value, structure in enumerate(STRUCTURES, start=1):
        mask = Image.open(shared / "jsrt_scr" / "masks_1024" / structure / name).convert("L")
        label[np.asarray(mask.resize((size, size), Image.NEAREST)) > 127] = value
    nib.save(nib.Nifti1Image(label.T[:, :, None], np.eye(4)), str(out))
    return out


def _infer_case(url: str, model: str, image: str, repeats: int, save_label: bool) -> str:
    import requests

    def call() -> requests.Response:
        return requests.post(f"{url}/infer/{model}", params={"image": image, "output": "json"},
                             data={"params": json.dumps({"save_label": save_label})}, timeout=600)

    first, response = _timed(call)
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    times = [_timed(call)[0] for _ in range(repeats)]
    return f"first {first * 1000:.0f} ms, then {_median(times)}"


def _latencies(local: str, app: str, series: str, repeats: int, pacs: Any) -> None:
    print("\nper-request latency, same image (first request apart):")
    for model, save in (("segment", False), ("segment", True), ("classify", False)):
        what = f"{model}{' + save_label' if save else ''}"
        print(f"  {what:24s} local folder: {_infer_case(local, model, 'img0', repeats, save)}")
        print(f"  {what:24s} DICOMweb:     {_infer_case(app, model, series, repeats, save)}")
    segs = json.loads(pacs.request("GET", "/dicom-web/series?Modality=SEG"))
    print(f"  (DICOM SEG series stored in Orthanc by the save_label requests: {len(segs)}; a label map without "
          "foreground stores none)")


def _training_round(app: str, shared: Path, pngs: list[Path], series: list[str], size: int, epochs: int,
                    root: Path) -> None:
    import requests

    print(f"\nannotate -> train -> re-infer through DICOMweb ({len(pngs)} images, {epochs} epoch(s)):")
    before = requests.post(f"{app}/infer/segment", params={"image": series[0], "output": "json"},
                           timeout=600).json().get("model_mtime_ns")
    start = time.perf_counter()
    for i, png in enumerate(pngs):
        label = _label_nifti(shared, png.name, size, root / f"label{i}.nii.gz")
        with open(label, "rb") as f:
            response = requests.put(f"{app}/datastore/label", params={"image": series[i], "tag": "final"},
                                    files={"label": (label.name, f)}, timeout=300)
        if response.status_code != 200:
            print(f"  annotate: PUT /datastore/label {i}: HTTP {response.status_code}: {response.text[:300]}")
            return
    print(f"  annotate ({len(pngs)} labels stored as DICOM SEG): {time.perf_counter() - start:.1f} s")
    seconds, response = _timed(lambda: requests.post(f"{app}/train/segment", params={"run_sync": "true"},
                                                     json={"epochs": epochs}, timeout=3600))
    if response.status_code != 200:
        print(f"  train: HTTP {response.status_code}: {response.text[:300]}")
        return
    print(f"  train: {seconds:.1f} s (val_mean_dice {response.json().get('val_mean_dice')})")
    seconds, response = _timed(lambda: requests.post(f"{app}/infer/segment",
                                                     params={"image": series[0], "output": "json"}, timeout=600))
    if response.ok:
        renewed = response.json().get("model_mtime_ns") != before
        print(f"  re-infer: {seconds * 1000:.0f} ms, answered by the new weights: {renewed}")
    else:
        print(f"  re-infer: HTTP {response.status_code}: {response.text[:300]}")


def _viewer_time(app: str, study: str) -> None:
    print("\nOHIF in headless Chromium, navigation to a drawn study:")
    driver = chromium_driver()
    try:
        def draw() -> float:
            start = time.perf_counter()
            driver.get(f"{app}/ohif/viewer?StudyInstanceUIDs={study}")
            wait_for(lambda: drawn(viewport_pixels(driver)), 120, "the study drawn")
            return time.perf_counter() - start

        first = draw()
        print(f"  first (new browser): {first * 1000:.0f} ms; reloads: {_median([draw() for _ in range(3)])}")
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="JSRT images in the PACS (>= 2 for the training round)")
    parser.add_argument("--size", type=int, default=256, help="side of the stored images in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--no-browser", action="store_true", help="skip the viewer timing")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    import pydicom

    from modan_monai.apps.monailabel.lib.bundle import repository_bundle, write_initial_weights
    from modan_monai.apps.monailabel.lib.orthanc import OrthancServer
    from modan_monai.apps.monailabel.process import LocalServer

    shared = _shared()
    pngs = sorted((shared / "jsrt_scr" / "images_1024").glob("*.png"))[:max(args.images, 1)]
    if not pngs:
        sys.exit(f"no JSRT images under {shared / 'jsrt_scr' / 'images_1024'} (set MODAN_SHARED_DATASETS)")
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_pacs_"))
    folder = root / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"load at start: {_load()}; work folder {root}")
    conf = {f"{name}_model": write_initial_weights(repository_bundle(name), root / f"{name}.pt")
            for name in ("segment", "classify")}
    with OrthancServer(root / "orthanc") as pacs:
        series: list[str] = []
        studies: list[str] = []
        for i, png in enumerate(pngs):
            data = radiograph_dicom(png, f"ANON-{i + 1:04d}", args.size)
            answer = pacs.upload(data)
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            series.append(str(ds.SeriesInstanceUID))
            studies.append(str(ds.StudyInstanceUID))
            Image.open(png).convert("L").resize((args.size, args.size), Image.BILINEAR).save(folder / f"img{i}.png")
            if answer.get("Status") != "Success":
                raise RuntimeError(f"Orthanc did not store {png.name} as DICOM: {answer}")
        print(f"{len(pngs)} JSRT radiographs, {args.size} x {args.size} px, in Orthanc and as PNG")
        saved = {key: os.environ.get(key) for key in pacs.env()}
        os.environ.update(pacs.env())
        try:
            with LocalServer(folder, conf, app_dir=root / "app_local", log_file=root / "local.log") as local, \
                    LocalServer(pacs.dicomweb_url, conf, app_dir=root / "app_pacs", log_file=root / "pacs.log") as app:
                print(f"server start: local folder {local.start_seconds:.1f} s, DICOMweb {app.start_seconds:.1f} s")
                _latencies(local.url, app.url, series[0], args.repeats, pacs)
                _training_round(app.url, shared, pngs, series, args.size, args.epochs, root)
                if not args.no_browser:
                    _viewer_time(app.url, studies[0])
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    print(f"\nload at end: {_load()}")


if __name__ == "__main__":
    main()
