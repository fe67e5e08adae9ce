"""The PACS route: a real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) on 127.0.0.1, and the app serving
it over DICOMweb (``--studies http://127.0.0.1:<port>/dicom-web``).

Skips with a reason when Orthanc or the shared datasets are missing, unless ``MODAN_REQUIRE_PACS=1`` (set by
``.ci/run``), where it fails.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from modan_monai.apps.monailabel import __main__ as cli
from modan_monai.apps.monailabel.lib.orthanc import OrthancError, OrthancServer, stop_orthanc
from modan_monai.apps.monailabel.process import free_port

REQUIRE_PACS = os.environ.get("MODAN_REQUIRE_PACS", "") == "1"


def _status(url: str, auth: str | None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def tiny_dicom():
    """``tiny_dicom(patient_id, pixels=None, **tags) -> bytes``: a single-frame 16x16 MONOCHROME2 secondary capture
    (new UIDs), for the tests of Orthanc itself."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    def make(patient_id: str, pixels=None, **tags) -> bytes:
        pixels = np.zeros((16, 16), np.uint16) if pixels is None else pixels
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.Modality = patient_id, "OT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = pixels.tobytes()
        for key, value in tags.items():
            setattr(ds, key, value)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    return make


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_orthanc_configuration_credentials_and_upload(orthanc, tiny_dicom):
    config = json.loads(orthanc.config_file.read_text())
    assert stat.S_IMODE(orthanc.config_file.stat().st_mode) == 0o600  # it holds the password
    assert config["RemoteAccessAllowed"] is False and config["AuthenticationEnabled"] is True
    assert config["RegisteredUsers"] == {orthanc.username: orthanc.password}
    assert config["DicomServerEnabled"] is False  # DIMSE has no authentication: off unless asked for
    assert config["DicomWeb"]["Enable"] and config["DicomWeb"]["Root"] == "/dicom-web/"
    for key in ("StorageDirectory", "IndexDirectory"):
        assert Path(config[key]).parent == orthanc.folder
    studies = f"{orthanc.dicomweb_url}/studies"
    assert _status(studies, None) == 401
    assert _status(studies, f"{orthanc.username}:wrong") == 401
    assert _status(studies, f"{orthanc.username}:{orthanc.password}") == 200

    answer = orthanc.upload(tiny_dicom("PING-0001"))
    assert answer["Status"] in ("Success", "AlreadyStored")
    found = json.loads(orthanc.request("GET", f"/dicom-web/studies?PatientID=PING-0001"))
    assert len(found) == 1


def test_orthanc_start_failure_names_port_config_and_log(orthanc, tmp_path):
    second = OrthancServer(tmp_path / "busy", http_port=orthanc.http_port, timeout=15)
    with pytest.raises(OrthancError) as err:
        second.start()
    message = str(err.value)
    for part in (str(orthanc.http_port), str(second.config_file), str(second.log_file), second.dicomweb_url):
        assert part in message
    assert not second.pid_file.exists()  # stopped by its pid, nothing left running
    assert stop_orthanc(tmp_path / "busy") is False


def test_start_orthanc_command_prints_the_app_command_and_stops_by_pid(orthanc, tmp_path, capsys):
    folder, port = tmp_path / "pacs", free_port()
    cli.main(["start_orthanc", "--folder", str(folder), "--port", str(port)])
    printed = capsys.readouterr().out
    pid = int((folder / "orthanc.pid").read_text())
    try:
        password = json.loads((folder / "orthanc.json").read_text())["RegisteredUsers"]["modan"]
        assert f"MONAI_LABEL_DICOMWEB_USERNAME=modan MONAI_LABEL_DICOMWEB_PASSWORD={password} " in printed
        assert f"-m modan_monai.apps.monailabel start_server --studies http://127.0.0.1:{port}/dicom-web" in printed
        assert _status(f"http://127.0.0.1:{port}/dicom-web/studies", f"modan:{password}") == 200
        with pytest.raises(SystemExit, match="is running"):  # a second start from the same folder is refused
            cli.main(["start_orthanc", "--folder", str(folder), "--port", str(free_port())])
    finally:
        cli.main(["stop_orthanc", "--folder", str(folder)])
    assert "Orthanc stopped" in capsys.readouterr().out
    assert not _alive(pid) and not (folder / "orthanc.pid").exists()


