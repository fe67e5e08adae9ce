"""The app's DICOMweb datastore: MONAI Label's :class:`DICOMWebDatastore`, confined, checked, and writing DICOM SEG
without dcmqi.

``--studies http://host:port/dicom-web`` serves the image series of a DICOMweb server (Orthanc, see
:mod:`~modan_monai.apps.monailabel.lib.orthanc`) with :class:`PacsDatastore`:

- image ids are SeriesInstanceUIDs (plain names); every series except the non-image ones (``SEG``, ``SR``, ``PR``,
  ``KO``, ``RTSTRUCT`` ...) is listed, or those matching ``--conf dicomweb_filter`` (QIDO keys, JSON);
- a series is downloaded (WADO) into the cache folder inside the app's ``work_dir`` and converted to NIfTI there;
  nothing is read or written outside that folder. A series the models cannot take (colour, multi-frame, a
  non-image modality), a study id given for a series, or a study with no image series is answered with a 4xx
  naming the study, series and URL; the server keeps serving;
- a label saved for a series (an ``/infer`` result with ``save_label``, or ``/datastore/label``) becomes a DICOM
  SEG written with pydicom-seg (:func:`write_seg`: the source's geometry, the patient / study data elements the
  source holds and nothing more) and stored (STOW) as a new series of the source's study; its
  ``SeriesDescription`` (``modan_monai <tag>: <model>``) records the label tag, so predictions (``original``) and
  annotators' labels (``final``; a SEG from another tool counts as ``final``) stay apart. A SEG the server refuses
  is answered with a 4xx naming study, series and URL.

:func:`check_dicomweb` is the start-up check: an unreachable server or refused credentials end start-up with one
error naming the URL.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import requests

from modan_monai.apps.monailabel import compat

compat.apply()  # before monailabel's imports reach pydicom-seg

from dicomweb_client.session_utils import create_session_from_user_pass  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore  # noqa: E402
from monailabel.datastore.local import LocalDatastore  # noqa: E402
from monailabel.datastore.utils.convert import binary_to_image, dicom_to_nifti  # noqa: E402
from monailabel.datastore.utils.dicom import dicom_web_download_series  # noqa: E402
from monailabel.interfaces.datastore import DefaultLabelTag  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from modan_monai.apps.monailabel.lib.bundle import ServingError  # noqa: E402
from modan_monai.apps.monailabel.lib.safety import inside, name_problem, plain_name, shown  # noqa: E402

__all__ = ["DICOMwebError", "NON_IMAGE_MODALITIES", "PacsDatastore", "check_dicomweb", "dicomweb_session",
           "install_seg_writer", "read_seg", "seg_file", "seg_tag", "write_seg"]

logger = logging.getLogger(__name__)

#: modalities of series that hold no image the models take (never listed as images)
NON_IMAGE_MODALITIES = ("SEG", "SR", "PR", "KO", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG", "DOC", "AU",
                        "ECG", "PLAN", "FID", "RWV")
_SEG_DESCRIPTION = re.compile(r"^modan_monai (?P<tag>[^:\s]+):")
_SEGMENT_VALUE = re.compile(r"label value (\d{1,5})")
# data elements pydicom-seg's writer fills with its own placeholders ("Session1", "Reader1"): not the study's
_PLACEHOLDERS = ("ClinicalTrialSeriesID", "ClinicalTrialTimePointID", "ClinicalTrialCoordinatingCenterName")


class DICOMwebError(ValueError):
    """The DICOMweb server cannot be used (the message names its URL)."""


def dicomweb_session(username: str | None = None, password: str | None = None) -> requests.Session | None:
    """A session with HTTP basic authentication (MONAI Label's ``MONAI_LABEL_DICOMWEB_USERNAME`` /
    ``..._PASSWORD`` when not given), or ``None`` without credentials."""
    username = settings.MONAI_LABEL_DICOMWEB_USERNAME if username is None else username
    password = settings.MONAI_LABEL_DICOMWEB_PASSWORD if password is None else password
    return create_session_from_user_pass(username, password) if username and password else None


def check_dicomweb(url: str, session: requests.Session | None = None, timeout: float = 10.0) -> None:
    """Ask the DICOMweb server at ``url`` for one study (QIDO ``/studies?limit=1``).

    Raises:
        DICOMwebError: no answer, refused credentials (401 / 403) or another error status, naming the URL.
    """
    probe = f"{url.rstrip('/')}/studies?limit=1"
    try:
        answer = (session or requests).get(probe, timeout=timeout, headers={"Accept": "application/dicom+json"})
    except requests.RequestException as err:
        raise DICOMwebError(f"--studies {url}: the DICOMweb server does not answer ({type(err).__name__}: "
                            f"{err}); is it running?") from None
    if answer.status_code in (401, 403):
        given = "were" if session is not None else "were not"
        raise DICOMwebError(f"--studies {url}: the DICOMweb server refused the credentials (HTTP "
                            f"{answer.status_code}); credentials {given} given: set MONAI_LABEL_DICOMWEB_USERNAME and "
                            "MONAI_LABEL_DICOMWEB_PASSWORD")
    if answer.status_code >= 400:
        raise DICOMwebError(f"--studies {url}: GET {probe} answered HTTP {answer.status_code} {answer.reason}; is "
                            "it the DICOMweb root (e.g. http://127.0.0.1:8042/dicom-web)?")


def seg_tag(series_description: str | None) -> str:
    """The label tag of a SEG series: the one :func:`write_seg` recorded, ``final`` for a SEG from elsewhere."""
    match = _SEG_DESCRIPTION.match(series_description or "")
    return match.group("tag") if match else DefaultLabelTag.FINAL.value


def write_seg(series_dir: str | os.PathLike, label_file: str | os.PathLike, description: str,
              names: dict[int, str] | None = None) -> Dataset | None:
    """A DICOM SEG of ``label_file`` (a label map in the source series' geometry) over the DICOM files of
    ``series_dir``, written with pydicom-seg (no dcmqi).

    The SEG holds the patient / study data elements of its source (pydicom-seg copies them) and nothing more: no
    content creator, none of pydicom-seg's clinical-trial placeholders.

    Args:
        series_dir: the source series' DICOM files.
        label_file: the label map (NIfTI / NRRD; 0 = background).
        description: the SEG's ``SeriesDescription`` (64 characters at most).
        names: segment name per label value (default ``label <value>``).

    Returns:
        the SEG dataset, or ``None`` when the label map has no foreground (a SEG needs a segment). Its segments
        are the label values present, numbered 1..k in increasing order, each described as ``label value <v>``.
    """
    import SimpleITK as sitk
    import pydicom_seg

    mask = sitk.Cast(sitk.ReadImage(str(label_file)), sitk.sitkUInt16)
    values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(mask)) if v != 0]
    if not values:
        return None
    # segment numbers run 1..k without gaps (PS3.3 C.8.20.2; OHIF cannot draw a SEG with gaps or empty segments);
    # each segment's description keeps the label value it stands for (read back by :func:`read_seg`)
    mask = sitk.ChangeLabel(mask, changeMap={float(v): float(n) for n, v in enumerate(values, 1) if v != n})
    segments = []
    for number, value in enumerate(values, 1):
        name = (names or {}).get(value) or f"label {value}"
        segments.append({
            "labelID": number,
            "SegmentLabel": name[:64],
            "SegmentDescription": f"label value {value}",
            "SegmentAlgorithmType": "AUTOMATIC",
            "SegmentAlgorithmName": "modan_monai",
            "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "123037004", "CodingSchemeDesignator": "SCT",
                                                      "CodeMeaning": "Anatomical Structure"},
            "SegmentedPropertyTypeCodeSequence": {"CodeValue": "78961009", "CodingSchemeDesignator": "SCT",
                                                  "CodeMeaning": name[:64]},
        })
    template = pydicom_seg.template.from_dcmqi_metainfo({
        "SeriesDescription": description[:64], "SeriesNumber": "300", "InstanceNumber": "1",
        "ContentLabel": "SEGMENTATION", "ContentDescription": "modan_monai segmentation",
        "segmentAttributes": [segments],
    })
    writer = pydicom_seg.MultiClassWriter(template=template, inplane_cropping=False, skip_empty_slices=False,
                                          skip_missing_segment=False)
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in sorted(Path(series_dir).iterdir())]
    seg = writer.write(_with_source_geometry(mask, sources), sources)
    for keyword in _PLACEHOLDERS:
        if keyword in seg:
            del seg[keyword]
    seg.ContentCreatorName = ""  # type 2: present, empty (pydicom-seg writes "Reader1")
    return seg


def read_seg(series_dir: str | os.PathLike) -> str:
    """The label map (a temporary ``.nii.gz``) of the DICOM SEG in ``series_dir``: each segment's pixels take the
    label value its ``SegmentDescription`` records (``label value <v>``, as :func:`write_seg` writes), else its
    segment number (a SEG from another tool). The caller removes the file.

    Raises:
        ValueError: the folder holds no single SEG instance (naming the folder).
    """
    import SimpleITK as sitk
    import pydicom_seg

    files = sorted(Path(series_dir).iterdir())
    if len(files) != 1:
        raise ValueError(f"SEG series folder {Path(series_dir).name} holds {len(files)} files, not one SEG instance")
    seg = pydicom.dcmread(str(files[0]))
    values = {}
    for item in seg.SegmentSequence:
        match = _SEGMENT_VALUE.fullmatch(str(item.get("SegmentDescription", "")))
        if match and int(match.group(1)) != int(item.SegmentNumber):
            values[float(item.SegmentNumber)] = float(match.group(1))
    image = sitk.ChangeLabel(pydicom_seg.MultiClassReader().read(seg).image, changeMap=values)
    fd, path = tempfile.mkstemp(suffix=".nii.gz")
    os.close(fd)
    sitk.WriteImage(image, path, True)
    return path


def _with_source_geometry(mask: Any, sources: list[Dataset]) -> Any:
    """``mask`` (a SimpleITK image over the series, slices in the order of their position along the normal) with
    the geometry the source instances state (``ImagePositionPatient``, ``ImageOrientationPatient``,
    ``PixelSpacing``): a converted image's header may differ (ITK reads a radiograph's detector spacing, or none).

    Raises:
        ValueError: the mask's size is not the series' (columns, rows, instances), or an instance lacks the
            image-plane data elements (naming them).
    """
    size = (int(sources[0].Columns), int(sources[0].Rows), len(sources))
    if tuple(mask.GetSize()) != size:
        raise ValueError(f"the label map's size {tuple(mask.GetSize())} is not the series' (columns, rows, "
                         f"instances) {size}")
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in sources[0]]
    if missing:
        raise ValueError(f"instance {sources[0].get('SOPInstanceUID')} has no {', '.join(missing)}")
    row, col = (np.array([float(v) for v in sources[0].ImageOrientationPatient[i:i + 3]]) for i in (0, 3))
    normal = np.cross(row, col)
    positions = sorted(np.array([float(v) for v in s.ImagePositionPatient]) for s in sources)
    positions.sort(key=lambda p: float(p @ normal))
    gap = float((positions[1] - positions[0]) @ normal) if len(positions) > 1 else \
        float(sources[0].get("SliceThickness") or 1.0)
    out = type(mask)(mask)
    out.SetOrigin([float(v) for v in positions[0]])
    out.SetSpacing([float(sources[0].PixelSpacing[1]), float(sources[0].PixelSpacing[0]), gap or 1.0])
    out.SetDirection([float(v) for v in np.stack([row, col, normal], axis=1).ravel()])
    return out


def seg_file(series_dir: str, label: str, label_info: list[dict[str, Any]] | None = None, file_ext: str = "*",
             use_itk: bool = True) -> str:
    """MONAI Label's ``nifti_to_dicom_seg`` (``/infer/<model>?output=dicom_seg``) through :func:`write_seg`: the
    SEG file of ``label`` over the series in ``series_dir`` (segment names from ``label_info``'s ``name``), never
    dcmqi (``use_itk`` and ``file_ext`` are ignored).

    Raises:
        ServingError: (422) the label map has no foreground, or cannot be written over the series (naming it).
    """
    names = {i + 1: str(item.get("name")) for i, item in enumerate(label_info or [])
             if isinstance(item, dict) and item.get("name")}
    where = f"series {Path(series_dir).name}"
    try:
        seg = write_seg(series_dir, label, "modan_monai result: dicom_seg", names)
    except Exception as err:  # noqa: BLE001 - pydicom-seg's errors name no series
        raise ServingError(422, f"the result of {where} cannot be written as a DICOM SEG over the series "
                                f"({type(err).__name__}: {err})") from err
    if seg is None:
        raise ServingError(422, f"the result of {where} is empty (background only): no DICOM SEG to answer")
    fd, path = tempfile.mkstemp(suffix=".dcm")
    os.close(fd)
    seg.save_as(path)
    return path


def install_seg_writer() -> None:
    """Let MONAI Label's ``/infer/<model>?output=dicom_seg`` write DICOM SEG with :func:`seg_file` (its own calls
    dcmqi's ``itkimage2segimage``, which this app never downloads)."""
    import monailabel.endpoints.infer as infer_endpoint

    infer_endpoint.nifti_to_dicom_seg = seg_file


class PacsDatastore(DICOMWebDatastore):
    """MONAI Label's DICOMweb datastore, confined to its cache folder, refusing what the models cannot take with a
    4xx, and storing labels as DICOM SEG without dcmqi (see the module docstring).

    Args:
        url: the DICOMweb root (``http://127.0.0.1:8042/dicom-web``).
        cache_dir: the cache folder (inside the app's ``work_dir``).
        session: the HTTP session (credentials), see :func:`dicomweb_session`.
        search_filter: QIDO series filter (default: every series).

    Example:
        >>> store = PacsDatastore("http://127.0.0.1:8042/dicom-web", "/app/work/dicomweb",
        ...                       dicomweb_session("modan", "secret"))  # doctest: +SKIP
        >>> store.list_images()  # doctest: +SKIP
        ['1.2.826.0.1.3680043.8.498.1...']
    """

    def __init__(self, url: str, cache_dir: str | os.PathLike, session: requests.Session | None = None,
                 search_filter: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        client = DICOMwebClientX(url=self.url, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                                 wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                                 stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
        os.makedirs(cache_dir, exist_ok=True)
        super().__init__(client, dict(search_filter or {}), cache_path=str(cache_dir), fetch_by_frame=False,
                         convert_to_nifti=True)
        self.root = os.path.realpath(self._datastore_path)

    def close(self) -> None:
        """Stop watching the cache folder (MONAI Label's DICOMweb datastore always watches it)."""
        observer = getattr(self, "_observer", None)
        if observer is not None and observer.is_alive():
            observer.stop()
            observer.join(timeout=10)

    # -- helpers -------------------------------------------------------------------------------------------------
    def relative(self, path: str) -> str:
        """``path`` relative to the cache folder (as answers name files)."""
        return os.path.relpath(os.path.realpath(path), self.root)

    def _query(self, what: str, **filters: str) -> list[Dataset]:
        try:
            return [Dataset.from_json(d) for d in self._client.search_for_series(search_filters=filters)]
        except requests.RequestException as err:
            raise ServingError(502, f"the DICOMweb server {self.url} did not answer the search for {what} "
                                    f"({type(err).__name__})") from err

    def _series(self, series_uid: str) -> Dataset | None:
        found = [d for d in self._query(f"series {series_uid}", SeriesInstanceUID=series_uid)
                 if d.get("SeriesInstanceUID") == series_uid]
        return found[0] if found else None

    def _where(self, meta: Dataset) -> str:
        return f"series {meta.get('SeriesInstanceUID')} of study {meta.get('StudyInstanceUID')} at {self.url}"

    def _no_image(self, image_id: Any, parameter: str) -> ServingError:
        return ServingError(404, f"parameter {parameter}: no image series {shown(image_id)} at {self.url}")

    def _not_a_series(self, image_id: str, parameter: str) -> ServingError:
        """The error for an id that is no series: a study's (naming its series) or nothing's (404)."""
        series = self._query(f"study {image_id}", StudyInstanceUID=image_id)
        if not series:
            return self._no_image(image_id, parameter)
        images = [str(s.SeriesInstanceUID) for s in series if s.get("Modality") not in NON_IMAGE_MODALITIES]
        if not images:
            found = ", ".join(f"{s.get('SeriesInstanceUID')} ({s.get('Modality', 'no modality')})" for s in series)
            return ServingError(422, f"parameter {parameter}: study {image_id} at {self.url} has no supported series "
                                     f"(an image series); it holds {found}")
        return ServingError(422, f"parameter {parameter}: {image_id} is a study at {self.url}, not a series; give "
                                 f"one of its image series: {images}")

    def _check_files(self, meta: Dataset, series_dir: str, parameter: str) -> None:
        """Refuse (422) a series whose files the models cannot take: colour, multi-frame, no pixels."""
        files = sorted(os.listdir(series_dir)) if os.path.isdir(series_dir) else []
        if not files:
            raise ServingError(422, f"parameter {parameter}: {self._where(meta)} has no instance to read")
        for name in files:
            ds = pydicom.dcmread(os.path.join(series_dir, name), stop_before_pixels=True)
            problem = None
            if "Rows" not in ds:
                problem = "holds no image (no Rows / pixel data)"
            elif int(ds.get("SamplesPerPixel", 1)) != 1:
                problem = (f"is a colour image ({ds.get('PhotometricInterpretation')}, {ds.get('SamplesPerPixel')} "
                           "samples per pixel); the models take single-channel (greyscale) images")
            elif int(ds.get("NumberOfFrames", 1) or 1) > 1:
                problem = (f"is a multi-frame image ({ds.get('NumberOfFrames')} frames); the models take "
                           "single-frame instances (a volume as one instance per slice)")
            if problem:
                raise ServingError(422, f"parameter {parameter}: {self._where(meta)}: instance "
                                        f"{ds.get('SOPInstanceUID')} {problem}")

    def image_file(self, image_id: Any, parameter: str = "image") -> str:
        """The NIfTI file (in the cache) of image series ``image_id``, downloaded and converted when needed.

        Raises:
            ServingError: 404 the id is not a plain name or names nothing at the server; 422 it names a study, a
                non-image series or one the models cannot take (colour, multi-frame); 502 the server did not
                answer (each naming the study / series and the URL).
        """
        if name_problem(image_id) is not None:
            raise self._no_image(image_id, parameter)
        meta = self._series(image_id)
        if meta is None:
            raise self._not_a_series(image_id, parameter)
        if meta.get("Modality") in NON_IMAGE_MODALITIES:
            raise ServingError(422, f"parameter {parameter}: {self._where(meta)} is a {meta.get('Modality')} series, "
                                    "not an image the models take")
        series_dir = os.path.join(self._datastore.image_path(), image_id)
        if not inside(series_dir, self.root):
            raise self._no_image(image_id, parameter)
        nifti = os.path.join(self._datastore.image_path(), f"{image_id}.nii.gz")
        if not os.path.isfile(nifti):
            if not os.path.isdir(series_dir) or not os.listdir(series_dir):
                try:
                    dicom_web_download_series(str(meta.StudyInstanceUID), image_id, series_dir, self._client)
                except requests.RequestException as err:
                    shutil.rmtree(series_dir, ignore_errors=True)
                    raise ServingError(502, f"parameter {parameter}: {self._where(meta)} could not be retrieved "
                                            f"({type(err).__name__})") from err
            self._check_files(meta, series_dir, parameter)
            try:
                converted = dicom_to_nifti(series_dir)
            except Exception as err:  # noqa: BLE001 - ITK's reader says little: the series is named
                raise ServingError(422, f"parameter {parameter}: {self._where(meta)} could not be read as an image "
                                        f"({type(err).__name__})") from err
            LocalDatastore.add_image(self, image_id, converted, self._dicom_info(image_id))
            os.unlink(converted)
        uri = super().get_image_uri(image_id)
        if not inside(uri, self.root) or not os.path.isfile(uri):
            raise self._no_image(image_id, parameter)
        return uri

    def get_image_uri(self, image_id: str) -> str:
        """See :meth:`image_file` (parameter ``image``)."""
        return self.image_file(image_id, "image")

    def _dicom_info(self, series_id: str) -> dict[str, Any]:
        """The series' UIDs and modality (MONAI Label's also copies the PatientID into the cache's index: not
        here)."""
        meta = self._series(series_id)
        info = {"SeriesInstanceUID": series_id}
        for key in ("StudyInstanceUID", "Modality"):
            info[key] = str(meta.get(key, "")) if meta is not None else ""
        return info

    # -- listings ------------------------------------------------------------------------------------------------
    def list_images(self) -> list[str]:
        """The image series (no non-image modality; ``search_filter`` applied), asked of the server each time."""
        series = self._query("image series", **self._search_filter)
        return [str(s.SeriesInstanceUID) for s in series if s.get("Modality") not in NON_IMAGE_MODALITIES]

    def _segs(self, label_tag: str | None = None) -> list[dict[str, str]]:
        """``{"image", "label", "tag"}`` for the server's SEG series that reference a listed image series (with
        ``label_tag``, only that tag's)."""
        images = set(self.list_images())
        out = []
        for seg in self._query("SEG series", Modality="SEG"):
            tag = seg_tag(seg.get("SeriesDescription"))
            if label_tag is not None and tag != label_tag:
                continue
            try:
                meta = Dataset.from_json(self._client.retrieve_series_metadata(str(seg.StudyInstanceUID),
                                                                               str(seg.SeriesInstanceUID))[0])
            except requests.RequestException as err:
                raise ServingError(502, f"the DICOMweb server {self.url} did not return the metadata of SEG "
                                        f"{self._where(seg)} ({type(err).__name__})") from err
            referenced = meta.get("ReferencedSeriesSequence")
            image = str(referenced[0].SeriesInstanceUID) if referenced else None
            if image in images:
                out.append({"image": image, "label": str(seg.SeriesInstanceUID), "tag": tag})
            else:
                logger.warning(f"SEG {self._where(seg)} references no listed image series ({image}); not a label")
        return out

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        """Image series with a SEG of ``label_tag`` (default ``final``) at the server."""
        tag = label_tag or DefaultLabelTag.FINAL.value
        return sorted({s["image"] for s in self._segs(tag)})

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        """Image series without a SEG of ``label_tag`` (default ``final``)."""
        labeled = set(self.get_labeled_images(label_tag, labels))
        return [s for s in self.list_images() if s not in labeled]

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """The label map (in the cache) of SEG series ``label_id`` of image series ``image_id`` for the ``final``
        tag, retrieved and read with :func:`read_seg` (label values as written, not segment numbers); other tags
        from the cache.

        Raises:
            ServingError: 404 the SEG's folder would lie outside the cache; 502 the server did not answer.
        """
        if label_tag != DefaultLabelTag.FINAL:
            return LocalDatastore.get_label_uri(self, label_id, label_tag)
        label_dir = os.path.join(self._datastore.label_path(label_tag), label_id)
        label_file = os.path.join(self._datastore.label_path(label_tag), f"{image_id}.nii.gz")
        if not inside(label_dir, self.root) or not inside(label_file, self.root):
            raise ServingError(404, f"parameter label: no label {shown(label_id)!r} in the datastore")
        if not os.path.isfile(label_file):
            if not os.path.isdir(label_dir) or not os.listdir(label_dir):
                try:
                    dicom_web_download_series(None, label_id, label_dir, self._client)
                except requests.RequestException as err:
                    shutil.rmtree(label_dir, ignore_errors=True)
                    raise ServingError(502, f"the DICOMweb server {self.url} did not return SEG series {label_id} "
                                            f"({type(err).__name__})") from err
            converted = read_seg(label_dir)
            try:
                LocalDatastore.save_label(self, image_id, converted, label_tag, self._dicom_info(label_id))
            finally:
                os.unlink(converted)
        return label_file

    def _download_labeled_data(self) -> None:
        """Cache each image series with a ``final`` SEG and that SEG as a label map (for training)."""
        for pair in self._segs(DefaultLabelTag.FINAL.value):
            self.image_file(pair["image"], "image")
            self.get_label_uri(pair["label"], DefaultLabelTag.FINAL.value, image_id=pair["image"])

    # -- writes --------------------------------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any],
                   label_id: str = "") -> str:
        """Store a label of image series ``image_id`` as a DICOM SEG series of its study (and in the cache).

        Raises:
            ServingError: 404 / 422 as :meth:`image_file`; 400 a tag that is not a plain name; 422 the label
                cannot be written over the series' geometry, or the server refused the SEG (naming study, series
                and URL).
        """
        image_uri = self.image_file(image_id, "image")
        plain_name(label_tag, "tag")
        meta = self._series(image_id)
        converted = ""
        if "".join(Path(label_filename).suffixes) == ".bin":
            converted = label_filename = binary_to_image(image_uri, label_filename)
        info = dict(label_info or {})
        params = info.get("params") if isinstance(info.get("params"), dict) else {}
        label_names = params.get("label_names") or info.get("label_names") or {}
        names = {int(v): str(k) for k, v in label_names.items() if isinstance(v, int)} \
            if isinstance(label_names, dict) else None
        description = f"modan_monai {label_tag}: {info.get('model') or 'label'}"
        try:
            try:
                seg = write_seg(os.path.join(self._datastore.image_path(), image_id), label_filename, description,
                                names)
            except Exception as err:  # noqa: BLE001 - pydicom-seg's errors name no series
                raise ServingError(422, f"the label of {self._where(meta)} cannot be written as a DICOM SEG over "
                                        f"the series ({type(err).__name__}: {err})") from err
            if seg is None:
                logger.warning(f"label ({label_tag}) of {self._where(meta)} has no foreground: no SEG stored")
                info["SeriesInstanceUID"] = ""
            else:
                self._store(seg, meta)
                info["SeriesInstanceUID"] = str(seg.SeriesInstanceUID)
            info["StudyInstanceUID"] = str(meta.get("StudyInstanceUID", ""))
            return LocalDatastore.save_label(self, image_id, label_filename, label_tag, info)
        finally:
            if converted and os.path.exists(converted):
                os.unlink(converted)

    def _store(self, seg: Dataset, meta: Dataset) -> None:
        try:
            answer = self._client.store_instances(datasets=[seg])
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else "?"
            raise ServingError(422, f"the DICOMweb server {self.url} refused the DICOM SEG {seg.SeriesInstanceUID} "
                                    f"of {self._where(meta)} (HTTP {status})") from err
        except requests.RequestException as err:
            raise ServingError(502, f"the DICOMweb server {self.url} did not take the DICOM SEG of "
                                    f"{self._where(meta)} ({type(err).__name__})") from err
        # STOW-RS answers 200 / 202 with a FailedSOPSequence for instances it refused, and a filter of the server
        # (Orthanc's ReceivedInstanceFilter) may drop an instance it answered as stored: look the series up
        failed = [f"failure reason {r.get('FailureReason', '?')}" for r in (answer.get("FailedSOPSequence") or [])]
        if failed or self._series(str(seg.SeriesInstanceUID)) is None:
            raise ServingError(422, f"the DICOMweb server {self.url} refused the DICOM SEG {seg.SeriesInstanceUID} "
                                    f"of {self._where(meta)} ({', '.join(failed) or 'answered stored, not found'})")

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        """Update the cached image info of series ``image_id`` (e.g. an annotator's ``class``), retrieving the
        series first when it is not cached yet (MONAI Label's version answers "not found" for it).

        Raises:
            ServingError: as :meth:`image_file` (parameter ``image``).
        """
        self.image_file(image_id, "image")
        super().update_image_info(image_id, info)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Refused (405): images come from the DICOMweb server; store them there."""
        raise ServingError(405, f"parameter image: this datastore serves the DICOMweb server {self.url}; store "
                                "images there (STOW-RS / C-STORE), not through the app")

    def remove_image(self, image_id: str) -> None:
        """Refused (405): the DICOMweb server's studies are not deleted through the app."""
        raise ServingError(405, f"parameter id: this datastore serves the DICOMweb server {self.url}; images are "
                                "not deleted through the app")
