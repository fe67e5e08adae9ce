"""No PHI in shareable outputs: DICOM files carrying a patient name, id, birth date and accession number go through
``build_manifest.py dicom_dir``, a 1-epoch pretraining (``bundles/pretrain``, in process), a 2-fold CV
(``scripts/run_cv.py``) and ``scripts/embed.py``; then every byte written under their output folders (the logs, the
console output and the members of compressed archives included) is searched for those values, whole or in part, in
any case, and for the birth dates as DICOM, ISO or slashed dates.

``write_phi_dicoms`` is also used by ``tests/data_manifests/test_dicom_phi.py``.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.bundle import ConfigWorkflow

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
N_PATIENTS = 8
SLICES_PER_PATIENT = 2


def phi_values(patient: int) -> dict[str, str]:
    """The identifying header values of ``patient``, built on :data:`PHI_STEMS` and a 1923 birth date."""
    return {
        "PatientName": f"Quorvex^Brunhilda{'ABCDEFGH'[patient]}",
        "PatientID": f"PIDQX{7301 + patient}ZW",
        "PatientBirthDate": f"1923{patient + 1:02d}17",
        "AccessionNumber": f"ACCQZ{5521 + patient}KV",
    }


def write_phi_dicoms(folder: Path, n_patients: int = N_PATIENTS, slices: int = SLICES_PER_PATIENT,
                     size: int = 32) -> dict[str, str]:
    """Write ``n_patients * slices`` CT slices ``folder/scans/img<k>.dcm`` (names free of PHI) with PHI in the header.

    Patients alternate between BodyPartExamined ``CHEST`` and ``HEAD``; the two slices of a patient share their
    Study Instance UID.

    Returns:
        ``{file name: PatientID}``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    out = folder / "scans"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    owners = {}
    for patient in range(n_patients):
        study = generate_uid()
        for s in range(slices):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
            for keyword, value in phi_values(patient).items():
                setattr(ds, keyword, value)
            ds.Modality, ds.BodyPartExamined = "CT", ("CHEST", "HEAD")[patient % 2]
            ds.Rows = ds.Columns = size
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            disc = np.hypot(*np.mgrid[-1:1:size * 1j, -1:1:size * 1j]) < 0.4 + 0.1 * (patient % 2)
            pixels = np.where(disc, 1064.0, 24.0) + rng.normal(0.0, 20.0, (size, size))
            ds.PixelData = np.round(pixels).astype(np.int16).tobytes()
            name = f"img{patient * slices + s:03d}.dcm"
            ds.save_as(out / name, enforce_file_format=True)
            owners[name] = ds.PatientID
    return owners


#: parts every value of :func:`phi_values` contains: searching for them finds each value, whole or in part, and in
#: any form (``^`` or a space between name parts, any case).
PHI_STEMS: tuple[bytes, ...] = (b"quorvex", b"brunhilda", b"pidqx", b"accqz")
#: the birth dates as DICOM ``YYYYMMDD`` or ISO / slashed dates, not inside a longer number.
BIRTH_DATE = re.compile(rb"(?<![0-9.])1923[-/]?(0[1-9]|1[0-2])[-/]?17(?![0-9])")


def _contents(path: Path) -> Iterator[tuple[str, bytes]]:
    """The bytes of ``path``, plus those of every compressed member when it is a zip archive (torch checkpoints)."""
    data = path.read_bytes()
    yield str(path), data
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED:  # stored members are already in ``data``
                    yield f"{path}!{info.filename}", archive.read(info)