# -- the app on Orthanc over DICOMweb ----------------------------------------------------------------------------

SIZE = 64  # JSRT radiographs are written as 64 x 64 DX images
SPACING = [5.6, 5.6]  # JSRT: 0.35 mm at 1024 px
# patient / study / equipment data elements that may identify someone: a SEG holds only the source's values
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "OtherPatientIDs",
               "OtherPatientIDsSequence", "IssuerOfPatientID", "AccessionNumber", "StudyID", "ReferringPhysicianName",
               "InstitutionName", "InstitutionAddress", "StationName", "OperatorsName", "PerformingPhysicianName",
               "PhysiciansOfRecord", "StudyDescription")


def _person_names(ds) -> set[str]:
    names = set()
    for element in ds.iterall():
        if element.VR == "PN" and element.value not in (None, ""):
            names.add(str(element.value))
    return names


@pytest.fixture(scope="module")
def datasets() -> Path:
    env = os.environ.get("MODAN_SHARED_DATASETS")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
    needed = [root / "jsrt_scr" / "images_1024", root / "ct_tcga_dicom" / "dicom_dir"]
    if not all(p.is_dir() for p in needed):
        if REQUIRE_PACS:
            pytest.fail(f"MODAN_REQUIRE_PACS=1 but the shared datasets are missing: {needed}")
        pytest.skip(f"shared datasets not found at {root} (set MODAN_SHARED_DATASETS)")
    return root


