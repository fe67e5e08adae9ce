from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modan_monai.data.manifest import (
    MANIFEST_COLUMNS,
    REQUIRED_COLUMNS,
    load_datalist,
    manifest_to_datalist,
    read_manifest,
    write_manifest,
)


def _make(tmp_path: Path, rows: list[dict], name: str = "m.csv") -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    for row in rows:
        if row.get("path") and not str(row["path"]).startswith("missing"):
            (tmp_path / row["path"]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / row["path"]).write_bytes(b"x")
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _row(i: int, **extra) -> dict:
    base = {"path": f"img/{i}.png", "key": "", "index": "", "modality": "XR", "anatomy": "chest", "split": "train",
            "dataset": "toy", "case_id": f"{i:03d}"}
    base.update(extra)
    return base


def test_constants():
    assert MANIFEST_COLUMNS == ("path", "key", "index", "modality", "anatomy", "split", "dataset", "case_id")
    assert set(REQUIRED_COLUMNS) <= set(MANIFEST_COLUMNS) and "key" not in REQUIRED_COLUMNS


def test_read_resolves_paths_and_parses(tmp_path):
    rows = [_row(0, label=1, index=3, key="train_images"), _row(1, label=0, split="val"),
            _row(2, label="", modality="", anatomy="", plane="axial")]
    manifest = _make(tmp_path, rows)
    df = read_manifest(manifest)
    assert list(df["row"]) == [0, 1, 2]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])
    assert str(df["index"].dtype) == "Int64" and df["index"].iloc[0] == 3 and pd.isna(df["index"].iloc[1])
    assert df["case_id"].iloc[0] == "000"  # zero-padded ids stay text
    items = manifest_to_datalist(df)
    assert items[0]["image"] == str((tmp_path / "img/0.png").resolve())
    assert items[0]["index"] == 3 and isinstance(items[0]["index"], int) and items[0]["key"] == "train_images"
    assert items[1]["index"] is None and items[1]["key"] is None
    assert items[2]["label"] is None and items[2]["modality"] is None and items[2]["plane"] == "axial"
    assert items[0]["label"] == 1 and items[0]["manifest"] == str(manifest.resolve()) and items[2]["row"] == 2
    assert [i["row"] for i in manifest_to_datalist(df, "val")] == [1]
    assert len(manifest_to_datalist(df, ["train", "val"])) == 3
    with pytest.raises(ValueError, match="no rows for split"):
        manifest_to_datalist(df, "test")


@pytest.mark.parametrize("drop", ["path", "modality", "case_id", "split"])
def test_missing_column_named(tmp_path, drop):
    rows = [{k: v for k, v in _row(0).items() if k != drop}]
    manifest = _make(tmp_path, rows)
    with pytest.raises(ValueError, match=rf"{manifest.name}.*\['{drop}'\]"):
        read_manifest(manifest)


def test_missing_file_names_row(tmp_path):
    manifest = _make(tmp_path, [_row(0), _row(1, path="missing/x.png")])
    with pytest.raises(FileNotFoundError, match=r"m\.csv row 1: file not found: .*missing/x\.png"):
        read_manifest(manifest)
    assert len(read_manifest(manifest, check_files=False)) == 2  # no row silently dropped


def test_missing_mask_file_names_row(tmp_path):
    manifest = _make(tmp_path, [_row(0, mask_heart="img/0.png"), _row(1, mask_heart="missing/m.png")])
    with pytest.raises(FileNotFoundError, match="row 1: file not found"):
        read_manifest(manifest)


@pytest.mark.parametrize("bad", ["1.5", "abc", "-1"])
def test_bad_index_names_row(tmp_path, bad):
    manifest = _make(tmp_path, [_row(0, index=0), _row(1, index=bad)])
    with pytest.raises(ValueError, match="row 1: column 'index'"):
        read_manifest(manifest)


