"""The DICOM builder's pseudonymous ``case_id``, its salt and salt file, and the UID opt-in."""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from pydicom import dcmread
from test_phi import phi_values, write_phi_dicoms

from data_manifests import build_manifest
from data_manifests.dicom_dir import SALT_FILE_ENV, pseudonym

UIDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 patients x 2 CT slices: ``<root>/scans/img000.dcm`` ... ``img005.dcm``."""
    root = tmp_path_factory.mktemp("phi_dicoms")
    write_phi_dicoms(root, n_patients=3, slices=2)
    return root / "scans"


def test_pseudonym_format_salt_and_tag():
    first = pseudonym("PID-1", "salt-a")
    assert re.fullmatch(r"pid-[0-9a-f]{16}", first) and first == pseudonym("PID-1", "salt-a")
    assert first != pseudonym("PID-1", "salt-b") and first != pseudonym("PID-2", "salt-a")
    assert pseudonym("PID-1", "salt-a", "StudyInstanceUID").startswith("study-")
    with pytest.raises(ValueError, match="empty PatientID"):
        pseudonym("", "salt-a")
    with pytest.raises(ValueError, match="unknown tag 'PatientName'"):
        pseudonym("x", "salt-a", "PatientName")


def test_case_id_is_a_salted_pseudonym_and_uids_are_opt_in(scans):
    frame = build_manifest("dicom_dir", scans, salt="secret")
    expected = [pseudonym(phi_values(i // 2)["PatientID"], "secret") for i in range(6)]
    assert frame["case_id"].tolist() == expected and frame["case_id"].nunique() == 3
    assert not set(UIDS) & set(frame.columns)
    text = frame.to_csv()
    assert not any(value in text for p in range(3) for value in phi_values(p).values())
    assert build_manifest("dicom_dir", scans, salt="secret")["case_id"].tolist() == expected
    assert not set(build_manifest("dicom_dir", scans, salt="other")["case_id"]) & set(expected)

    kept = build_manifest("dicom_dir", scans, salt="secret", keep_uids=True)
    header = dcmread(Path(kept["path"][3]), stop_before_pixels=True)
    assert kept[UIDS].iloc[3].tolist() == [str(header[k].value) for k in UIDS]
    assert kept["case_id"].tolist() == expected


def test_study_uid_fallback(scans, tmp_path):
    for name in ("img000.dcm", "img001.dcm"):
        ds = dcmread(scans / name)
        ds.PatientID = ""
        ds.save_as(tmp_path / name)
    frame = build_manifest("dicom_dir", tmp_path, salt="secret")
    study = str(dcmread(tmp_path / "img000.dcm").StudyInstanceUID)
    assert frame["case_id"].tolist() == [pseudonym(study, "secret", "StudyInstanceUID")] * 2


def test_salt_file_created_once_and_reused(scans, tmp_path, caplog):
    salt_file = tmp_path / "keys" / "ct.csv.salt"
    first = build_manifest("dicom_dir", scans, salt_file=salt_file)
    assert f"created the DICOM pseudonym salt file {salt_file}" in caplog.text
    salt = salt_file.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", salt) and stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert build_manifest("dicom_dir", scans, salt_file=salt_file)["case_id"].equals(first["case_id"])
    assert first["case_id"].tolist() == build_manifest("dicom_dir", scans, salt=salt)["case_id"].tolist()


def test_default_salt_file_from_environment(scans, tmp_path, monkeypatch):
    monkeypatch.setenv(SALT_FILE_ENV, str(tmp_path / "user.salt"))
    frame = build_manifest("dicom_dir", scans)
    assert frame["case_id"].tolist() == build_manifest("dicom_dir", scans, salt_file=tmp_path / "user.salt")[
        "case_id"].tolist()


def test_bad_salt_sources_name_the_file(scans, tmp_path):
    (tmp_path / "empty.salt").write_text("\n")
    (tmp_path / "binary.salt").write_bytes(b"\xff\xfe\x00salt")
    (tmp_path / "folder.salt").mkdir()
    with pytest.raises(ValueError, match=rf"salt file {re.escape(str(tmp_path / 'empty.salt'))} is empty"):
        build_manifest("dicom_dir", scans, salt_file=tmp_path / "empty.salt")
    for name in ("binary.salt", "folder.salt"):
        with pytest.raises(ValueError, match=rf"cannot read the DICOM pseudonym salt file .*{name}: \w+Error"):
            build_manifest("dicom_dir", scans, salt_file=tmp_path / name)
    with pytest.raises(ValueError, match="either salt or salt_file, not both"):
        build_manifest("dicom_dir", scans, salt="a", salt_file=tmp_path / "x.salt")
    with pytest.raises(ValueError, match="salt is empty"):
        build_manifest("dicom_dir", scans, salt=" ")


def test_cli_salt_beside_the_manifest_and_options(scans, tmp_path, capsys, load_script):
    main = load_script("build_manifest").main
    out = tmp_path / "m" / "ct.csv"
    assert main(["dicom_dir", str(scans), "-o", str(out), "--keep-uids"]) == 0
    salt = Path(f"{out}.salt").read_text().strip()
    frame = pd.read_csv(out, dtype=str)
    assert set(UIDS) <= set(frame.columns)
    assert frame["case_id"].tolist() == build_manifest("dicom_dir", scans, salt=salt)["case_id"].tolist()
    assert main(["dicom_dir", str(scans), "-o", str(out), "--salt", "s3cret"]) == 0
    assert pd.read_csv(out, dtype=str)["case_id"][0] == pseudonym(phi_values(0)["PatientID"], "s3cret")
    assert not set(UIDS) & set(pd.read_csv(out).columns)
    for args, message in ((["--salt", "a", "--salt-file", "b"], "either --salt or --salt-file"),
                          (["--keep-uids"], "--keep-uids only apply to kind dicom_dir")):
        kind = "busi" if "--keep-uids" in args else "dicom_dir"
        with pytest.raises(SystemExit):
            main([kind, str(scans), "-o", str(out), *args])
        assert message in capsys.readouterr().err


@pytest.fixture()
def git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The git executable, with the user's and the system's configuration (and global excludes) out of the way."""
    executable = shutil.which("git")
    if executable is None:
        pytest.skip("git is not installed")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)
    return executable


