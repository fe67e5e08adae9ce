from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_manifests import BUILDERS, assign_splits, build_manifest, combine, subsample, summarize
from modan_monai.data.manifest import MANIFEST_COLUMNS, manifest_to_datalist, read_manifest, write_manifest
from modan_monai.data.vocabulary import MetadataVocabulary

REPO = Path(__file__).resolve().parents[2]


def _check_schema(df: pd.DataFrame) -> None:
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])
    assert df[["split", "dataset", "case_id"]].notna().all().all()


def _canonical(df: pd.DataFrame) -> set[tuple[str, str]]:
    vocab = MetadataVocabulary.from_file()
    return {(vocab.canonical("modality", m), vocab.canonical("anatomy", a)) for m, a in zip(df.modality, df.anatomy)}


# ----------------------------------------------------------------------------------------------- real shared data
def test_dicom_dir_shared_tcga(shared_datasets):
    df = build_manifest("dicom_dir", shared_datasets / "ct_tcga_dicom" / "dicom_dir", dataset="ct_tcga")
    _check_schema(df)
    assert len(df) == 100 and set(df.modality) == {"CT"}
    assert set(df.anatomy) == {"CHEST", "LUNG"}  # raw tags, both spellings present
    assert _canonical(df) == {("CT", "chest")}
    assert df.case_id.str.fullmatch(r"pid-[0-9a-f]{16}").all() and df["index"].isna().all()


def test_dicom_dir_content_detection(shared_datasets, tmp_path, caplog):
    sources = sorted((shared_datasets / "ct_tcga_dicom" / "dicom_dir").glob("*.dcm"))[:2]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "IM0001").symlink_to(sources[0])  # DICOM without suffix
    (tmp_path / "b.dcm").symlink_to(sources[1])
    (tmp_path / "notes.dcm").write_text("not a dicom file")  # suffix lies
    with pytest.raises(ValueError, match=r"1 file\(s\) are not DICOM.*notes\.dcm"):
        build_manifest("dicom_dir", tmp_path)
    with caplog.at_level(logging.WARNING, logger="data_manifests"):
        df = build_manifest("dicom_dir", tmp_path, ignore_non_dicom=True, split="val")
    assert "ignored 1 non-DICOM" in caplog.text and "notes.dcm" in caplog.text
    assert sorted(Path(p).name for p in df.path) == ["IM0001", "b.dcm"] and set(df.split) == {"val"}


def test_busi_shared(shared_datasets):
    df = build_manifest("busi", shared_datasets / "busi")
    _check_schema(df)
    assert df.label.value_counts().to_dict() == {"benign": 437, "malignant": 210, "normal": 133}
    assert df.loc[df.label == "malignant", "malignant"].eq(1).all()
    assert df.loc[df.label == "benign", "malignant"].eq(0).all()
    assert df.loc[df.label == "normal", "malignant"].isna().all()
    assert _canonical(df) == {("US", "breast")}


def test_busi_skips_masks(tmp_path):
    for name in ("benign", "malignant", "normal"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name} (1).png").write_bytes(b"x")
        (tmp_path / name / f"{name} (1)_mask.png").write_bytes(b"x")
        (tmp_path / name / f"{name} (1)_mask_1.png").write_bytes(b"x")
    df = build_manifest("busi", tmp_path)
    assert sorted(df.case_id) == ["benign (1)", "malignant (1)", "normal (1)"]
    (tmp_path / "normal" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="readme.txt"):
        build_manifest("busi", tmp_path)


def test_medmnist_shared(shared_datasets):
    df = build_manifest("medmnist", shared_datasets / "pneumoniamnist" / "pneumoniamnist.npz")
    _check_schema(df)
    assert df.split.value_counts().to_dict() == {"train": 4707, "test": 624, "val": 524}
    assert set(df.key) == {"train_images", "val_images", "test_images"}
    with np.load(shared_datasets / "pneumoniamnist" / "pneumoniamnist.npz") as z:
        np.testing.assert_allclose(df.loc[df.split == "val", "label"].to_numpy(), z["val_labels"][:, 0])
    assert df.case_id.iloc[0] == "train-0" and df["index"].iloc[-1] == 623
    assert _canonical(df) == {("XR", "chest")}


