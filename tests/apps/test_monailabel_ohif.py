"""OHIF in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium) opens
the app's ``/ohif/`` while the app serves a private Orthanc over DICOMweb.

One JSRT radiograph, written as DX DICOM with a pseudonymous id, is in Orthanc. The browser sees the study in
OHIF's study list (read through the app's ``/proxy/dicom``), opens it in the basic viewer and draws it (the
viewport is not blank); segmentation is requested through the API (``/infer/segment`` with ``save_label``: the
viewer's MONAI Label mode lays a study out as a 3D volume in three viewports, which stay empty for a single
radiograph) and the DICOM SEG it stores in Orthanc shows up in the viewer's series panel and, loaded, draws its overlay over the radiograph.
Screenshots go to the test's ``tmp_path`` and, when ``MODAN_SCREENSHOT_DIR`` is set, there.

Skips with a reason when monailabel, Selenium, Chromium, chromedriver, Orthanc or the shared datasets are
missing, unless ``MODAN_REQUIRE_PACS=1`` (set by ``.ci/run``), where a missing program fails the test.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_PACS = os.environ.get("MODAN_REQUIRE_PACS", "") == "1"
MISSING = [what for what, there in (
    ("monailabel (python scripts/install_monailabel.py)", importlib.util.find_spec("monailabel")),
    ("selenium (pip install -e '.[test]')", importlib.util.find_spec("selenium")),
    ("/usr/bin/chromium (Debian package chromium)", os.access("/usr/bin/chromium", os.X_OK)),
    ("/usr/bin/chromedriver (Debian package chromium-driver)", os.access("/usr/bin/chromedriver", os.X_OK)),
) if not there]
if MISSING:
    if REQUIRE_PACS:
        raise ImportError(f"MODAN_REQUIRE_PACS=1 but not installed: {', '.join(MISSING)}")
    pytest.skip(f"not installed: {', '.join(MISSING)}", allow_module_level=True)

import pydicom  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402

SIZE = 256  # the stored radiograph's side
MODEL_SIZE = 64
PATIENT = "ANON-0001"


def save_screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    """The browser window as ``<tmp_path>/<name>.png`` (and in ``$MODAN_SCREENSHOT_DIR`` when set)."""
    out = tmp_path / f"{name}.png"
    driver.save_screenshot(str(out))
    if os.environ.get("MODAN_SCREENSHOT_DIR"):
        folder = Path(os.environ["MODAN_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, folder / out.name)
    return out


@pytest.fixture(scope="module")
def bench(load_script: Any) -> Any:
    """``scripts/bench_pacs.py``: the DICOM writer and the browser helpers."""
    return load_script("bench_pacs")


@pytest.fixture(scope="module")
def viewer_app(orthanc: Any, shared_datasets: Path, bench: Any, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Any]:
    """The app on ``orthanc`` (DICOMweb) with one JSRT radiograph; segment weights that label the heart everywhere
    (whatever the image, the label map is not empty)."""
    from modan_monai.apps.monailabel.lib.bundle import repository_bundle, write_initial_weights
    from modan_monai.apps.monailabel.process import LocalServer

    root = tmp_path_factory.mktemp("ohif_app")
    png = sorted((shared_datasets / "jsrt_scr" / "images_1024").glob("*.png"))[0]
    data = bench.radiograph_dicom(png, PATIENT, SIZE)
    assert orthanc.upload(data)["Status"] == "Success"
    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    weights = write_initial_weights(repository_bundle("segment"), root / "segment.pt", {"image_size": MODEL_SIZE})
    state = torch.load(weights, weights_only=True)
    state["segmentation_head.0.weight"].zero_()
    state["segmentation_head.0.bias"].copy_(torch.tensor([10.0, -10.0, -10.0]))
    torch.save(state, weights)
    conf = {"models": "segment", "segment_model": str(weights),
            "segment_config": json.dumps({"image_size": MODEL_SIZE})}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in orthanc.env().items():
            patch.setenv(key, value)
        with LocalServer(orthanc.dicomweb_url, conf, app_dir=root / "app", log_file=root / "server.log") as server:
            server.study, server.series = str(source.StudyInstanceUID), str(source.SeriesInstanceUID)
            yield server


@pytest.fixture()
def driver(bench: Any) -> Iterator[Any]:
    browser = bench.chromium_driver()
    try:
        yield browser
    finally:
        browser.quit()


def _click_if_there(driver: Any, css: str) -> None:
    for element in driver.find_elements("css selector", css):
        if element.is_displayed():
            element.click()


def _seg_thumbnail(driver: Any) -> Any:
    for element in driver.find_elements("css selector", "[data-cy^='study-browser-thumbnail']"):
        if "SEG" in element.text and "modan_monai" in element.text:
            return element
    return None


def _seg_series(orthanc: Any, study: str) -> list[dict]:
    return json.loads(orthanc.request("GET", f"/dicom-web/studies/{study}/series?Modality=SEG"))


def test_ohif_lists_opens_and_draws_the_study_and_its_seg(viewer_app: Any, orthanc: Any, driver: Any, bench: Any,
                                                           tmp_path: Path) -> None:
    url, study = viewer_app.url, viewer_app.study
    # the study list, read from Orthanc through the app's proxy
    driver.get(f"{url}/ohif/")
    row = bench.wait_for(lambda: driver.find_elements("css selector", f"[data-cy='studyRow-{study}']"), 60,
                         "the Orthanc study in OHIF's study list")[0]
    assert PATIENT in row.text and "DX" in row.text
    _click_if_there(driver, "[data-cy='confirm-and-hide-button']")  # the "investigational use" banner
    save_screenshot(driver, tmp_path, "ohif_study_list")
    # open it: the row's "Basic Viewer" mode
    row.click()
    bench.wait_for(lambda: driver.find_elements("css selector", f"[data-cy='mode-viewer-{study}']"), 20,
                   "the study's Basic Viewer button")[0].click()
    bench.wait_for(lambda: "/ohif/viewer" in driver.current_url, 20, "the viewer page")
    (pixels,) = bench.wait_for(lambda: bench.drawn(p := bench.viewport_pixels(driver)) and (p,), 60,
                               "the radiograph drawn in the viewport")
    assert bench.coloured_fraction(pixels) < 0.01  # a grey radiograph, no overlay yet
    save_screenshot(driver, tmp_path, "ohif_viewer")
    assert _seg_thumbnail(driver) is None

    # segmentation through the API: the app stores a DICOM SEG in the study
    assert _seg_series(orthanc, study) == []
    response = requests.post(f"{url}/infer/segment", params={"image": viewer_app.series, "output": "json"},
                             data={"params": json.dumps({"save_label": True})}, timeout=120)
    assert response.status_code == 200, response.text
    (seg,) = _seg_series(orthanc, study)
    seg_uid = seg["0020000E"]["Value"][0]

    # the viewer, opened again, lists the SEG series and draws it over the radiograph
    driver.get(f"{url}/ohif/viewer?StudyInstanceUIDs={study}")
    thumbnail = bench.wait_for(lambda: _seg_thumbnail(driver), 60, f"the SEG series {seg_uid} in the series panel")
    bench.wait_for(lambda: bench.drawn(bench.viewport_pixels(driver)), 60, "the radiograph drawn again")
    ActionChains(driver).double_click(thumbnail).perform()
    _click_if_there(driver, "[data-cy='confirm-and-hide-button']")
    # OHIF previews the SEG and asks whether to open it: yes
    bench.wait_for(lambda: driver.find_elements("xpath", "//button[normalize-space()='Yes']"), 30,
                   "OHIF's question whether to open the segmentation")[0].click()
    assert bench.wait_for(lambda: bench.coloured_fraction(bench.viewport_pixels(driver)) > 0.2, 60,
                          "the SEG overlay drawn in the viewport")
    shown = save_screenshot(driver, tmp_path, "ohif_seg")
    assert shown.stat().st_size > 10_000
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
              and "/proxy/dicom/" in e["message"]]
    assert not severe, severe  # every DICOMweb read through the proxy was answered