def test_salt_file_in_a_work_tree_that_does_not_ignore_it_warns(scans, tmp_path, git, caplog):
    clone = tmp_path / "clone"
    subprocess.run([git, "init", "-q", str(clone)], check=True)
    salt_file = clone / "pretrain.csv.salt"  # where the docs' commands put it: beside a manifest in the clone
    with caplog.at_level(logging.WARNING, logger="data_manifests"):
        build_manifest("dicom_dir", scans, salt_file=salt_file)
    assert f"salt file {salt_file} lies inside a git work tree that does not ignore it" in caplog.text
    caplog.clear()
    (clone / ".gitignore").write_text("*.salt\n")
    outside = tmp_path / "keys" / "ct.salt"  # not in a work tree
    with caplog.at_level(logging.WARNING, logger="data_manifests"):
        build_manifest("dicom_dir", scans, salt_file=salt_file)
        build_manifest("dicom_dir", scans, salt_file=outside)
    assert "git work tree" not in caplog.text


def test_gitignore_covers_salts_and_output_folders(git):
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git clone")
    paths = ["pretrain.csv.salt", "keys/ct.csv.salt", "manifests/busi.csv", "results/busi/summary.csv",
             "runs/modan/encoder.pt", "embeddings/modan.npz", "models/modan/encoder.pt"]
    trust = ["-c", "safe.directory=*"]  # the clone may belong to another user; the user's config is left out above
    result = subprocess.run([git, *trust, "-C", str(REPO), "check-ignore", "--no-index", "--verbose", "--non-matching",
                             *paths], capture_output=True, text=True, check=False)
    assert result.returncode in (0, 1), result.stderr
    assert [line.split("\t")[-1] for line in result.stdout.splitlines() if line.startswith("::")] == []
    tracked = subprocess.run([git, *trust, "-C", str(REPO), "ls-files", "--cached", "--ignored", "--exclude-standard"],
                             capture_output=True, text=True, check=True)
    assert tracked.stdout == "", f"tracked files the .gitignore hides: {tracked.stdout}"