def test_medmnist_multilabel_and_unknown_flavour(tmp_path):
    arrays = {f"{s}_images": np.zeros((n, 28, 28), np.uint8) for s, n in (("train", 3), ("val", 1), ("test", 2))}
    arrays.update({f"{s}_labels": np.ones((n, 4), np.uint8) for s, n in (("train", 3), ("val", 1), ("test", 2))})
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    df = build_manifest("medmnist", tmp_path)  # folder with one npz
    assert [c for c in df.columns if c.startswith("label")] == ["label_0", "label_1", "label_2", "label_3"]
    assert len(df) == 6
    np.savez(tmp_path / "sub_mystery.npz", **arrays)
    with pytest.raises(ValueError, match="unknown flavour 'sub_mystery'"):
        build_manifest("medmnist", tmp_path / "sub_mystery.npz")
    df = build_manifest("medmnist", tmp_path / "sub_mystery.npz", modality="CT", anatomy="head")
    assert set(df.modality) == {"CT"} and set(df.dataset) == {"sub_mystery"}


def test_jsrt_shared(shared_datasets):
    df = build_manifest("jsrt", shared_datasets / "jsrt_scr")
    _check_schema(df)
    assert len(df) == 247 and df.nodule.sum() == 154
    for s in ("heart", "left_lung", "right_lung", "left_clavicle", "right_clavicle"):
        assert all(Path(p).name == Path(q).name for p, q in zip(df.path, df[f"mask_{s}"]))
    assert _canonical(df) == {("XR", "chest")}


def test_jsrt_missing_mask(tmp_path):
    (tmp_path / "images_1024").mkdir()
    (tmp_path / "images_1024" / "JPCNN001.png").write_bytes(b"x")
    (tmp_path / "masks_1024" / "heart").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="heart mask not found"):
        build_manifest("jsrt", tmp_path, structures=("heart",))
    df = build_manifest("jsrt", tmp_path, structures=("heart",), allow_missing_masks=True)
    assert df.mask_heart.isna().all() and df.nodule.tolist() == [0]


def test_head_ct_shared(shared_datasets):
    df = build_manifest("head_ct", shared_datasets / "head_ct_hemorrhage")
    _check_schema(df)
    assert len(df) == 200 and df.hemorrhage.sum() == 100
    assert df.case_id.iloc[0] == "000" and Path(df.path.iloc[0]).name == "000.png"
    assert _canonical(df) == {("CT", "head")}


@pytest.mark.parametrize("problem,match", [("label", "without an image"), ("image", "without a row")])
def test_head_ct_mismatch(tmp_path, problem, match):
    (tmp_path / "head_ct").mkdir()
    for i in range(3):
        (tmp_path / "head_ct" / f"{i:03d}.png").write_bytes(b"x")
    ids = [0, 1, 2, 3] if problem == "label" else [0, 1]
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n" + "".join(f"{i},{i % 2}\n" for i in ids))
    with pytest.raises(ValueError, match=match):
        build_manifest("head_ct", tmp_path)


# ----------------------------------------------------------------------------------------------- generated trees
def _mrnet_tree(root: Path, cases: dict[str, list[int]], tasks=("acl", "abnormal", "meniscus")) -> None:
    rng = np.random.default_rng(0)
    for folder, ids in cases.items():
        for plane in ("axial", "coronal", "sagittal"):
            (root / folder / plane).mkdir(parents=True)
            for case in ids:
                volume = rng.integers(0, 256, size=(int(rng.integers(3, 6)), 256, 256), dtype=np.uint8)
                np.save(root / folder / plane / f"{case:04d}.npy", volume)
        for task in tasks:
            (root / f"{folder}-{task}.csv").write_text("".join(f"{case},{case % 2}\n" for case in ids))


