"""Fixtures shared by the app tests: the synthetic classification images of the classify bundle's task tests, and a
private Orthanc PACS (DICOMweb) on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CLASSIFY_TASK_TESTS = Path(__file__).resolve().parents[1] / "bundles" / "test_classify_tasks.py"


@pytest.fixture(scope="session")
def classify_task_rows() -> Callable[..., list[dict]]:
    """``classify_task_rows(root, {name: pattern}, per_class=8) -> manifest rows``: the synthetic PNGs (a bright
    ``left`` / ``right`` half, ``centre`` square, combined by spaces) and rows of
    ``tests/bundles/test_classify_tasks.py`` (``_rows``: split train / val / test as its ``SPLITS``, ``case_id``
    the file stem), reused rather than copied."""
    spec = importlib.util.spec_from_file_location("classify_task_tests", CLASSIFY_TASK_TESTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._rows


def require_pacs() -> bool:
    """``MODAN_REQUIRE_PACS=1`` (set by ``.ci/run``): a missing Orthanc / Chromium fails the PACS tests instead of
    skipping them."""
    return os.environ.get("MODAN_REQUIRE_PACS", "") == "1"


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A running Orthanc with the DICOMweb plugin (:class:`~modan_monai.apps.monailabel.lib.orthanc.OrthancServer`)
    in a temporary folder, on a free port of 127.0.0.1, with generated credentials; stopped by its pid at the end.

    It has ``url``, ``dicomweb_url``, ``username``, ``password``, ``env()`` (MONAI Label's credential variables),
    ``upload(dicom_bytes)`` (``POST /instances``), ``get_json(path)`` and ``request(...)``. Skips with a reason when
    Debian's ``orthanc`` / ``orthanc-dicomweb`` are not installed, unless ``MODAN_REQUIRE_PACS=1``.
    """
    from modan_monai.apps.monailabel.lib.orthanc import DICOMWEB_PLUGIN, OrthancServer

    missing = [what for what, there in (("Orthanc (Debian package orthanc)", shutil.which("Orthanc")),
                                        (f"{DICOMWEB_PLUGIN} (Debian package orthanc-dicomweb)",
                                         Path(DICOMWEB_PLUGIN).is_file())) if not there]
    if missing:
        message = f"not installed: {', '.join(missing)}"
        if require_pacs():
            pytest.fail(f"MODAN_REQUIRE_PACS=1 but {message}")
        pytest.skip(message)
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield server
    finally:
        server.stop()
