"""``scripts/bench_pacs.py`` without Orthanc or a browser: the DICOM it writes and the pixel checks the OHIF test
relies on (the script's run itself is a benchmark, not a test: ``tests/apps/test_monailabel_ohif.py`` drives its
browser helpers)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def bench(load_script: Any) -> Any:
    return load_script("bench_pacs")


def test_radiograph_dicom_holds_the_image_the_pseudonym_and_a_plane(bench: Any, tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 250, 2, dtype=np.uint8), (100, 1))[:, :100]  # 100 x 100, a left-right ramp
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "cxr.png")  # RGB-encoded grey
    ds = pydicom.dcmread(io.BytesIO(bench.radiograph_dicom(tmp_path / "cxr.png", "ANON-0042", size=50,
                                                           study_uid="1.2.3.4")))
    assert (ds.Rows, ds.Columns, ds.Modality, ds.StudyInstanceUID) == (50, 50, "DX", "1.2.3.4")
    assert ds.PatientID == str(ds.PatientName) == "ANON-0042"
    for keyword in ("PatientBirthDate", "PatientSex", "PatientAge", "InstitutionName", "ReferringPhysicianName",
                    "OperatorsName", "AccessionNumber", "DeviceSerialNumber", "StationName", "OtherPatientIDs"):
        assert keyword not in ds, keyword
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in ds.ImagePositionPatient] == [0, 0, 0] and "FrameOfReferenceUID" in ds
    pixels = ds.pixel_array
    assert pixels.dtype == np.uint16 and pixels.max() <= 4095
    expected = np.asarray(Image.fromarray(grey).resize((50, 50), Image.BILINEAR)).astype(np.uint16) * 16
    np.testing.assert_array_equal(pixels, expected)


def test_drawn_and_coloured_fraction(bench: Any) -> None:
    black = np.zeros((40, 40, 3), np.uint8)
    flat = np.full((40, 40, 3), 128, np.uint8)
    ramp = np.repeat(np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (40, 1))[..., None], 3, axis=-1)
    assert not bench.drawn(None) and not bench.drawn(black) and not bench.drawn(flat)
    assert bench.drawn(ramp)
    assert bench.coloured_fraction(ramp) == 0.0 and bench.coloured_fraction(None) == 0.0
    tinted = ramp.copy()
    tinted[:10, :, 0] = 255  # a red overlay over the top quarter
    tinted[:10, :, 1:] //= 2
    assert bench.coloured_fraction(tinted) == pytest.approx(0.25, abs=0.03)


def test_wait_for_names_what_it_waited_for(bench: Any) -> None:
    calls = iter([None, [], "found"])
    assert bench.wait_for(lambda: next(calls), 5, "a value", every=0.01) == "found"
    with pytest.raises(TimeoutError, match="the study drawn: not seen within 0 s"):
        bench.wait_for(lambda: False, 0.05, "the study drawn", every=0.01)
