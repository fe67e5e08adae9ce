"""The generic layout builders (class folders, image + mask folders), symlinked trees and the parallel DICOM scan."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_manifests import BUILDERS, build_manifest
from data_manifests._common import walk_files
from modan_monai.data import load_datalist
from modan_monai.data.manifest import MANIFEST_COLUMNS, write_manifest
from modan_monai.data.segmentation import segmentation_transforms
from modan_monai.data.vocabulary import MetadataVocabulary


def _image(path: Path, value: int = 128, size: int = 12) -> Path:
    """A tiny grey image (format from the suffix, any case); parents created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size), value, np.uint8)
    pixels[: size // 2] = 255 - value
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF", ".bmp": "BMP"}
    Image.fromarray(pixels).save(path, format=fmt.get(path.suffix.lower(), "PNG"))
    return path


def _mask(path: Path, size: int = 12) -> Path:
    """A tiny 0/255 mask; GIFs are palette images, as retina datasets ship them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size, size), np.uint8)
    pixels[2:7, 3:9] = 255
    image = Image.fromarray(pixels)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        image.convert("P").save(path, format="GIF")
    else:
        image.save(path, format={".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, "PNG"))
    return path


def _canonical(frame: pd.DataFrame) -> set[tuple[str, str]]:
    vocab = MetadataVocabulary.from_file()
    return {(vocab.canonical("modality", m), vocab.canonical("anatomy", a)) for m, a in zip(frame.modality,
                                                                                             frame.anatomy)}


@pytest.fixture()
def isic_like(tmp_path: Path) -> Path:
    """``melanoma/`` and ``nevus/`` with mixed-case suffixes and a README at the root."""
    root = tmp_path / "isic"
    for rel in ("melanoma/P01_a.PNG", "melanoma/P02_a.Jpg", "melanoma/P02_b.jpeg", "nevus/P03_a.png",
                "nevus/P04_a.TIFF", "nevus/P05_a.BMP", "nevus/P06_a.GIF"):
        _image(root / rel)
    (root / "README.txt").write_text("not read")
    return root


# ----------------------------------------------------------------------------------------------- class folders
def test_class_folders_mixed_case_suffixes(isic_like):
    df = build_manifest("class_folders", isic_like, modality="DMS", anatomy="skin")
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert len(df) == 7 and df.label.value_counts().to_dict() == {"nevus": 4, "melanoma": 3}
    assert sorted(Path(p).name for p in df.path) == sorted(
        ["P01_a.PNG", "P02_a.Jpg", "P02_b.jpeg", "P03_a.png", "P04_a.TIFF", "P05_a.BMP", "P06_a.GIF"])
    assert set(df.case_id) == {"P01_a", "P02_a", "P02_b", "P03_a", "P04_a", "P05_a", "P06_a"}
    assert set(df.split) == {"train"} and set(df.dataset) == {"isic"}
    assert _canonical(df) == {("DMS", "skin")}
    assert df.path.map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()


def test_class_folders_per_class_metadata(tmp_path):
    root = tmp_path / "eyes"
    _image(root / "fundus_dr" / "a.png")
    _image(root / "oct_cnv" / "b.png")
    classes = {"fundus_dr": {"modality": "OP", "anatomy": "retina"}, "oct_cnv": {"modality": "OPT"}}
    for option in (classes, json.dumps(classes)):  # a mapping, or its JSON text (the command line)
        df = build_manifest("class_folders", root, classes=option, anatomy="eye", dataset="eyes")
        assert dict(zip(df.label, df.modality)) == {"fundus_dr": "OP", "oct_cnv": "OPT"}
        assert dict(zip(df.label, df.anatomy)) == {"fundus_dr": "retina", "oct_cnv": "eye"}  # the class entry wins
    assert _canonical(df) == {("OP", "eye"), ("OCT", "eye")}
    with pytest.raises(ValueError, match=r"class 'oct_cnv' has no anatomy; pass the option\(s\) \['anatomy'\]"):
        build_manifest("class_folders", root, classes=classes)
    with pytest.raises(ValueError, match="class 'fundus_dr' has no modality and no anatomy"):
        build_manifest("class_folders", root)
    with pytest.raises(ValueError, match=r"class 'oct_cnv': unknown key\(s\) \['view'\]"):
        build_manifest("class_folders", root, classes={"oct_cnv": {"view": "x"}}, modality="OP", anatomy="eye")
    with pytest.raises(ValueError, match="option classes is not valid JSON"):
        build_manifest("class_folders", root, classes="{oct_cnv: 1}", modality="OP", anatomy="eye")


# kind of problem -> (files to write, options, error, message parts)
CLASS_FOLDER_REFUSALS = {
    "non_image_file": (["a/x.png", "a/notes.txt"], {}, ValueError, ["unexpected file type(s) ['.txt']", "notes.txt"]),
    "empty_class": (["a/x.png", "b/"], {}, ValueError, ["class folder", "/b: no images"]),
    "image_at_root": (["a/x.png", "stray.PNG"], {}, ValueError, ["1 image(s) outside any class folder", "stray.PNG"]),
    "sub_folder": (["a/x.png", "a/deeper/y.png"], {}, ValueError, ["unexpected sub-folder(s) deeper", "recursive"]),
    "class_missing": (["a/x.png"], {"classes": ("a", "b")}, FileNotFoundError,
                      ["folder(s) ['b'] not found", "expected folders ['a', 'b']"]),
    "class_unlisted": (["a/x.png", "b/y.png"], {"classes": "a"}, ValueError,
                       ["unexpected folder(s) ['b']", "expected folders ['a'] only"]),
    "no_class_folder": (["notes.txt"], {}, ValueError, ["no class folders; expected <class>/<image>"]),
}


@pytest.mark.parametrize("case", sorted(CLASS_FOLDER_REFUSALS))
def test_class_folders_refusals_name_the_file(tmp_path, case):
    files, options, error, parts = CLASS_FOLDER_REFUSALS[case]
    for rel in files:
        target = tmp_path / rel
        if rel.endswith("/"):
            target.mkdir(parents=True)
        elif rel.lower().endswith(".png"):
            _image(target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("x")
    with pytest.raises(error) as err:
        build_manifest("class_folders", tmp_path, modality="XR", anatomy="chest", **options)
    for part in parts:
        assert part in str(err.value), str(err.value)


def test_class_folders_recursive(tmp_path):
    _image(tmp_path / "pneumonia" / "patient1" / "v1.png")
    _image(tmp_path / "pneumonia" / "patient1" / "v2.png")
    _image(tmp_path / "normal" / "x.png")
    df = build_manifest("class_folders", tmp_path, modality="XR", anatomy="chest", recursive=True)
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in df.path) == [
        "normal/x.png", "pneumonia/patient1/v1.png", "pneumonia/patient1/v2.png"]
    (tmp_path / "pneumonia" / "patient1" / "notes.md").write_text("x")
    with pytest.raises(ValueError, match=r"unexpected file type\(s\) \['\.md'\]: patient1/notes\.md"):
        build_manifest("class_folders", tmp_path, modality="XR", anatomy="chest", recursive=True)


def test_case_id_regex(isic_like):
    df = build_manifest("class_folders", isic_like, modality="DMS", anatomy="skin", case_id_regex=r"^(P\d+)_")
    assert dict(zip(df.path.map(lambda p: Path(p).name), df.case_id))["P02_b.jpeg"] == "P02"
    assert sorted(set(df.case_id)) == ["P01", "P02", "P03", "P04", "P05", "P06"]
    _image(isic_like / "nevus" / "scan7.png")
    with pytest.raises(ValueError, match=r"case_id_regex '\^\(P\\\\d\+\)_' does not match the file name "
                                         r"'scan7\.png' \(.*nevus/scan7\.png\)"):
        build_manifest("class_folders", isic_like, modality="DMS", anatomy="skin", case_id_regex=r"^(P\d+)_")
    with pytest.raises(ValueError, match="must have exactly one group .* it has 2"):
        build_manifest("class_folders", isic_like, modality="DMS", anatomy="skin", case_id_regex=r"(P)(\d+)")
    with pytest.raises(ValueError, match="option case_id_regex '\\(P' is not a valid regular expression"):
        build_manifest("class_folders", isic_like, modality="DMS", anatomy="skin", case_id_regex="(P")


def test_split_option_is_seeded_and_grouped(tmp_path):
    for case in range(12):
        for view in ("a", "b"):
            _image(tmp_path / ("x" if case % 2 else "y") / f"C{case:02d}_{view}.png", size=8)
    options = dict(modality="XR", anatomy="chest", case_id_regex=r"^(C\d+)_")
    first = build_manifest("class_folders", tmp_path, split_fractions="train=0.5,val=0.25,test=0.25", seed=3,
                           **options)
    again = build_manifest("class_folders", tmp_path, split_fractions={"train": 0.5, "val": 0.25, "test": 0.25},
                           seed=3, **options)
    other = build_manifest("class_folders", tmp_path, split_fractions=("train=0.5", "val=0.25", "test=0.25"),
                           seed=4, **options)
    assert first.split.tolist() == again.split.tolist()  # same seed, same split (mapping or text)
    assert first.split.tolist() != other.split.tolist()
    assert first.groupby("case_id").split.nunique().max() == 1  # both views of a case in one split
    assert first.drop_duplicates("case_id").split.value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
    assert set(build_manifest("class_folders", tmp_path, split="test", **options).split) == {"test"}
    with pytest.raises(ValueError, match="either option split .* or split_fractions"):
        build_manifest("class_folders", tmp_path, split="test", split_fractions="train=1", **options)
    with pytest.raises(ValueError, match="option split_fractions: expected name=fraction"):
        build_manifest("class_folders", tmp_path, split_fractions="train:1", **options)
    with pytest.raises(ValueError, match="option split_fractions: split fractions must be positive and sum to 1"):
        build_manifest("class_folders", tmp_path, split_fractions="train=0.5", **options)


# ----------------------------------------------------------------------------------------------- image + masks
def test_image_masks_structure_folders_gif_tiff(tmp_path):
    root = tmp_path / "scr"
    for stem in ("JPCLN001", "JPCLN002", "JPCNN003"):
        _image(root / "images" / f"{stem}.png")
    _mask(root / "masks" / "heart" / "JPCLN001.gif")
    _mask(root / "masks" / "heart" / "JPCLN002_mask.TIF")  # <stem><mask_suffix>, TIFF, upper-case suffix
    _mask(root / "masks" / "heart" / "JPCNN003.tiff")
    for stem in ("JPCLN001", "JPCLN002", "JPCNN003"):
        _mask(root / "masks" / "lung" / f"{stem}.GIF")
    df = build_manifest("image_masks", root, modality="XR", anatomy="chest")
    assert [c for c in df.columns if c.startswith("mask_")] == ["mask_heart", "mask_lung"]
    assert [Path(p).name for p in df.mask_heart] == ["JPCLN001.gif", "JPCLN002_mask.TIF", "JPCNN003.tiff"]
    assert df.case_id.tolist() == ["JPCLN001", "JPCLN002", "JPCNN003"] and set(df.dataset) == {"scr"}
    only = build_manifest("image_masks", root, modality="XR", anatomy="chest", structures="lung")
    assert [c for c in only.columns if c.startswith("mask_")] == ["mask_lung"]
    # the segmentation data reads the columns: GIF and TIFF masks load as 0/1 channels
    out = write_manifest(df, tmp_path / "scr.csv")
    row = load_datalist(out, splits="train")[0]
    label = segmentation_transforms(["heart", "lung"], image_size=8)(row)["label"]
    assert tuple(label.shape) == (2, 8, 8) and set(np.unique(np.asarray(label))) <= {0.0, 1.0}
    assert float(label.sum()) > 0


def test_image_masks_flat_and_beside_layouts(tmp_path):
    flat = tmp_path / "kvasir"  # masks/<same name as the image>
    for stem in ("a1", "b2"):
        _image(flat / "images" / f"{stem}.jpg")
        _mask(flat / "masks" / f"{stem}.png")
    df = build_manifest("image_masks", flat, modality="ES", anatomy="colon", structures="polyp")
    assert [Path(p).name for p in df.mask_polyp] == ["a1.png", "b2.png"]
    assert _canonical(df) == {("ES", "gastrointestinal")}
    beside = tmp_path / "busi_like"  # <stem>_mask.* beside the images
    _image(beside / "images" / "case1.png")
    _mask(beside / "images" / "case1_mask.GIF")
    _image(beside / "images" / "case2.jpg")
    _mask(beside / "images" / "case2_mask.png")
    df = build_manifest("image_masks", beside, modality="US", anatomy="breast", masks="images")
    assert df.case_id.tolist() == ["case1", "case2"]
    assert [Path(p).name for p in df.mask_foreground] == ["case1_mask.GIF", "case2_mask.png"]
    with pytest.raises(ValueError, match="need a non-empty option mask_suffix"):
        build_manifest("image_masks", beside, modality="US", anatomy="breast", masks="images", mask_suffix="")
    isic = tmp_path / "isic_seg"  # another mask suffix
    _image(isic / "inputs" / "ISIC_01.jpg")
    _mask(isic / "truth" / "ISIC_01_segmentation.png")
    df = build_manifest("image_masks", isic, modality="DMS", anatomy="skin", images="inputs", masks="truth",
                        mask_suffix="_segmentation", structures="lesion")
    assert Path(df.mask_lesion[0]).name == "ISIC_01_segmentation.png"


def test_image_masks_missing_mask_names_the_image(tmp_path, caplog):
    for stem in ("a", "b", "c"):
        _image(tmp_path / "images" / f"{stem}.png")
        if stem != "b":
            _mask(tmp_path / "masks" / "heart" / f"{stem}.png")
        _mask(tmp_path / "masks" / "lung" / f"{stem}.png")
    with pytest.raises(ValueError) as err:
        build_manifest("image_masks", tmp_path, modality="XR", anatomy="chest")
    message = str(err.value)
    assert f"image {tmp_path / 'images' / 'b.png'}: no 'heart' mask" in message
    assert f"expected {tmp_path / 'masks' / 'heart' / 'b'}.<ext> or b_mask.<ext>" in message
    with caplog.at_level(logging.WARNING, logger="data_manifests"):
        df = build_manifest("image_masks", tmp_path, modality="XR", anatomy="chest", allow_missing_masks=True)
    assert df.mask_heart.isna().tolist() == [False, True, False] and df.mask_lung.notna().all()
    assert "1 image(s) have no 'heart' mask" in caplog.text and "b.png" in caplog.text


def _drive_like(root: Path, cases: tuple[int, ...] = (21, 22)) -> Path:
    """DRIVE's training folder: ``images/21_training.tif``, ``1st_manual/21_manual1.gif`` (vessels) and
    ``mask/21_training_mask.gif`` (field of view)."""
    for case in cases:
        _image(root / "images" / f"{case}_training.tif", value=60 + case, size=16)
        _mask(root / "1st_manual" / f"{case}_manual1.gif", size=16)
        _mask(root / "mask" / f"{case}_training_mask.gif", size=16)
    return root


DRIVE_NAMES = {"vessel": "1st_manual/{case_id}_manual1", "fov": "mask/{stem}_mask"}


def test_image_masks_mask_names_pair_a_drive_like_layout(tmp_path, capsys, load_script):
    root = _drive_like(tmp_path / "DRIVE" / "training")
    df = build_manifest("image_masks", root, modality="OP", anatomy="retina", case_id_regex=r"^(\d+)_",
                        mask_names=DRIVE_NAMES)
    assert df.case_id.tolist() == ["21", "22"] and [Path(p).name for p in df.path] == ["21_training.tif",
                                                                                     "22_training.tif"]
    assert [Path(p).relative_to(root).as_posix() for p in df.mask_vessel] == ["1st_manual/21_manual1.gif",
                                                                            "1st_manual/22_manual1.gif"]
    assert [Path(p).relative_to(root).as_posix() for p in df.mask_fov] == ["mask/21_training_mask.gif",
                                                                         "mask/22_training_mask.gif"]
    # the rows load: the TIFF image and the palette GIF masks through the project's PIL reader
    row = load_datalist(write_manifest(df, tmp_path / "drive.csv"), splits="train")[0]
    item = segmentation_transforms(["vessel", "fov"], image_size=8)(row)
    assert tuple(item["image"].shape) == (1, 8, 8) and tuple(item["label"].shape) == (2, 8, 8)
    assert set(np.unique(np.asarray(item["label"]))) == {0.0, 1.0}
    # the command line takes the mapping as JSON; an extension in the template is matched exactly
    out = tmp_path / "drive_cli.csv"
    names = json.dumps({"vessel": "1st_manual/{case_id}_manual1.GIF", "fov": "mask/{stem}_mask"})
    args = ["image_masks", str(root), "-o", str(out), "--opt", "modality=OP", "--opt", "anatomy=retina", "--opt",
            "case_id_regex=^([0-9]+)_", "--opt", f"mask_names={names}"]
    assert load_script("build_manifest").main(args) == 0, capsys.readouterr().err
    assert [Path(p).name for p in pd.read_csv(out).mask_vessel] == ["21_manual1.gif", "22_manual1.gif"]


# problem -> (changes to the DRIVE-like tree, options, error, message parts)
DRIVE_REFUSALS = {
    "orphan_mask": ({"1st_manual/23_manual1.gif": "mask"}, {}, ValueError,
                    ["1st_manual: 1 mask(s) without an image", "23_manual1.gif", "1st_manual/{case_id}_manual1",
                     "'21_manual1' for 21_training.tif"]),
    "missing_mask": ({"mask/22_training_mask.gif": None}, {}, ValueError,
                     ["22_training.tif: no 'fov' mask; expected", "mask/22_training_mask.<ext>"]),
    "two_images_one_mask": ({"images/21_training_b.tif": "image"}, {}, ValueError,
                            ["both name the mask", "21_manual1.gif", "use {stem}"]),
    "undeclared_folder": ({"2nd_manual/21_manual2.gif": "mask"}, {}, ValueError,
                          ["unexpected folder(s) ['2nd_manual']"]),
    "with_structures": ({}, {"structures": "vessel"}, ValueError, ["do not pass ['structures'] with it"]),
    "no_placeholder": ({}, {"mask_names": {"vessel": "1st_manual/manual1"}}, ValueError, ["no placeholder"]),
    "unknown_placeholder": ({}, {"mask_names": {"vessel": "1st_manual/{id}_manual1"}}, ValueError,
                            ["unknown placeholder(s) ['id']"]),
    "no_folder": ({}, {"mask_names": {"vessel": "{case_id}_manual1"}}, ValueError,
                  ["expected '<mask folder>/<name template>'"]),
    "bad_json": ({}, {"mask_names": "{vessel"}, ValueError, ["option mask_names is not valid JSON"]),
}


@pytest.mark.parametrize("case", sorted(DRIVE_REFUSALS))
def test_image_masks_mask_names_refusals(tmp_path, case):
    changes, options, error, parts = DRIVE_REFUSALS[case]
    root = _drive_like(tmp_path)
    for rel, kind in changes.items():
        if kind is None:
            (root / rel).unlink()
        else:
            (_image if kind == "image" else _mask)(root / rel)
    options = {"mask_names": {"vessel": "1st_manual/{case_id}_manual1", "fov": "mask/{stem}_mask"}} | options
    with pytest.raises(error) as err:
        build_manifest("image_masks", root, modality="OP", anatomy="retina", case_id_regex=r"^(\d+)_", **options)
    for part in parts:
        assert part in str(err.value), str(err.value)


# problem -> (images, masks (relative to the root), options, error, message parts)
IMAGE_MASK_REFUSALS = {
    "mask_without_image": (["a.png"], ["masks/heart/a.png", "masks/heart/z_mask.png"], {}, ValueError,
                           ["1 mask(s) without an image", "z_mask.png"]),
    "two_masks": (["a.png"], ["masks/heart/a.png", "masks/heart/a_mask.gif"], {}, ValueError,
                  ["two masks for image", "a.png and", "a_mask.gif"]),
    "two_images_one_stem": (["a.png", "a.jpg"], ["masks/a.png"], {}, ValueError,
                            ["two images share the stem 'a'"]),
    "non_image_mask": (["a.png"], ["masks/heart/a.png", "masks/heart/a.npy"], {}, ValueError,
                       ["unexpected file type(s) ['.npy']", "a.npy"]),
    "mixed_mask_folder": (["a.png"], ["masks/heart/a.png", "masks/a.png"], {}, ValueError,
                          ["holds both structure folders and files"]),
    "missing_structure": (["a.png"], ["masks/heart/a.png"], {"structures": ("heart", "lung")}, FileNotFoundError,
                          ["structure folder(s) ['lung'] (option structures) not found"]),
    "flat_two_structures": (["a.png"], ["masks/a.png"], {"structures": ("heart", "lung")}, ValueError,
                            ["holds one structure"]),
    "extra_root_folder": (["a.png"], ["masks/a.png", "labels/a.png"], {}, ValueError,
                          ["unexpected folder(s) ['labels']", "expected folders ['images', 'masks']"]),
    "no_mask_folder": (["a.png"], [], {}, FileNotFoundError, ["folder(s) ['masks'] not found"]),
    "no_modality": (["a.png"], ["masks/a.png"], {"modality": None}, ValueError, ["option modality is required"]),
}


@pytest.mark.parametrize("case", sorted(IMAGE_MASK_REFUSALS))
def test_image_masks_refusals_name_the_file(tmp_path, case):
    images, masks, options, error, parts = IMAGE_MASK_REFUSALS[case]
    for name in images:
        _image(tmp_path / "images" / name)
    for rel in masks:
        if rel.endswith(".npy"):
            np.save(tmp_path / rel, np.zeros(2))
        else:
            _mask(tmp_path / rel)
    with pytest.raises(error) as err:
        build_manifest("image_masks", tmp_path, **({"modality": "XR", "anatomy": "chest"} | options))
    for part in parts:
        assert part in str(err.value), str(err.value)


# ----------------------------------------------------------------------------------------------- symbolic links
def test_builders_follow_symlinked_folders(tmp_path, caplog):
    store = tmp_path / "store"  # the real files, in a layout of their own
    for rel in ("ct_lung_normal/a.png", "ct_lung_normal/b.png", "mr_knee_tear/c.png", "us_thyroid_nodule/d.png"):
        _image(store / rel, size=8)
    tree = tmp_path / "radiology_ai"  # RadImageNet built from links only
    for link, target in (("CT/lung/normal", "ct_lung_normal"), ("MR/knee/tear", "mr_knee_tear"),
                         ("US/thyroid/nodule", "us_thyroid_nodule")):
        (tree / link).parent.mkdir(parents=True, exist_ok=True)
        (tree / link).symlink_to(store / target, target_is_directory=True)
    assert not [p for p in tree.rglob("*.png")]  # what the builders saw before: rglob does not follow the links
    df = build_manifest("radimagenet", tree)
    assert sorted(Path(p).relative_to(tree).as_posix() for p in df.path) == [
        "CT/lung/normal/a.png", "CT/lung/normal/b.png", "MR/knee/tear/c.png", "US/thyroid/nodule/d.png"]
    assert set(df.label) == {"normal", "tear", "nodule"}
    # a loop back to an ancestor is walked once, with a warning naming the link
    (tree / "CT" / "lung" / "normal" / "again").symlink_to(tree / "CT", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="data_manifests"):
        files = walk_files(tree, "RadImageNet root")
    assert len(files) == 4 and "again is a link to" in caplog.text and "already walked" in caplog.text
    (tree / "CT" / "lung" / "normal" / "again").unlink()
    # class folders made of links; a link to a single file works too
    classes = tmp_path / "classes"
    classes.mkdir()
    (classes / "normal").symlink_to(store / "ct_lung_normal", target_is_directory=True)
    (classes / "tear").mkdir()
    (classes / "tear" / "c.png").symlink_to(store / "mr_knee_tear" / "c.png")
    df = build_manifest("class_folders", classes, modality="CT", anatomy="chest", recursive=True)
    assert df.label.tolist() == ["normal", "normal", "tear"]
    assert build_manifest("class_folders", classes, modality="CT", anatomy="chest").path.tolist() == df.path.tolist()
    # image + masks folders as links
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "images").symlink_to(store / "ct_lung_normal", target_is_directory=True)
    masks = tmp_path / "mask_store"
    _mask(masks / "lung" / "a.tif")
    _mask(masks / "lung" / "b_mask.gif")
    (seg / "masks").symlink_to(masks, target_is_directory=True)
    df = build_manifest("image_masks", seg, modality="CT", anatomy="chest")
    assert [Path(p).name for p in df.mask_lung] == ["a.tif", "b_mask.gif"]
    # a broken link is an error naming it, not a file left out
    (classes / "tear" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ValueError, match=r"1 broken symbolic link\(s\).*gone\.png -> .*nowhere\.png"):
        build_manifest("class_folders", classes, modality="CT", anatomy="chest", recursive=True)
    with pytest.raises(ValueError, match=r"broken symbolic link\(s\).*gone\.png"):
        build_manifest("class_folders", classes, modality="CT", anatomy="chest")


def test_class_folders_links_back_into_the_tree_are_skipped(tmp_path, caplog):
    root = tmp_path / "xray"
    for rel in ("normal/a.png", "normal/sub/b.png", "pneumonia/c.png"):
        _image(root / rel, size=8)
    (root / "normal" / "loop").symlink_to(root, target_is_directory=True)  # up to the root: every class again
    (root / "pneumonia" / "back").symlink_to(root / "normal" / "sub", target_is_directory=True)  # into a class
    (root / "pneumonia" / "alias.png").symlink_to(root / "normal" / "a.png")  # a file of another class
    (root / "normal" / "again.png").symlink_to(root / "normal" / "a.png")  # a second name in its own class
    with caplog.at_level(logging.WARNING, logger="data_manifests"):
        df = build_manifest("class_folders", root, modality="XR", anatomy="chest", recursive=True)
    listed = [(Path(p).relative_to(root).as_posix(), label) for p, label in zip(df.path, df.label)]
    assert listed == [("normal/a.png", "normal"), ("normal/sub/b.png", "normal"), ("pneumonia/c.png", "pneumonia")]
    for link in ("normal/loop", "pneumonia/back", "pneumonia/alias.png", "normal/again.png"):
        assert f"{root / link} is a link to" in caplog.text, link
    caplog.clear()
    (root / "normal" / "loop").unlink()
    (root / "pneumonia" / "back").unlink()
    (root / "normal" / "sub" / "b.png").rename(root / "normal" / "b.png")
    (root / "normal" / "sub").rmdir()
    with caplog.at_level(logging.WARNING, logger="data_manifests"):  # without recursive: the file links alike
        flat = build_manifest("class_folders", root, modality="XR", anatomy="chest")
    assert [Path(p).name for p in flat.path] == ["a.png", "b.png", "c.png"]
    assert f"{root / 'pneumonia' / 'alias.png'} is a link" in caplog.text
    # a class folder that is a link to another class, or an image outside the tree in two classes: ambiguous
    store = tmp_path / "store"
    _image(store / "d.png", size=8)
    (root / "pneumonia" / "alias.png").unlink()
    (root / "normal" / "d.png").symlink_to(store / "d.png")
    (root / "pneumonia" / "d.png").symlink_to(store / "d.png")
    with pytest.raises(ValueError, match=r"normal/d\.png \(class 'normal'\) and .*pneumonia/d\.png \(class "
                                         r"'pneumonia'\) are one image"):
        build_manifest("class_folders", root, modality="XR", anatomy="chest")
    (root / "pneumonia" / "d.png").unlink()
    (root / "copy").symlink_to(root / "pneumonia", target_is_directory=True)
    with pytest.raises(ValueError, match=r"class folders .*copy and .*pneumonia are, or hold, one real folder"):
        build_manifest("class_folders", root, modality="XR", anatomy="chest")


# ----------------------------------------------------------------------------------------------- DICOM scan
@pytest.fixture(scope="module")
def dicom_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 tiny CT slices in ``scans/`` plus a linked folder ``linked/`` holding 2 more."""
    from test_phi import write_phi_dicoms

    root = tmp_path_factory.mktemp("dicom_tree")
    write_phi_dicoms(root / "a", n_patients=3, slices=2, size=8)
    write_phi_dicoms(root / "b", n_patients=1, slices=2, size=8)
    tree = root / "tree"
    tree.mkdir()
    (tree / "scans").symlink_to(root / "a" / "scans", target_is_directory=True)
    (tree / "more").mkdir()
    (tree / "more" / "linked").symlink_to(root / "b" / "scans", target_is_directory=True)
    return tree


def test_dicom_dir_workers_same_frame_and_headers_only(dicom_tree, monkeypatch):
    import data_manifests.dicom_dir as dicom_dir

    calls = []
    real = dicom_dir.dcmread

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(dicom_dir, "dcmread", spy)
    serial = build_manifest("dicom_dir", dicom_tree, salt="s", keep_uids=True)
    assert len(calls) == 8 and all(c.get("stop_before_pixels") is True for c in calls)  # headers only
    monkeypatch.setattr(dicom_dir, "dcmread", real)
    assert len(serial) == 8 and sorted(serial.path) == serial.path.tolist()
    assert sum("/more/linked/" in p for p in serial.path) == 2  # the linked folder is read
    for workers in (2, 3):
        pd.testing.assert_frame_equal(build_manifest("dicom_dir", dicom_tree, salt="s", keep_uids=True,
                                                     workers=workers), serial)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="option workers must be an integer >= 1"):
            build_manifest("dicom_dir", dicom_tree, salt="s", workers=bad)