def find_phi(folders: list[Path]) -> list[str]:
    """``"<file>: <text>"`` for every PHI stem or birth date found in any file under ``folders``."""
    hits = []
    for folder in folders:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            for name, data in _contents(file):
                lowered = data.lower()
                hits += [f"{name}: {stem.decode()}" for stem in PHI_STEMS if stem in lowered]
                hits += [f"{name}: {m.group().decode()}" for m in BIRTH_DATE.finditer(data)]
    return hits


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Every log record of the test (any logger, INFO and up, as a run's log file) in ``tmp_path/logs/run.log``."""
    path = tmp_path / "logs" / "run.log"
    path.parent.mkdir()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield path
    root.removeHandler(handler)
    root.setLevel(level)
    handler.close()


def test_no_phi_in_outputs(tmp_path: Path, load_script: Callable, log_file: Path, capsys) -> None:
    raw = tmp_path / "raw"
    write_phi_dicoms(raw)
    # the search finds every stem and birth date in the raw headers (the test can fail)
    found = {hit.rsplit(": ", 1)[1] for hit in find_phi([raw])}
    assert found == {s.decode() for s in PHI_STEMS} | {phi_values(p)["PatientBirthDate"] for p in range(N_PATIENTS)}

    build = load_script("build_manifest").main
    shared = tmp_path / "shared"
    manifest = shared / "ct.csv"
    assert build(["dicom_dir", str(raw), "-o", str(manifest), "--dataset", "ct"]) == 0
    salt_file = Path(f"{manifest}.salt")
    assert salt_file.is_file() and len(salt_file.read_text().strip()) == 64
    salt_file.rename(tmp_path / "ct.csv.salt")  # kept private, outside what is shared
    frame = pd.read_csv(manifest, dtype=str)
    again = tmp_path / "again.csv"
    assert build(["dicom_dir", str(raw), "-o", str(again), "--salt-file", str(tmp_path / "ct.csv.salt")]) == 0
    assert pd.read_csv(again, dtype=str)["case_id"].tolist() == frame["case_id"].tolist()  # stable across builds

    assert not {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"} & set(frame.columns)
    assert frame["case_id"].str.fullmatch(r"pid-[0-9a-f]{16}").all() and frame["case_id"].nunique() == N_PATIENTS
    patient = frame["case_id"].map({c: i for i, c in enumerate(frame["case_id"].drop_duplicates())})
    frame["split"] = np.where(patient >= N_PATIENTS - 2, "val", "train")
    frame["label"] = patient % 2
    frame.to_csv(manifest, index=False)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bundle = BUNDLES / "pretrain"
        flow = ConfigWorkflow(
            config_file=str(bundle / "configs" / "train.json"), workflow_type="train", bundle_root=str(bundle),
            logging_file=False, dataset_dir=str(shared), manifest=str(manifest), output_dir=str(tmp_path / "pretrain"),
            epochs=1, image_size=32, batch_size=6, log_interval=1, knn_k=3,
        )
        flow.initialize()
        flow.run()
        flow.finalize()
        encoder = tmp_path / "pretrain" / "encoder.pt"
        assert encoder.is_file()
        assert load_script("run_cv").main([
            "--manifest", str(manifest), "--label-column", "label", "--init", f"modan={encoder}", "--modes",
            "linear_probe", "--fractions", "100", "--repeats", "1", "--folds", "2", "--epochs", "1", "--batch-size",
            "8", "--image-size", "32", "--val-fraction", "0.5", "--out", str(tmp_path / "cv"),
        ]) == 0
        assert load_script("embed").main([
            "--manifest", str(manifest), "--encoder", f"modan={encoder}", "--out", str(tmp_path / "embed"),
            "--image-size", "32",
        ]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr()
    (tmp_path / "logs" / "console.txt").write_text(printed.out + printed.err)

    outputs = [shared, tmp_path / "pretrain", tmp_path / "cv", tmp_path / "embed", tmp_path / "logs"]
    written = {p.relative_to(tmp_path).as_posix() for d in outputs for p in d.rglob("*") if p.is_file()}
    for expected in ("shared/ct.csv", "pretrain/encoder.pt", "cv/folds.csv", "cv/results.csv", "cv/predictions.csv",
                     "embed/modan_umap.csv", "logs/run.log"):
        assert expected in written, sorted(written)
    assert any(name.endswith("metadata.tsv") for name in written), sorted(written)
    assert any("events.out.tfevents" in name for name in written), sorted(written)
    assert "pid-" in (tmp_path / "embed" / "modan_umap.csv").read_text()
    assert find_phi(outputs) == []