def test_mrnet_tree(tmp_path):
    _mrnet_tree(tmp_path, {"train": [0, 1], "valid": [1130]})
    df = build_manifest("mrnet", tmp_path)
    _check_schema(df)
    assert len(df) == 9 and df["index"].isna().all()
    assert set(df.case_id) == {"train-0000", "train-0001", "valid-1130"}
    assert df.groupby("case_id").plane.nunique().eq(3).all()
    assert df.loc[df.case_id == "valid-1130", "split"].eq("val").all()
    assert df.loc[df.case_id == "train-0001", ["acl", "abnormal", "meniscus"]].eq(1).all().all()
    assert _canonical(df) == {("MR", "knee")}
    df = build_manifest("mrnet", tmp_path, planes=("sagittal",))
    assert len(df) == 3 and set(df.plane) == {"sagittal"}
    assert np.load(df.path.iloc[0], mmap_mode="r").shape[1:] == (256, 256)


def test_mrnet_errors(tmp_path):
    _mrnet_tree(tmp_path, {"train": [0, 1]}, tasks=("acl",))
    df = build_manifest("mrnet", tmp_path, folders=("train",))
    assert "acl" in df.columns and "meniscus" not in df.columns
    (tmp_path / "train-acl.csv").write_text("0,0\n")
    with pytest.raises(ValueError, match=r"train-acl\.csv: exams without a label 0001"):
        build_manifest("mrnet", tmp_path, folders=("train",))
    (tmp_path / "train-acl.csv").write_text("0,0\n1,1\n")
    (tmp_path / "train" / "coronal" / "0001.npy").unlink()
    with pytest.raises(ValueError, match="no coronal volume"):
        build_manifest("mrnet", tmp_path, folders=("train",))
    np.save(tmp_path / "train" / "coronal" / "0001.npy", np.zeros((3, 256, 256), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"folder\(s\) \['valid'\] not found; expected folders \['train', "
                                                 r"'valid'\]; found folders \['train'\]"):
        build_manifest("mrnet", tmp_path)


def test_radimagenet_tree(tmp_path):
    for rel in ("CT/lung/normal/lung-normal000001.png", "CT/abd/cyst/abd-cyst01.png", "MR/af/normal/af-n1.png",
                "US/thyroid/nodule/us1.png", "MR/brain/normal/b1.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    df = build_manifest("radimagenet", tmp_path)
    _check_schema(df)
    assert _canonical(df) == {("CT", "chest"), ("CT", "abdomen"), ("MR", "ankle"), ("US", "thyroid"), ("MR", "head")}
    assert set(df.label) == {"normal", "cyst", "nodule"}
    (tmp_path / "CT" / "elbow" / "x").mkdir(parents=True)
    (tmp_path / "CT" / "elbow" / "x" / "e.png").write_bytes(b"x")
    df = build_manifest("radimagenet", tmp_path)
    with pytest.raises(ValueError, match="unknown anatomy value 'elbow'.*known anatomy values"):
        MetadataVocabulary.from_file().encode(df.iloc[-1].to_dict() | {"anatomy": "elbow"})
    (tmp_path / "CT" / "stray.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="CT/stray.png"):
        build_manifest("radimagenet", tmp_path)


# ----------------------------------------------------------------------------------------------- helpers, registry
def test_registry_and_options(tmp_path):
    assert {"dicom_dir", "busi", "medmnist", "jsrt", "head_ct", "mrnet", "radimagenet"} <= set(BUILDERS)
    with pytest.raises(ValueError, match="unknown manifest builder"):
        build_manifest("nope", tmp_path)
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['split'\]"):
        build_manifest("mrnet", tmp_path, split="train")


def test_combine_subsample_roundtrip(shared_datasets, tmp_path):
    a = build_manifest("head_ct", shared_datasets / "head_ct_hemorrhage")
    b = subsample(build_manifest("medmnist", shared_datasets / "pneumoniamnist"), 10, seed=3)
    assert b.equals(subsample(build_manifest("medmnist", shared_datasets / "pneumoniamnist"), 10, seed=3))
    both = combine([a, b])
    assert len(both) == 210 and str(both["hemorrhage"].dtype) == "Int64" and str(both["label"].dtype) == "Int64"
    with pytest.raises(ValueError, match="same image entry twice"):
        combine([a, a])
    out = write_manifest(both, tmp_path / "m.csv")
    items = manifest_to_datalist(read_manifest(out))
    assert items[0]["hemorrhage"] == 1 and items[0]["label"] is None and items[-1]["index"] is not None
    summary = summarize(both)
    assert summary.rows.sum() == 210 and set(summary.dataset) == {"head_ct", "pneumoniamnist"}


# ----------------------------------------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(REPO / "scripts" / "build_manifest.py"), *args], env=env,
                          capture_output=True, text=True, check=False)


def test_cli_head_ct(shared_datasets, tmp_path):
    out = tmp_path / "m" / "head.csv"
    proc = _cli("head_ct", str(shared_datasets / "head_ct_hemorrhage"), "-o", str(out), "--dataset", "hct",
                "--split", "test")
    assert proc.returncode == 0, proc.stderr
    df = read_manifest(out)
    assert len(df) == 200 and set(df.dataset) == {"hct"} and set(df.split) == {"test"}
    assert "hct" in proc.stdout and "200" in proc.stdout


def test_cli_in_process(shared_datasets, tmp_path, capsys, load_script):
    main = load_script("build_manifest").main
    out = tmp_path / "pretrain.csv"
    assert main(["mrnet", str(tmp_path), "-o", str(out)]) == 1
    assert "MRNet" in capsys.readouterr().err
    assert main(["shared-pretrain", str(shared_datasets), "-o", str(out), "--exclude", "pneumoniamnist",
                 "head_ct"]) == 0
    assert set(read_manifest(out).dataset) == {"jsrt", "ct_tcga", "knee_kl", "bccd_blood", "ham10000", "retinamnist"}
    assert main(["radimagenet", str(tmp_path), "-o", str(out), "--opt", "dataset=x", "--opt", "bogus=1"]) == 1
    assert "does not take option(s) ['bogus']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "BUSI is NOT included" in " ".join(capsys.readouterr().out.split())


def test_cli_shared_pretrain(shared_datasets, tmp_path):
    out = tmp_path / "pretrain.csv"
    proc = _cli("shared-pretrain", str(shared_datasets), "-o", str(out), "--max-per-dataset", "20", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    df = read_manifest(out)
    assert df.dataset.value_counts().to_dict() == dict.fromkeys(_SHARED_DATASETS, 20)
    assert not df.path.str.contains("/busi/").any() and "busi" not in set(df.dataset)
    assert _canonical(df) == _SHARED_PAIRS


_SHARED_DATASETS = ("pneumoniamnist", "jsrt", "ct_tcga", "head_ct", "knee_kl", "bccd_blood", "ham10000", "retinamnist")
_SHARED_PAIRS = {("XR", "chest"), ("CT", "chest"), ("CT", "head"), ("XR", "knee"), ("SM", "blood"), ("DMS", "skin"),
                 ("OP", "eye")}  # the eighth pair of ../shared, US / breast, is BUSI's: never pretrained on


def test_shared_pretrain_val_holds_every_pair_grouped_by_case(shared_datasets):
    from data_manifests import shared_pretrain

    df = shared_pretrain.build(shared_datasets, max_per_dataset=20, seed=1, salt="test-salt")
    pairs = pd.Series(shared_pretrain._pairs(df), index=df.index)
    assert set(pairs[df.split == "val"]) == set(pairs) == _SHARED_PAIRS
    assert set(pairs[df.split == "train"]) == set(pairs)  # every pair still trains
    assert df.split.groupby(df.dataset + "/" + df.case_id).nunique().max() == 1  # a case in one split
    assert df.dataset.value_counts().to_dict() == dict.fromkeys(_SHARED_DATASETS, 20)
    kept = shared_pretrain.build(shared_datasets, max_per_dataset=20, seed=1, salt="test-salt", val_fraction=0)
    assert set(kept.loc[~kept.dataset.isin(["pneumoniamnist", "retinamnist"]), "split"]) == {"train"}  # own splits


def test_hold_out_val_per_canonical_pair_seeded():
    from data_manifests.shared_pretrain import hold_out_val

    frame = pd.DataFrame({
        "path": [f"/d/{i}.png" for i in range(16)],
        "modality": ["CT"] * 8 + ["XR"] * 8,
        "anatomy": ["CHEST", "LUNG"] * 4 + ["chest"] * 8,  # CHEST and LUNG: one pair
        "split": ["train"] * 8 + ["train"] * 6 + ["val", "test"],
        "dataset": ["ct"] * 8 + ["xr"] * 8,
        "case_id": [f"c{i // 2}" for i in range(8)] + [f"x{i}" for i in range(8)],
    })
    out = hold_out_val(frame, val_fraction=0.25, seed=0)
    ct = out[out.dataset == "ct"]
    assert ct.groupby("case_id").split.nunique().max() == 1  # the two images of a case move together
    assert ct.drop_duplicates("case_id").split.value_counts().to_dict() == {"train": 3, "val": 1}
    assert out[out.dataset == "xr"].split.tolist() == frame[frame.dataset == "xr"].split.tolist()  # had a val row
    assert hold_out_val(frame, val_fraction=0.25, seed=0).split.tolist() == out.split.tolist()
    assert frame.split.eq("val").sum() == 1  # the input is not modified
    assert hold_out_val(frame, val_fraction=0).split.tolist() == frame.split.tolist()
    with pytest.raises(ValueError, match=r"pair \('CT', 'chest'\) \(dataset\(s\) \['ct'\]\) has 1 training case"):
        hold_out_val(frame[frame.case_id.isin(["c0"]) | (frame.dataset == "xr")], val_fraction=0.25)
    with pytest.raises(ValueError, match="val_fraction must be a number in"):
        hold_out_val(frame, val_fraction=1.0)
    assert hold_out_val(frame, val_fraction="0.25", seed=0).split.tolist() == out.split.tolist()  # --opt text


def test_assign_splits_grouped_seeded_and_order_free():
    frame = pd.DataFrame({"path": [f"/d/{i}.png" for i in range(30)], "case_id": [f"c{i // 2}" for i in range(30)],
                          "split": "train"})
    out = assign_splits(frame, {"train": 0.6, "val": 0.1, "test": 0.3}, seed=3)
    assert out.groupby("case_id").split.nunique().max() == 1  # both images of a case in one split
    assert out.drop_duplicates("case_id").split.value_counts().to_dict() == {"train": 10, "test": 4, "val": 1}
    shuffled = assign_splits(frame.sample(frac=1.0, random_state=0), {"train": 0.6, "val": 0.1, "test": 0.3}, seed=3)
    assert shuffled.sort_index().split.tolist() == out.split.tolist()
    assert assign_splits(frame, {"train": 0.6, "val": 0.1, "test": 0.3}, seed=4).split.tolist() != out.split.tolist()
    assert frame.split.eq("train").all()  # the input is not modified
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(frame, {"train": 0.6, "test": 0.3})
    with pytest.raises(ValueError, match=r"\['val'\] get no case out of 15"):
        assign_splits(frame, {"train": 0.8, "val": 0.01, "test": 0.19})


def test_cli_split_fractions(shared_datasets, tmp_path, capsys, load_script):
    main = load_script("build_manifest").main
    out = tmp_path / "jsrt.csv"
    args = ["jsrt", str(shared_datasets / "jsrt_scr"), "-o", str(out),
            "--split-fractions", "train=0.6,val=0.1,test=0.3"]
    assert main(args) == 0
    df = read_manifest(out)
    assert df.split.value_counts().to_dict() == {"train": 149, "test": 74, "val": 24}
    assert main(args + ["--seed", "1"]) == 0
    assert read_manifest(out).split.tolist() != df.split.tolist()
    with pytest.raises(SystemExit):
        main(["jsrt", str(shared_datasets / "jsrt_scr"), "-o", str(out), "--split-fractions", "train:0.6"])
    assert "expected name=fraction" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- layout refusals
def _npz(path: Path, **arrays) -> None:
    np.savez(path, **{k: np.zeros(v, np.uint8) for k, v in arrays.items()})


_SPLIT_ARRAYS = {f"{s}_images": (2, 4, 4) for s in ("train", "val", "test")}

# kind, files to create (relative; "name/" = empty folder, "*.npz": see _npz), options, error, message parts
LAYOUT_REFUSALS = {
    "busi_yes_no": ("busi", ["yes/a.png", "no/b.png"], {}, FileNotFoundError,
                    ["['benign', 'malignant', 'normal'] not found", "found folders ['no', 'yes']"]),
    "busi_extra_class": ("busi", ["benign/a.png", "malignant/b.png", "normal/c.png", "yes/d.png"], {}, ValueError,
                         ["unexpected folder(s) ['yes']", "expected folders ['benign', 'malignant', 'normal']"]),
    "busi_masks_only": ("busi", ["benign/a_mask.png", "malignant/b.png", "normal/c.png"], {}, ValueError,
                        ["benign: no images, only 1 mask file(s)"]),
    "busi_classes_option": ("busi", ["yes/a.png"], {"classes": ("yes",)}, ValueError,
                            ["unknown classes ['yes']", "['benign', 'malignant', 'normal']"]),
    "head_ct_extra_folder": ("head_ct", ["head_ct/000.png", "scans/001.png", "labels.csv"], {}, ValueError,
                             ["unexpected folder(s) ['scans']", "expected folders ['head_ct'] only"]),
    "head_ct_no_images": ("head_ct", ["head_ct/", "labels.csv"], {}, ValueError,
                          ["head CT images", "no images; expected NNN.png"]),
    "jsrt_wrong_types": ("jsrt", ["images_1024/JPCLN001.dcm", "masks_1024/heart/"], {"structures": ("heart",)},
                         ValueError, ["unexpected file type(s) ['.dcm']", "JPCLN001.dcm", ".png"]),
    "jsrt_unknown_mask_folder": ("jsrt", ["images_1024/JPCLN001.png", "masks_1024/heart/JPCLN001.png",
                                          "masks_1024/lungs/"], {"structures": ("heart",)}, ValueError,
                                 ["unexpected folder(s) ['lungs']", "'left_lung'", "found folders ['heart', 'lungs']"]),
    "medmnist_no_labels": ("medmnist", ["pneumoniamnist.npz"], {}, ValueError,
                           ["['train_labels', 'val_labels', 'test_labels'] not found",
                            "found ['test_images', 'train_images', 'val_images']"]),
    "medmnist_not_npz": ("medmnist", ["pneumoniamnist.npy"], {}, ValueError,
                         ["expected a MedMNIST .npz file", "found a .npy file"]),
    "mrnet_plane_case": ("mrnet", ["train/Axial/0000.npy"], {"folders": ("train",), "planes": ("axial",)},
                         FileNotFoundError, ["['axial'] not found", "found folders ['Axial']"]),
    "mrnet_no_exams": ("mrnet", ["train/axial/"], {"folders": ("train",), "planes": ("axial",)}, ValueError,
                       ["MRNet train/axial", "no images; expected NNNN.npy"]),
    "radimagenet_modality": ("radimagenet", ["XR/chest/normal/a.png", "CT/lung/normal/b.png"], {}, ValueError,
                             ["unexpected folder(s) ['XR']", "expected folders ['CT', 'MR', 'US'] only"]),
    "radimagenet_empty": ("radimagenet", ["CT/lung/normal/"], {}, ValueError,
                          ["no images; expected <modality>/<anatomy>/<class>/<image>.png", "found folders ['CT']"]),
    "shared_pretrain_sources": ("shared_pretrain", ["busi/benign/a.png", "jsrt_scr/"], {}, FileNotFoundError,
                                ["'pneumoniamnist/pneumoniamnist.npz'", "'ct_tcga_dicom/dicom_dir'", "'knee_kl'",
                                 "'bccd_blood'", "'ham10000_sample'", "'retinamnist/retinamnist.npz'",
                                 "found folders ['busi', 'jsrt_scr']"]),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_REFUSALS))
def test_builders_refuse_an_undocumented_layout(tmp_path, case):
    kind, files, options, error, parts = LAYOUT_REFUSALS[case]
    for rel in files:
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            target.mkdir(exist_ok=True)
        elif rel.endswith(".npz"):
            _npz(target, **_SPLIT_ARRAYS)
        else:
            target.write_bytes(b"x")
    root = tmp_path / files[0] if kind == "medmnist" else tmp_path
    with pytest.raises(error) as err:
        build_manifest(kind, root, **options)
    message = str(err.value)
    for part in parts:
        assert part in message, message


def test_mrnet_partial_copy(tmp_path, caplog):
    _mrnet_tree(tmp_path, {"train": [0, 1, 2]}, tasks=("acl",))
    (tmp_path / "train-acl.csv").write_text("0,0\n1,1\n2,0\n3,1\n4,0\n")  # the full CSV, 2 exams not copied
    (tmp_path / "train" / "axial" / "0002.npy").unlink()  # exam 2 lacks a plane
    with pytest.raises(ValueError, match="no axial volume.*partial=true"):
        build_manifest("mrnet", tmp_path, folders=("train",))
    with caplog.at_level("INFO", logger="data_manifests"):
        df = build_manifest("mrnet", tmp_path, folders=("train",), partial=True)
    assert set(df.case_id) == {"train-0000", "train-0001"} and len(df) == 6
    assert "1 exam(s) lack a requested plane" in caplog.text and "3 of 5 label rows have no complete exam" in caplog.text
    (tmp_path / "train-acl.csv").write_text("0,0\n")  # a volume without a label stays an error
    with pytest.raises(ValueError, match="exams without a label 0001"):
        build_manifest("mrnet", tmp_path, folders=("train",), partial=True)


@pytest.mark.parametrize("partial", [False, True])
def test_mrnet_folder_without_label_csvs_is_refused(tmp_path, partial):
    """Train exams beside valid-only label CSVs would be written with empty label cells: refused, naming the CSVs."""
    _mrnet_tree(tmp_path, {"train": [0, 1], "valid": [1130]})
    for task in ("acl", "abnormal", "meniscus"):
        (tmp_path / f"train-{task}.csv").unlink()
    with pytest.raises(ValueError) as err:
        build_manifest("mrnet", tmp_path, partial=partial)
    message = str(err.value)
    assert "label CSV(s) ['train-abnormal.csv', 'train-acl.csv', 'train-meniscus.csv'] not found" in message
    assert "empty label cells" in message and "--opt folders=valid" in message
    (tmp_path / "train-acl.csv").write_text("0,0\n1,1\n")  # one task labelled for train only
    with pytest.raises(ValueError, match=r"\['train-abnormal\.csv', 'train-meniscus\.csv'\] not found"):
        build_manifest("mrnet", tmp_path, partial=partial)
    labelled = build_manifest("mrnet", tmp_path, folders=("valid",), partial=partial)
    assert labelled[["abnormal", "acl", "meniscus"]].notna().all().all() and len(labelled) == 3