def test_dicom_dir_workers_report_non_dicom_in_order(dicom_tree, tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "scans").symlink_to(dicom_tree / "scans", target_is_directory=True)
    (tree / "zz_notes.dcm").write_text("not a dicom file")
    for workers in (1, 2):
        with pytest.raises(ValueError, match=r"1 file\(s\) are not DICOM \(InvalidDicomError: .*zz_notes\.dcm"):
            build_manifest("dicom_dir", tree, salt="s", workers=workers)


# ----------------------------------------------------------------------------------------------- registry, CLI
def test_registry_has_the_layout_builders(tmp_path):
    assert {"class_folders", "image_masks"} <= set(BUILDERS)
    with pytest.raises(ValueError, match=r"builder 'image_masks' does not take option\(s\) \['label'\]"):
        build_manifest("image-masks", tmp_path, label="x")


def test_cli_layout_builders(isic_like, tmp_path, capsys, load_script):
    main = load_script("build_manifest").main
    out = tmp_path / "isic.csv"
    classes = json.dumps({"melanoma": {"modality": "DMS", "anatomy": "skin"}, "nevus": {"modality": "XC"}})
    args = ["class_folders", str(isic_like), "-o", str(out), "--opt", f"classes={classes}", "--opt", "anatomy=skin",
            "--opt", 'case_id_regex="^(P\\\\d{1,3})_"', "--opt", "split_fractions=train=0.5,test=0.5"]
    assert main(args + ["--opt", "seed=1"]) == 0, capsys.readouterr().err
    first = pd.read_csv(out)
    assert dict(zip(first.label, first.modality)) == {"melanoma": "DMS", "nevus": "XC"}
    assert set(first.case_id) == {"P01", "P02", "P03", "P04", "P05", "P06"} and set(first.split) == {"train", "test"}
    assert main(args + ["--opt", "seed=1"]) == 0 and pd.read_csv(out).split.tolist() == first.split.tolist()
    assert main(args + ["--split", "val"]) == 1
    assert "either option split" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--opt classes: value is not valid JSON"):
        main(["class_folders", str(isic_like), "-o", str(out), "--opt", "classes={bad"])
    seg = tmp_path / "seg"
    _image(seg / "images" / "a.png")
    _mask(seg / "masks" / "polyp" / "a_mask.gif")
    assert main(["image_masks", str(seg), "-o", str(tmp_path / "seg.csv"), "--opt", "modality=ES",
                 "--opt", "anatomy=colon"]) == 0
    assert pd.read_csv(tmp_path / "seg.csv").mask_polyp.str.endswith("a_mask.gif").all()
    assert main(["image_masks", str(seg), "-o", str(tmp_path / "seg.csv"), "--opt", "modality=ES"]) == 1
    assert "option anatomy is required" in capsys.readouterr().err