def _jsrt_dicom(png: Path, patient_id: str, study_uid: str | None = None) -> bytes:
    """A JSRT radiograph as a single-frame DX image (64 px, pseudonymous PatientID, no name)."""
    import numpy as np
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(Image.open(png).convert("L").resize((SIZE, SIZE)), np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.Modality = patient_id, "", "DX"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelSpacing, ds.ImageOrientationPatient, ds.ImagePositionPatient = SPACING, [1, 0, 0, 0, 1, 0], [0, 0, 0]
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def pacs_app(orthanc, datasets, tiny_dicom, tmp_path_factory):
    """An Orthanc (refusing SEGs for one study, by a Lua filter) holding 2 JSRT radiographs, 2 TCGA CT slices, a
    colour image, a multi-frame image and a study without images; the app served on it over DICOMweb."""
    if importlib.util.find_spec("monailabel") is None:
        pytest.fail("monailabel is not installed (python scripts/install_monailabel.py)") if REQUIRE_PACS else \
            pytest.skip("monailabel not installed (python scripts/install_monailabel.py)")
    import numpy as np
    import pydicom
    import torch
    from pydicom.uid import generate_uid

    from modan_monai.apps.monailabel.lib.bundle import repository_bundle, write_initial_weights
    from modan_monai.apps.monailabel.process import LocalServer

    root = tmp_path_factory.mktemp("pacs_app")
    reject_study = generate_uid()
    lua = root / "reject_seg.lua"
    lua.write_text("function ReceivedInstanceFilter(dicom, origin, info)\n"
                   f"  return not (dicom.Modality == 'SEG' and dicom.StudyInstanceUID == '{reject_study}')\nend\n")
    pacs = OrthancServer(root / "orthanc", extra_config={"LuaScripts": [str(lua)]}).start()
    try:
        ids: dict[str, dict] = {}
        pngs = sorted((datasets / "jsrt_scr" / "images_1024").glob("*.png"))[:2]
        uploads = {"jsrt": _jsrt_dicom(pngs[0], "ANON-0001"), "reject": _jsrt_dicom(pngs[1], "ANON-0002", reject_study)}
        for i, dcm in enumerate(sorted((datasets / "ct_tcga_dicom" / "dicom_dir").glob("*.dcm"))[:2]):
            uploads[f"ct{i}"] = dcm.read_bytes()
        rgb = np.zeros((16, 16, 3), np.uint8)
        uploads["colour"] = tiny_dicom("ANON-0003", rgb, SamplesPerPixel=3, PhotometricInterpretation="RGB",
                                       BitsAllocated=8, BitsStored=8, HighBit=7, PlanarConfiguration=0)
        uploads["multiframe"] = tiny_dicom("ANON-0004", np.zeros((2, 16, 16), np.uint16), NumberOfFrames=2,
                                           Rows=16, Columns=16)
        uploads["no_image"] = tiny_dicom("ANON-0005", Modality="SR", SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11")
        for name, data in uploads.items():
            answer = pacs.upload(data)
            assert answer["Status"] == "Success", (name, answer)
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            ids[name] = {"series": str(ds.SeriesInstanceUID), "study": str(ds.StudyInstanceUID), "ds": ds}
        # segment: channel 0 (heart) everywhere, so the label map is not empty whatever the image
        weights = write_initial_weights(repository_bundle("segment"), root / "segment.pt", {"image_size": SIZE})
        state = torch.load(weights, weights_only=True)
        state["segmentation_head.0.weight"].zero_()
        state["segmentation_head.0.bias"].copy_(torch.tensor([10.0, -10.0, -10.0]))
        torch.save(state, weights)
        classify = write_initial_weights(repository_bundle("classify"), root / "classify.pt", {"image_size": SIZE})
        conf = {"segment_model": str(weights), "classify_model": str(classify),
                "segment_config": json.dumps({"image_size": SIZE}), "classify_config": json.dumps({"image_size": SIZE})}
        with pytest.MonkeyPatch.context() as patch:
            for key, value in pacs.env().items():
                patch.setenv(key, value)
            with LocalServer(pacs.dicomweb_url, conf, app_dir=root / "app", log_file=root / "server.log") as server:
                server.pacs, server.ids, server.root = pacs, ids, root
                yield server
    finally:
        pacs.stop()


def _infer(server, model: str, image: str, output: str = "json", params: dict | None = None):
    import requests

    return requests.post(f"{server.url}/infer/{model}", params={"image": image, "output": output},
                         data={"params": json.dumps(params or {})}, timeout=120)


def _seg_dataset(server, series_uid: str):
    """The (single) instance of a series, from Orthanc."""
    import pydicom

    found = json.loads(server.pacs.request("POST", "/tools/lookup", series_uid.encode(), "text/plain"))
    series = server.pacs.get_json(found[0]["Path"])
    return pydicom.dcmread(io.BytesIO(server.pacs.request("GET", f"/instances/{series['Instances'][0]}/file")))


def _check_seg(seg, source) -> None:
    """The SEG lies in the source's study, references its series, has its geometry, and holds no identifier the
    source does not hold."""
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == \
        pytest.approx([float(v) for v in source.PixelSpacing])
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == \
        pytest.approx([float(v) for v in source.ImageOrientationPatient])
    frame = seg.PerFrameFunctionalGroupsSequence[0]
    assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == \
        pytest.approx([float(v) for v in source.ImagePositionPatient])
    for keyword in IDENTIFYING:
        if keyword in seg and seg.get(keyword) not in (None, ""):
            assert keyword in source and seg[keyword].value == source[keyword].value, keyword
    assert _person_names(seg) <= _person_names(source)


def test_app_serves_the_pacs_image_series_without_downloading_tools(pacs_app):
    import requests

    status = requests.get(f"{pacs_app.url}/datastore/", params={"output": "stats"}, timeout=30).json()
    # 2 radiographs, 2 CT slices, the colour and the multi-frame image; the SR study has no image series
    assert status["total"] == 6, status
    app_dir = pacs_app.root / "app"
    assert not list(app_dir.rglob("itkimage2segimage*")) and not list(app_dir.rglob("dcmqi*"))  # not downloaded
    assert "dcmqi" not in pacs_app.log_file.read_text()


def test_segment_stores_a_dicom_seg_in_the_study(pacs_app):
    import pydicom
    import requests

    for name in ("jsrt", "ct0"):
        source = pacs_app.ids[name]
        response = _infer(pacs_app, "segment", source["series"], params={"save_label": True})
        assert response.status_code == 200, response.text
        stored = response.json()["dicom_seg"]
        assert stored["StudyInstanceUID"] == source["study"] and stored["SeriesInstanceUID"]
        seg = _seg_dataset(pacs_app, stored["SeriesInstanceUID"])
        _check_seg(seg, source["ds"])
        assert seg.SeriesDescription == "modan_monai original: segment"
        assert [s.SegmentLabel for s in seg.SegmentSequence] == ["heart"]
        assert int(seg.pixel_array.sum()) == source["ds"].Rows * source["ds"].Columns  # heart everywhere
        # the app lists it as the image's label (tag original), in its cache inside the app's work folder
        info = requests.get(f"{pacs_app.url}/datastore/label/info",
                            params={"label": source["series"], "tag": "original"}, timeout=30).json()
        assert info["SeriesInstanceUID"] == stored["SeriesInstanceUID"]
    # MONAI Label's output=dicom_seg: the SEG itself in the answer (written with pydicom-seg, not dcmqi)
    source = pacs_app.ids["jsrt"]
    answer = _infer(pacs_app, "segment", source["series"], "dicom_seg", {"label_info": [{"name": "heart"}]})
    assert answer.status_code == 200, answer.text
    seg = pydicom.dcmread(io.BytesIO(answer.content))
    _check_seg(seg, source["ds"])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["heart"]
    cached = list((pacs_app.root / "app" / "work" / "dicomweb").rglob("*.nii.gz"))
    assert cached, "the DICOMweb cache is inside the app's work folder"


def test_final_label_round_trips_through_the_pacs(pacs_app, tmp_path, request):
    import nibabel as nib
    import numpy as np
    import requests
    import SimpleITK as sitk

    from modan_monai.apps.monailabel.lib.dicomweb import PacsDatastore, dicomweb_session

    source = pacs_app.ids["ct1"]
    image = requests.get(f"{pacs_app.url}/datastore/image", params={"image": source["series"]}, timeout=60)
    assert image.status_code == 200, image.text
    (tmp_path / "image.nii.gz").write_bytes(image.content)
    reference = nib.load(str(tmp_path / "image.nii.gz"))
    label = np.zeros(reference.shape, np.uint8)
    label[40:200, 300:330] = 1  # x 40..199, y 300..329: not symmetric under a transpose or flip
    label[100:110, 10:20] = 3  # values 1 and 3: the SEG numbers its segments 1, 2 (no gap, as OHIF needs)
    nib.save(nib.Nifti1Image(label, reference.affine), str(tmp_path / "label.nii.gz"))
    with open(tmp_path / "label.nii.gz", "rb") as f:
        saved = requests.put(f"{pacs_app.url}/datastore/label", params={"image": source["series"], "tag": "final"},
                             files={"label": ("label.nii.gz", f)}, timeout=60)
    assert saved.status_code == 200, saved.text
    store = PacsDatastore(pacs_app.pacs.dicomweb_url, tmp_path / "cache",
                          dicomweb_session(pacs_app.pacs.username, pacs_app.pacs.password))
    request.addfinalizer(store.close)
    assert store.get_labeled_images() == [source["series"]]  # final: the predictions (original) do not count
    seg_uid = store._segs("final")[0]["label"]
    seg = _seg_dataset(pacs_app, seg_uid)
    _check_seg(seg, source["ds"])
    frames = seg.pixel_array  # (segments, rows, columns) for 2 segments of one slice
    by_segment = {int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber): frames[i]
                  for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence)}
    np.testing.assert_array_equal(by_segment[1], (label[..., 0] == 1).T)  # DICOM rows are y, columns x
    np.testing.assert_array_equal(by_segment[2], (label[..., 0] == 3).T)
    assert [(int(s.SegmentNumber), s.SegmentDescription) for s in seg.SegmentSequence] == \
        [(1, "label value 1"), (2, "label value 3")]
    pairs = store.datalist()  # the app reads the SEG back as a label map (training's datalist)
    assert len(pairs) == 1
    back = sitk.GetArrayFromImage(sitk.ReadImage(pairs[0]["label"]))
    assert sorted(np.unique(back).tolist()) == [0, 1, 3] and int((back == 3).sum()) == int((label == 3).sum())


