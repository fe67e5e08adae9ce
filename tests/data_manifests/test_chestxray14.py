"""The ChestX-ray14 builder on small trees written in NIH's exact layout (the set itself cannot be shipped)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_manifests import BUILDERS, build_manifest
from data_manifests.chestxray14 import CHESTXRAY14_FINDINGS
from modan_monai.data.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest

# NIH's header as published: the last two names hold commas, so they span four cells.
HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
LINES = {
    "00000001_000.png": "Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143",
    "00000001_001.png": "Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
    "00000002_000.png": "No Finding,0,2,81,M,PA,2500,2048,0.171,0.171",
    "00000003_000.png": "Hernia|Pleural_Thickening|Mass,0,3,74,F,AP,2500,2048,0.168,0.168",
}
TRAIN_VAL = ["00000001_000.png", "00000001_001.png", "00000002_000.png"]
TEST = ["00000003_000.png"]


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(path)


def _tree(root: Path, lines: dict[str, str] = LINES, train_val: list[str] = TRAIN_VAL, test: list[str] = TEST,
          trailing_comma: bool = False, flat: bool = False) -> Path:
    """Data_Entry_2017.csv, the split lists and images_001/images/, images_002/images/ (or one flat images/)."""
    root.mkdir(parents=True, exist_ok=True)
    end = "," if trailing_comma else ""
    text = "\n".join([HEADER + end] + [f"{name},{rest}{end}" for name, rest in lines.items()]) + "\n"
    (root / "Data_Entry_2017.csv").write_text(text)
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "README_CHESTXRAY.pdf").write_bytes(b"%PDF")  # root files the layout does not read are allowed
    for i, name in enumerate(lines):
        _png(root / "images" / name if flat else root / f"images_00{1 + i // 2}" / "images" / name)
    return root


@pytest.mark.parametrize("trailing_comma,flat", [(False, False), (True, False), (False, True)])
def test_rows_columns_splits_cases(tmp_path, trailing_comma, flat):
    root = _tree(tmp_path / "ChestX-ray14", trailing_comma=trailing_comma, flat=flat)
    frame = build_manifest("chestxray14", root)
    assert list(frame.columns) == [*MANIFEST_COLUMNS, "Finding Labels", *CHESTXRAY14_FINDINGS, "view_position"]
    assert [Path(p).name for p in frame["path"]] == list(LINES)
    assert all(Path(p).is_file() for p in frame["path"])
    assert frame["split"].tolist() == ["train", "train", "train", "test"]
    assert frame["case_id"].tolist() == ["1", "1", "2", "3"]
    assert set(frame["modality"]) == {"XR"} and set(frame["anatomy"]) == {"chest"}
    assert set(frame["dataset"]) == {"chestxray14"}
    assert frame["Finding Labels"].tolist()[1] == "Cardiomegaly|Emphysema"
    findings = frame[list(CHESTXRAY14_FINDINGS)].to_numpy()
    assert findings.sum(axis=1).tolist() == [1, 2, 0, 3]  # No Finding: all zero
    assert frame.loc[3, ["Hernia", "Pleural_Thickening", "Mass"]].tolist() == [1, 1, 1]
    assert frame.loc[1, ["Cardiomegaly", "Emphysema"]].tolist() == [1, 1]
    assert frame["view_position"].tolist() == ["PA", "PA", "PA", "AP"]
    assert "Patient Age" not in frame.columns and "Patient Gender" not in frame.columns
    out = write_manifest(frame, tmp_path / "cxr14.csv")
    back = read_manifest(out)
    assert back["Finding Labels"].tolist() == frame["Finding Labels"].tolist()


def _replace(lines: dict[str, str], name: str, rest: str) -> dict[str, str]:
    return {**lines, name: rest}


REFUSALS = {
    "unknown finding": (dict(lines=_replace(LINES, "00000002_000.png", "Cardiomegally,0,2,81,M,PA,1,1,0.1,0.1")),
                        r"line 4: unknown finding\(s\) \['Cardiomegally'\]"),
    "no finding beside another": (dict(lines=_replace(LINES, "00000002_000.png",
                                                      "No Finding|Mass,0,2,81,M,PA,1,1,1,1")),
                                  r"line 4: 'No Finding' beside other findings"),
    "empty findings": (dict(lines=_replace(LINES, "00000002_000.png", ",0,2,81,M,PA,1,1,0.1,0.1")),
                       r"line 4: empty 'Finding Labels'"),
    "patient name": (dict(lines=_replace(LINES, "00000002_000.png", "Mass,0,Jane Doe,81,F,PA,1,1,0.1,0.1")),
                     r"line 4: 'Patient ID' 'Jane Doe' is not an integer"),
    "in both lists": (dict(test=TEST + ["00000002_000.png"]),
                      r"00000002_000.png is listed in both train_val_list.txt and test_list.txt"),
    "in neither list": (dict(train_val=TRAIN_VAL[:2]), r"00000002_000.png \(label CSV .* line 4\) is in neither"),
    "listed without a row": (dict(test=TEST + ["00000009_000.png"]), r"without a row in .*: 00000009_000.png"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_line_the_name_or_the_image(tmp_path, case):
    options, message = REFUSALS[case]
    root = _tree(tmp_path / "cxr", **options)
    with pytest.raises(ValueError, match=message):
        build_manifest("chestxray14", root)


def test_images_and_csv_rows_must_match(tmp_path, caplog):
    root = _tree(tmp_path / "cxr")
    extra = root / "images_002" / "images" / "00000004_000.png"
    _png(extra)
    with pytest.raises(ValueError, match=r"1 image\(s\) on disk without a row .*00000004_000.png"):
        build_manifest("chestxray14", root)
    extra.unlink()
    (root / "images_002" / "images" / "00000003_000.png").unlink()
    with pytest.raises(ValueError, match=r"listed but not found .*00000003_000.png \(line 5\).*partial=true"):
        build_manifest("chestxray14", root)
    with caplog.at_level(logging.WARNING, logger="data_manifests"):
        frame = build_manifest("chestxray14", root, partial=True)
    assert [Path(p).name for p in frame["path"]] == list(LINES)[:3]
    assert "1 of 4 row(s) have no image here and are dropped" in caplog.text


def test_layout_refusals(tmp_path):
    root = _tree(tmp_path / "cxr")
    (root / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"official split list test_list.txt not found"):
        build_manifest("chestxray14", root)
    root = _tree(tmp_path / "cxr2")
    (root / "__MACOSX").mkdir()
    with pytest.raises(ValueError, match=r"unexpected folder\(s\) __MACOSX"):
        build_manifest("chestxray14", root)
    root = _tree(tmp_path / "cxr3")
    (root / "images_001" / "images" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unexpected file type\(s\) \['.txt'\]"):
        build_manifest("chestxray14", root)
    root = _tree(tmp_path / "cxr4")
    (root / "Data_Entry_2017.csv").write_text("Image Index,Labels,Patient ID\n00000001_000.png,Mass,1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Finding Labels'\]"):
        build_manifest("chestxray14", root)
    (root / "Data_Entry_2017.csv").write_bytes(b"Image Index,Finding Labels,Patient ID\n\xff\xfe\x00,Mass,1\n")
    with pytest.raises(ValueError, match=r"Data_Entry_2017.csv: not a readable UTF-8 CSV file"):
        build_manifest("chestxray14", root)


def test_cli_kind(tmp_path, capsys, load_script):
    assert "chestxray14" in BUILDERS
    root = _tree(tmp_path / "cxr")
    script = load_script("build_manifest")
    assert script.main(["chestxray14", str(root), "-o", str(tmp_path / "m.csv")]) == 0
    assert "wrote 4 rows" in capsys.readouterr().out
    (root / "test_list.txt").write_text("00000003_000.png\n00000001_000.png\n")
    assert script.main(["chestxray14", str(root), "-o", str(tmp_path / "m2.csv")]) == 1
    assert "listed in both" in capsys.readouterr().err
