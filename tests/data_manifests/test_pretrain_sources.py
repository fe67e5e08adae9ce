"""The pretraining sources beyond radiology: knee KL grades, flat image folders (BCCD), HAM10000, RGB MedMNIST."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_manifests import BUILDERS, build_manifest, shared_pretrain
from data_manifests.shared_pretrain import PRETRAIN_SOURCES, hold_out_val
from modan_monai.data.manifest import MANIFEST_COLUMNS

#: the (modality, anatomy) pairs of the shared corpus: the eighth pair of ../shared, US / breast, is BUSI's.
SHARED_PAIRS = {("XR", "chest"), ("CT", "chest"), ("CT", "head"), ("XR", "knee"), ("SM", "blood"), ("DMS", "skin"),
                ("OP", "eye")}
NEW_SOURCES = {"knee_kl": "knee_kl", "bccd_blood": "bccd_blood", "ham10000": "ham10000_sample",
               "retinamnist": "retinamnist/retinamnist.npz"}


def _image(path: Path, rgb: bool = False, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3) if rgb else (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return path


def _knee_tree(root: Path) -> Path:
    for grade, names in {"KL0": ["9001L", "9001R"], "KL1": ["9002L"], "KL2": ["9003R"], "KL3": ["9004L"],
                         "KL4": ["9005R", "9006L"]}.items():
        for name in names:
            _image(root / grade / f"{name}.png")
    return root


def _ham_tree(root: Path) -> Path:
    for stem in ("ISIC_1", "ISIC_2", "ISIC_3"):
        _image(root / f"{stem}.jpg", rgb=True)
    (root / "HAM10000_metadata_subset.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_1,ISIC_1,nv,histo,50.0,male,back\nHAM_1,ISIC_2,nv,histo,50.0,male,back\nHAM_2,ISIC_3,mel,histo,60.0,"
        "female,face\n")
    return root


# ----------------------------------------------------------------------------------------------- knee KL
def test_knee_kl_groups_both_knees_of_a_patient(tmp_path):
    df = build_manifest("knee_kl", _knee_tree(tmp_path / "knee"))
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS) and "label" not in df.columns
    assert df.case_id.tolist() == ["9001", "9001", "9002", "9003", "9004", "9005", "9006"]  # patient, not knee
    assert df.kl_grade.tolist() == [0, 0, 1, 2, 3, 4, 4] and str(df.kl_grade.dtype) == "int64"
    assert df.laterality.tolist() == ["L", "R", "L", "R", "L", "R", "L"]
    assert set(zip(df.modality, df.anatomy)) == {("XR", "knee")} and set(df.dataset) == {"knee_kl"}


@pytest.mark.parametrize(
    "change,error,parts",
    [
        ("rm KL4", FileNotFoundError, ["['KL4'] not found", "expected folders ['KL0', 'KL1', 'KL2', 'KL3', 'KL4']"]),
        ("mkdir KL5", ValueError, ["unexpected folder(s) ['KL5']"]),
        ("name KL1/9002.png", ValueError, ["KL1/9002.png: the file name must be <patient id><L|R>"]),
    ],
)
def test_knee_kl_refusals_name_the_folder_or_file(tmp_path, change, error, parts):
    root = _knee_tree(tmp_path / "knee")
    action, target = change.split(" ")
    if action == "rm":
        for file in (root / target).iterdir():
            file.unlink()
        (root / target).rmdir()
    elif action == "mkdir":
        _image(root / target / "9007L.png")
    else:
        _image(root / target)
    with pytest.raises(error) as err:
        build_manifest("knee_kl", root)
    for part in parts:
        assert part in str(err.value), str(err.value)


# ----------------------------------------------------------------------------------------------- flat image folder
def test_image_folder_reads_images_and_skips_other_files(tmp_path, caplog):
    root = tmp_path / "bccd"
    for i in range(3):
        _image(root / f"BloodImage_{i:05d}.jpg", rgb=True)
    (root / "LICENSE.BCCD_Dataset").write_text("MIT")
    with caplog.at_level("INFO", logger="data_manifests"):
        df = build_manifest("image_folder", root, modality="SM", anatomy="blood", dataset="bccd_blood")
    assert len(df) == 3 and df.case_id.tolist() == ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"]
    assert set(zip(df.modality, df.anatomy, df.split, df.dataset)) == {("SM", "blood", "train", "bccd_blood")}
    assert "LICENSE.BCCD_Dataset" in caplog.text
    with pytest.raises(ValueError, match=r"option\(s\) \['anatomy'\] required"):
        build_manifest("image_folder", root, modality="SM")
    _image(root / "sub" / "x.png")
    with pytest.raises(ValueError, match=r"bccd: unexpected sub-folder\(s\) sub"):
        build_manifest("image_folder", root, modality="SM", anatomy="blood")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("x")
    with pytest.raises(ValueError, match=r"empty: no images.*files: 1 \(no suffix\)"):
        build_manifest("image_folder", tmp_path / "empty", modality="SM", anatomy="blood")


# ----------------------------------------------------------------------------------------------- HAM10000
def test_ham10000_case_is_the_lesion(tmp_path):
    df = build_manifest("ham10000", _ham_tree(tmp_path / "ham"))
    assert df.case_id.tolist() == ["HAM_1", "HAM_1", "HAM_2"] and df.dx.tolist() == ["nv", "nv", "mel"]
    assert set(zip(df.modality, df.anatomy)) == {("DMS", "skin")} and set(df.dataset) == {"ham10000"}


@pytest.mark.parametrize(
    "problem,error,match",
    [
        ("no_csv", FileNotFoundError, r"exactly one HAM10000_metadata\*\.csv"),
        ("no_row", ValueError, r"images without a row in .*HAM10000_metadata_subset\.csv: ISIC_4\.jpg"),
        ("no_image", ValueError, r"image_id\(s\) without an image in .*: ISIC_3"),
        ("no_dx", ValueError, r"HAM10000_metadata_subset\.csv line 3: empty 'dx'"),
        ("columns", ValueError, r"missing column\(s\) \['lesion_id'\]"),
        ("not_utf8", ValueError, r"HAM10000 metadata .*HAM10000_metadata_subset\.csv: not a readable UTF-8 CSV"),
    ],
)
def test_ham10000_refusals_name_the_file_or_row(tmp_path, problem, error, match):
    root = _ham_tree(tmp_path / "ham")
    csv = root / "HAM10000_metadata_subset.csv"
    text = csv.read_text()
    if problem == "no_csv":
        csv.unlink()
    elif problem == "no_row":
        _image(root / "ISIC_4.jpg", rgb=True)
    elif problem == "no_image":
        (root / "ISIC_3.jpg").unlink()
        _image(root / "ISIC_4.jpg", rgb=True)
        csv.write_text(text + "HAM_3,ISIC_4,df,histo,1,male,back\n")
    elif problem == "not_utf8":
        csv.write_bytes(b"lesion_id,image_id,dx\n\xff\xfe,ISIC_1,nv\n")
    elif problem == "no_dx":
        csv.write_text(text.replace("HAM_1,ISIC_2,nv", "HAM_1,ISIC_2,"))
    else:
        csv.write_text(text.replace("lesion_id,", "lesion,"))
    with pytest.raises(error, match=match):
        build_manifest("ham10000", root)


def test_ham10000_other_files_are_logged_not_read(tmp_path, caplog):
    root = _ham_tree(tmp_path / "ham")
    (root / "LICENSE.txt").write_text("x")
    with caplog.at_level(logging.INFO, logger="data_manifests"):
        df = build_manifest("ham10000", root)
    assert len(df) == 3
    assert "1 file(s) besides the images and HAM10000_metadata_subset.csv are not read: LICENSE.txt" in caplog.text


# ----------------------------------------------------------------------------------------------- RGB MedMNIST
def test_medmnist_rgb_flavour_and_label_column(tmp_path):
    npz = tmp_path / "retinamnist.npz"
    arrays = {f"{s}_images": np.zeros((n, 4, 4, 3), np.uint8) for s, n in (("train", 3), ("val", 1), ("test", 2))}
    arrays.update({f"{s}_labels": np.arange(n).reshape(n, 1) for s, n in (("train", 3), ("val", 1), ("test", 2))})
    np.savez(npz, **arrays)
    df = build_manifest("medmnist", npz, label_column="dr_grade")
    assert set(zip(df.modality, df.anatomy)) == {("OP", "eye")} and "label" not in df.columns
    assert df.dr_grade.tolist() == [0, 1, 2, 0, 0, 1] and df.split.value_counts().to_dict() == {"train": 3,
                                                                                               "test": 2, "val": 1}
    assert build_manifest("medmnist", npz).label.tolist() == df.dr_grade.tolist()
    with pytest.raises(ValueError, match="label_column must be a new column name, got 'split'"):
        build_manifest("medmnist", npz, label_column="split")


# ----------------------------------------------------------------------------------------------- the corpus
def test_pretrain_sources_list_the_new_datasets():
    assert {name: PRETRAIN_SOURCES[name][0] for name in NEW_SOURCES} == NEW_SOURCES
    assert {"knee_kl", "image_folder", "ham10000"} <= set(BUILDERS)


def test_hold_out_val_keeps_a_knee_patient_in_one_split(tmp_path):
    frame = build_manifest("knee_kl", _knee_tree(tmp_path / "knee"))
    for seed in range(5):
        out = hold_out_val(frame, val_fraction=0.4, seed=seed)
        assert out.groupby("case_id").split.nunique().max() == 1 and set(out.split) == {"train", "val"}


def test_shared_pretrain_real_corpus_has_every_pair_in_train_and_val(shared_datasets):
    df = shared_pretrain.build(shared_datasets, max_per_dataset=60, seed=0, salt="test-salt")
    pairs = pd.Series(shared_pretrain._pairs(df), index=df.index)
    assert set(pairs[df.split == "train"]) == SHARED_PAIRS and set(pairs[df.split == "val"]) == SHARED_PAIRS
    cases = df.dataset + "/" + df.case_id.astype(str)
    assert df.split.groupby(cases).nunique().max() == 1  # a knee patient / HAM lesion in one split
    knee = df[df.dataset == "knee_kl"]
    assert knee.kl_grade.isin(range(5)).all() and set(knee.laterality) == {"L", "R"}
    assert df.loc[df.dataset == "ham10000", "dx"].notna().all()
    assert df.loc[df.dataset == "retinamnist", "dr_grade"].between(0, 4).all()
    assert not df.path.str.contains("/busi/").any()
    full_knee = build_manifest("knee_kl", shared_datasets / "knee_kl")
    assert full_knee.case_id.nunique() < len(full_knee)  # some patients have both knees: one case each


def test_cli_help_lists_the_new_sources(capsys, load_script):
    with pytest.raises(SystemExit):
        load_script("build_manifest").main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "ct_tcga, head_ct, knee_kl, bccd_blood, ham10000, retinamnist)" in text
    assert "knee_kl (XR/knee; case = patient)" in text and "retinamnist (OP/eye)" in text