def test_classify_returns_probabilities(pacs_app):
    response = _infer(pacs_app, "classify", pacs_app.ids["jsrt"]["series"])
    assert response.status_code == 200, response.text
    result = response.json()
    probs = result["probabilities"]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert result["label"] == max(probs, key=probs.get)


def test_bad_input_is_answered_4xx_naming_study_series_and_url(pacs_app):
    import requests

    url, ids = pacs_app.pacs.dicomweb_url, pacs_app.ids
    cases = {
        "colour": (ids["colour"]["series"], 422, ["colour", ids["colour"]["study"]]),
        "multiframe": (ids["multiframe"]["series"], 422, ["multi-frame", ids["multiframe"]["study"]]),
        "no_image": (ids["no_image"]["study"], 422, ["no supported series", ids["no_image"]["series"]]),
        "unknown": ("1.2.3.4.5", 404, ["1.2.3.4.5"]),
    }
    for name, (image, status, parts) in cases.items():
        response = _infer(pacs_app, "segment", image)
        assert response.status_code == status, (name, response.text)
        detail = response.json()["detail"]
        for part in [image, url, *parts]:
            assert part in detail, (name, part, detail)
        assert "Traceback" not in response.text
    refused = _infer(pacs_app, "segment", ids["reject"]["series"], params={"save_label": True})
    assert refused.status_code == 422, refused.text
    for part in ("refused the DICOM SEG", ids["reject"]["series"], ids["reject"]["study"], url):
        assert part in refused.json()["detail"]
    assert requests.get(f"{pacs_app.url}/info/", timeout=30).status_code == 200  # the server keeps serving
    assert _infer(pacs_app, "classify", ids["ct0"]["series"]).status_code == 200


