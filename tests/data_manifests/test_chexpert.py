"""The CheXpert builder on small trees written in CheXpert's exact layout (the set itself cannot be shipped)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_manifests import BUILDERS, build_manifest
from data_manifests.chexpert import CHEXPERT_OBSERVATIONS
from modan_monai.data.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest

HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
          "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
          "Fracture,Support Devices")
# As CheXpert writes them: floats, -1.0 for uncertain, empty cells for not mentioned.
TRAIN = [
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,"
    ",-1.0,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,",
]
VALID = [
    "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,0.0,0.0,"
    "0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg,Male,70,Frontal,PA,0.0,0.0,0.0,1.0,0.0,0.0,0.0,"
    "0.0,0.0,0.0,0.0,0.0,0.0,1.0",
]


def _jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(path, format="JPEG")


def _tree(parent: Path, train: list[str] = TRAIN, valid: list[str] = VALID) -> Path:
    """CheXpert-v1.0-small/{train.csv, valid.csv, train/..., valid/...}; the images of the given lines."""
    root = parent / "CheXpert-v1.0-small"
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train.csv", train), ("valid.csv", valid)):
        (root / name).write_text("\n".join([HEADER, *lines]) + "\n")
        for line in lines:
            path = line.split(",", 1)[0]
            if path.startswith("CheXpert-v1.0-small/"):
                _jpg(parent / path)
    return root


def test_rows_columns_splits_and_uncertain_labels_kept(tmp_path):
    root = _tree(tmp_path)
    frame = build_manifest("chexpert", root)
    assert list(frame.columns) == [*MANIFEST_COLUMNS, *CHEXPERT_OBSERVATIONS, "frontal_lateral", "ap_pa"]
    assert len(frame) == 6 and all(Path(p).is_file() for p in frame["path"])
    assert frame["path"].tolist()[0] == str(root / "train/patient00001/study1/view1_frontal.jpg")
    assert frame["split"].tolist() == ["train"] * 4 + ["test"] * 2
    assert frame["case_id"].tolist() == ["patient00001"] + ["patient00002"] * 3 + ["patient64541", "patient64542"]
    assert set(frame["modality"]) == {"XR"} and set(frame["anatomy"]) == {"chest"}
    assert "Sex" not in frame.columns and "Age" not in frame.columns
    row = frame.loc[1]
    assert row["Cardiomegaly"] == -1 and row["Lung Opacity"] == 1 and row["Edema"] == -1
    assert pd.isna(row["No Finding"]) and pd.isna(row["Support Devices"])
    assert frame.loc[0, "Pneumothorax"] == 0 and frame.loc[0, "No Finding"] == 1
    assert frame["frontal_lateral"].tolist()[2:4] == ["Frontal", "Lateral"]
    assert frame["ap_pa"].tolist()[3:] == ["", "AP", "PA"]
    # written and read back, -1 (uncertain) and the empty cell (not mentioned) stay apart
    back = read_manifest(write_manifest(frame, tmp_path / "chexpert.csv"))
    assert float(back.loc[1, "Cardiomegaly"]) == -1 and pd.isna(back.loc[1, "No Finding"])
    assert float(back.loc[0, "Pneumothorax"]) == 0 and float(back.loc[0, "No Finding"]) == 1


def test_one_csv(tmp_path):
    root = _tree(tmp_path)
    frame = build_manifest("chexpert", root, csvs="valid.csv")
    assert frame["split"].tolist() == ["test", "test"]


def _with(lines: list[str], i: int, old: str, new: str) -> list[str]:
    return [line.replace(old, new, 1) if j == i else line for j, line in enumerate(lines)]


REFUSALS = {
    "bad value": (dict(valid=_with(VALID, 1, "0.0,0.0,1.0,0.0", "0.0,0.0,2.0,0.0")),
                  r"valid.csv line 3: column 'Lung Opacity' holds '2.0'"),
    "text value": (dict(train=_with(TRAIN, 0, "1.0,,,,", "yes,,,,")),
                   r"train.csv line 2: column 'No Finding' holds 'yes'"),
    "bad path": (dict(train=_with(TRAIN, 2, "study1/view1_frontal.jpg", "study1/scan.jpg")),
                 r"train.csv line 4: Path 'CheXpert-v1.0-small/train/patient00002/study1/scan.jpg' is not"),
    "train path in valid": (dict(valid=[VALID[0], TRAIN[1]]),
                            r"valid.csv line 3: Path 'CheXpert-v1.0-small/train/patient00002/.*' is not"),
    "other root name": (dict(valid=_with(VALID, 1, "CheXpert-v1.0-small/", "CheXpert-v1.0/")),
                        r"valid.csv line 3: Path 'CheXpert-v1.0/valid/.*start with the root folder's name"),
    "duplicate": (dict(valid=VALID + VALID[:1]), r"valid.csv line 4: Path .*patient64541.* already on line 2"),
    "short line": (dict(valid=[VALID[0], VALID[1].rsplit(",", 2)[0]]),
                   r"valid.csv line 3: 17 cells for the 19 columns"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_line(tmp_path, case):
    options, message = REFUSALS[case]
    root = _tree(tmp_path, **options)
    with pytest.raises(ValueError, match=message):
        build_manifest("chexpert", root)


def test_images_and_csv_lines_must_match(tmp_path, caplog):
    root = _tree(tmp_path)
    extra = root / "valid/patient64543/study1/view1_frontal.jpg"
    _jpg(extra)
    with pytest.raises(ValueError, match=r"1 file\(s\) under .*valid without a line in .*valid.csv: .*patient64543"):
        build_manifest("chexpert", root)
    extra.unlink()
    (root / "train/patient00002/study1/view2_lateral.jpg").unlink()
    with pytest.raises(ValueError, match=r"train.csv: 1 image\(s\) listed but not found: .*view2_lateral.jpg "
                                         r"\(line 5\).*partial=true"):
        build_manifest("chexpert", root)
    with caplog.at_level(logging.WARNING, logger="data_manifests"):
        frame = build_manifest("chexpert", root, partial=True)
    assert len(frame) == 5
    assert "1 of 4 line(s) have no image here and are dropped" in caplog.text


def test_layout_refusals(tmp_path):
    root = _tree(tmp_path / "a")
    (root / "test").mkdir()
    with pytest.raises(ValueError, match=r"unexpected folder\(s\) \['test'\]"):
        build_manifest("chexpert", root)
    root = _tree(tmp_path / "b")
    (root / "valid.csv").write_text("Path,Sex,No Finding\n")
    with pytest.raises(ValueError, match=r"valid.csv: missing column\(s\) \['Enlarged Cardiomediastinum'"):
        build_manifest("chexpert", root)
    (root / "valid.csv").write_bytes(HEADER.encode() + b"\n\xff\xfe,1\n")
    with pytest.raises(ValueError, match=r"valid.csv: not a readable UTF-8 CSV file"):
        build_manifest("chexpert", root)
    with pytest.raises(ValueError, match=r"unknown csvs \['test.csv'\]"):
        build_manifest("chexpert", root, csvs="test.csv")


def test_cli_kind(tmp_path, capsys, load_script):
    assert "chexpert" in BUILDERS
    root = _tree(tmp_path)
    script = load_script("build_manifest")
    assert script.main(["chexpert", str(root), "-o", str(tmp_path / "m.csv"), "--opt", "csvs=valid.csv"]) == 0
    assert "wrote 2 rows" in capsys.readouterr().out