def test_empty_required_cell_names_row(tmp_path):
    manifest = _make(tmp_path, [_row(0), _row(1, case_id="")])
    with pytest.raises(ValueError, match="row 1: required column 'case_id' is empty"):
        read_manifest(manifest)


def test_write_roundtrip_relative(tmp_path):
    manifest = _make(tmp_path, [_row(0, index=2, label=1), _row(1, label=0)])
    df = read_manifest(manifest)
    out = write_manifest(df, tmp_path / "sub" / "copy.csv")
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert "row" not in raw.columns and "manifest" not in raw.columns
    assert list(raw.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert raw["path"].iloc[0] == "../img/0.png"
    again = read_manifest(out)
    assert list(again["path"]) == list(df["path"])
    np.testing.assert_allclose(again["label"].to_numpy(dtype=float), [1, 0])
    assert again["index"].iloc[0] == 2


def test_write_requires_columns(tmp_path):
    with pytest.raises(ValueError, match="missing required column"):
        write_manifest(pd.DataFrame({"path": ["a.png"]}), tmp_path / "x.csv")


@pytest.fixture
def volume_manifest(tmp_path: Path) -> Path:
    """PNG rows in train/val and MRNet-style volumes (no index) in train/test."""
    from PIL import Image

    (tmp_path / "img").mkdir()
    rows = []
    for i in range(3):
        Image.fromarray(np.full((4, 5), i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append(_row(i, split="train" if i < 2 else "val", label=i % 2))
    for v, split in enumerate(["train", "test", "train"]):
        np.save(tmp_path / "img" / f"knee{v}.npy", np.zeros((5 + v, 8, 8), np.uint8))
        rows.append(_row(10 + v, path=f"img/knee{v}.npy", modality="MRI", anatomy="knee", split=split, label=v % 2))
    path = tmp_path / "vols.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "splits, slice_mode, central_slices",
    [(None, "all", 1), ("train", "all", 1), (["train", "val"], "central", 3), (["train"], "random", 1),
     ("test", "central", 20)],
)
def test_load_datalist_equals_the_bundle_expression(volume_manifest, splits, slice_mode, central_slices):
    from modan_monai.data.slicing import expand_volume_slices

    old = expand_volume_slices(
        manifest_to_datalist(read_manifest(volume_manifest), splits=splits), mode=slice_mode, k=central_slices
    )
    new = load_datalist(volume_manifest, splits=splits, slice_mode=slice_mode, central_slices=central_slices)
    assert new == old and len(new) > 0
    assert all(r["source"] == f"manifest {r['manifest']} row {r['row']}: {r['image']}" for r in new)
    assert load_datalist(read_manifest(volume_manifest), splits, slice_mode, central_slices) == old


def test_load_datalist_from_bundle_json(volume_manifest):
    from monai.bundle import ConfigParser

    parser = ConfigParser({
        "imports": ["$import modan_monai", "$import modan_monai.data"],
        "manifest": str(volume_manifest), "splits": ["train"], "slice_mode": "central", "central_slices": 2,
        "datalist": "$modan_monai.data.load_datalist(@manifest, splits=@splits, slice_mode=@slice_mode, "
                    "central_slices=@central_slices)",
    })
    parser.get_parsed_content("imports")  # as ConfigWorkflow does first
    rows = parser.get_parsed_content("datalist")
    # 2 PNG rows + 2 central slices of each of the two training volumes (5 and 7 slices)
    assert [(Path(r["image"]).name, r["index"]) for r in rows] == [
        ("0.png", None), ("1.png", None), ("knee0.npy", 1), ("knee0.npy", 2), ("knee2.npy", 2), ("knee2.npy", 3)
    ]


def test_load_datalist_errors_name_the_problem(volume_manifest, tmp_path):
    with pytest.raises(ValueError, match=r"no rows for split\(s\) \['tset'\]"):
        load_datalist(volume_manifest, splits="tset")
    with pytest.raises(ValueError, match="mode must be one of"):
        load_datalist(volume_manifest, slice_mode="middle")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        load_datalist(tmp_path / "nope.csv")


# --- validation at read time: nothing is dropped in silence -------------------------------------------------------


def test_split_outside_train_val_test_names_rows_and_allowed_values(tmp_path):
    manifest = _make(tmp_path, [_row(0), _row(1, split="training")] + [_row(i, split="Val") for i in range(2, 14)])
    with pytest.raises(ValueError) as err:
        read_manifest(manifest)
    msg = str(err.value)
    assert msg.startswith(f"manifest {manifest.resolve()}: 13 row(s) have a split value outside "
                          "('train', 'val', 'test'): row 1 'training'; row 2 'Val';")
    assert "(+3 more)" in msg and "Values found: ['Val', 'training']" in msg
    builder_frame = pd.DataFrame([_row(0, split="dev")])  # a frame that never went through read_manifest
    with pytest.raises(ValueError, match=r"manifest frame: 1 row\(s\) have a split value .*row 0 'dev'"):
        manifest_to_datalist(builder_frame)


def test_duplicate_entries_error_or_warn(tmp_path, caplog):
    rows = [_row(0), _row(1), _row(0, case_id="x"), _row(2, index=1), _row(2, index=1), _row(2, index=2)]
    manifest = _make(tmp_path, rows)
    with pytest.raises(ValueError) as err:
        read_manifest(manifest)
    msg = str(err.value)
    assert f"manifest {manifest.resolve()}: 2 image entries (path, key, index) listed on more than one row" in msg
    assert f"rows 0, 2: {(tmp_path / 'img/0.png').resolve()}" in msg and "rows 3, 4: " in msg and " index 1" in msg
    assert "duplicates='warn'" in msg
    with caplog.at_level("WARNING", logger="modan_monai.data.manifest"):
        df = read_manifest(manifest, duplicates="warn")
        items = manifest_to_datalist(df)  # the policy travels with the frame: no second check
    assert len(items) == 6 and caplog.text.count("listed on more than one row") == 1
    assert len(load_datalist(manifest, duplicates="warn")) == 6
    with pytest.raises(ValueError, match="listed on more than one row"):
        manifest_to_datalist(df, duplicates="error")


def test_datalist_counts_logged(volume_manifest, caplog):
    with caplog.at_level("INFO", logger="modan_monai.data"):
        rows = load_datalist(volume_manifest, splits=["train", "val"], slice_mode="central", central_slices=2)
    assert len(rows) == 3 + 4
    assert f"manifest {volume_manifest.resolve()}: 6 row(s) (train 4, val 1, test 1); datalist of split(s) " \
           "['train', 'val']: 5 row(s)." in caplog.text
    assert "2 volume row(s) expanded into 4 slice row(s) (slice mode 'central'); datalist of 7 row(s) " \
           "(train 6, val 1)." in caplog.text


def test_directory_row_and_npz_row_without_index_name_row_and_file(tmp_path):
    manifest = _make(tmp_path, [_row(0), _row(1, path="img/series_001")])
    (tmp_path / "img" / "series_001").unlink()
    (tmp_path / "img" / "series_001").mkdir()
    folder = (tmp_path / "img" / "series_001").resolve()
    with pytest.raises(ValueError, match=rf"m\.csv row 1: column 'path' names a directory, not a file: {folder} "):
        read_manifest(manifest)
    manifest = _make(tmp_path, [_row(0, path="img/pneumoniamnist.npz", key="train_images", index=0),
                                _row(1, path="img/pneumoniamnist.npz", key="train_images")], name="n.csv")
    np.savez(tmp_path / "img" / "pneumoniamnist.npz", train_images=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError) as err:
        read_manifest(manifest)
    assert str(err.value).startswith(f"manifest {manifest.resolve()} row 1: "
                                     f"{(tmp_path / 'img/pneumoniamnist.npz').resolve()}: array 'train_images' of "
                                     "shape (3, 4, 4) holds 3 images and the row has no 'index': the index column "
                                     "is required for .npz rows")