def test_start_up_with_the_pacs_unreachable_or_credentials_refused_names_the_url(orthanc, monkeypatch, tmp_path):
    from monailabel.config import settings

    monkeypatch.setattr(settings, "MONAI_LABEL_DICOMWEB_USERNAME", orthanc.username)
    monkeypatch.setattr(settings, "MONAI_LABEL_DICOMWEB_PASSWORD", "wrong")
    with pytest.raises(SystemExit) as refused:
        cli.main(["start_server", "--studies", orthanc.dicomweb_url])
    assert orthanc.dicomweb_url in str(refused.value.code) and "HTTP 401" in str(refused.value.code)
    assert "MONAI_LABEL_DICOMWEB_PASSWORD" in str(refused.value.code)
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(SystemExit) as unreachable:
        cli.main(["start_server", "--studies", down])
    assert down in str(unreachable.value.code) and "does not answer" in str(unreachable.value.code)
    # the app itself (started another way than this command) refuses the same, naming the URL
    from modan_monai.apps.monailabel.lib.dicomweb import DICOMwebError
    from modan_monai.apps.monailabel.main import ModanMonaiApp

    app = object.__new__(ModanMonaiApp)
    app.studies, app.conf, app.work_dir = down, {}, tmp_path
    with pytest.raises(DICOMwebError, match=down):
        app.init_datastore()


def test_the_app_never_downloads_dcmqi(tmp_path, monkeypatch):
    import monailabel.interfaces.app as monailabel_app

    from modan_monai.apps.monailabel.main import ModanMonaiApp

    calls = []
    monkeypatch.setattr(monailabel_app, "download_and_extract", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(monailabel_app.shutil, "which", lambda name: None)
    app = object.__new__(ModanMonaiApp)
    app.app_dir = str(tmp_path)
    app._download_dcmqi_tools()
    assert calls == [] and not (tmp_path / "bin").exists()


def test_an_annotators_class_is_stored_for_a_series_not_yet_cached(pacs_app):
    """``PUT /datastore/image/info`` (how annotators give a class for ``/train/classify``) on a series the app has
    never retrieved: it is retrieved first (MONAI Label's DICOMweb datastore answered "not found")."""
    import requests

    series = pacs_app.ids["ct1"]["series"]
    response = requests.put(f"{pacs_app.url}/datastore/image/info", params={"image": series},
                            data={"info": json.dumps({"class": "0"})}, timeout=60)
    assert response.status_code == 200, response.text
    info = requests.get(f"{pacs_app.url}/datastore/image/info", params={"image": series}, timeout=30).json()
    assert info["class"] == "0"
