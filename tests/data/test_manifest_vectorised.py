"""The column-wise read_manifest / manifest_to_datalist against plainly written per-row references."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modan_monai.data.manifest import check_duplicates, manifest_to_datalist, read_manifest

posix_only = pytest.mark.skipif(os.name != "posix", reason="symlinks and POSIX path syntax")


# --- per-row references: one Path / one stat / one dict per row ---------------------------------------------------


def reference_path(value: Any, base: Path) -> str | None:
    if pd.isna(value):
        return None
    path = Path(str(value))
    return str(path) if path.is_absolute() else str((base / str(value)).resolve())


def reference_check(manifest: Path, df: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        for row, value in zip(df["row"], df[column]):
            if value is None:
                continue
            if Path(value).is_dir():
                raise ValueError(f"manifest {manifest} row {row}: column {column!r} names a directory, not a file: "
                                 f"{value} ")
            if not Path(value).exists():
                raise FileNotFoundError(f"manifest {manifest} row {row}: file not found: {value}")


def reference_cell(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, (list, tuple, dict, np.ndarray)) and pd.isna(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def reference_datalist(df: pd.DataFrame) -> list[dict[str, Any]]:
    items = []
    for position, record in enumerate(df.to_dict(orient="records")):
        item = {str(k): reference_cell(v) for k, v in record.items()}
        item["image"] = str(item.pop("path"))
        item["key"] = None if item.get("key") is None else str(item["key"])
        item["index"] = None if item.get("index") is None else int(item["index"])
        item["row"] = int(item["row"]) if item.get("row") is not None else position
        item["manifest"] = None if item.get("manifest") is None else str(item["manifest"])
        for column in ("split", "dataset", "case_id"):
            item[column] = str(item[column])
        item["source"] = f"manifest {item['manifest']} row {item['row']}: {item['image']}"
        items.append(item)
    return items


def assert_same_items(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same keys in the same order, same values of the same types."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert list(got) == list(want)
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()], (got, want)
        assert got == want


def outcome(fn: Any) -> tuple[type, str] | str:
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the comparison is the point
        return type(error), str(error)
    return "ok"


# --- a varied manifest ----------------------------------------------------------------------------------------------


def _base_row(i: int, path: str, **extra: Any) -> dict[str, Any]:
    row = {"path": path, "key": "", "index": "", "modality": ("XR", "CT", "")[i % 3], "anatomy": "chest",
           "split": ("train", "val", "test")[i % 3], "dataset": "toy", "case_id": f"{i // 2:04d}",
           "label": i % 2, "score": "" if i % 7 == 0 else f"{i / 8:.3f}", "grade": ("", "low", "high")[i % 3]}
    row.update(extra)
    return row


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


@pytest.fixture
def varied(tmp_path: Path) -> tuple[Path, Path]:
    """A 2,000-row manifest (and one with missing files): relative paths in large folders (listed once) and small
    ones (one stat each), spelled several ways, absolute paths, symlinked files and folders, a ``mask_`` column
    with empty cells, ``.npz`` rows with ``key``/``index``, integer, float and text columns with empty cells."""
    root, outside = tmp_path / "study", tmp_path / "outside"
    rows: list[dict[str, Any]] = []
    spellings = ("img/big/{}", "./img/big/{}", "img//big/{}", "img/x/../big/{}", "img/./big/{}")
    (root / "img" / "x").mkdir(parents=True)
    for i in range(1500):
        _touch(root / "img" / "big" / f"{i:04d}.png")
        rows.append(_base_row(len(rows), spellings[i % 5].format(f"{i:04d}.png")))
    for i in range(60):  # 20 folders of 3 files
        _touch(root / "img" / f"small{i // 3}" / f"{i}.png")
        rows.append(_base_row(len(rows), f"img/small{i // 3}/{i}.png"))
    for i in range(300):
        _touch(outside / "abs" / f"{i}.png")
        spelled = (str(outside / "abs" / f"{i}.png"), f"{outside}//abs/{i}.png", f"{outside}/./abs/{i}.png",
                   f"{outside}/abs/../abs/{i}.png")[i % 4]
        rows.append(_base_row(len(rows), spelled, key="k" if i % 4 else ""))
    for i in range(40):
        rows.append(_base_row(len(rows), f"../outside/abs/{i}.png", index=str(i % 3)))
    _touch(root / "real" / "target.png")
    for i in range(30):
        _touch(root / "real" / f"r{i}.png")
    os.symlink(root / "real", root / "img" / "linked")
    os.symlink(root / "real" / "target.png", root / "img" / "big" / "alias.png")
    rows.append(_base_row(len(rows), "img/big/alias.png"))
    rows.append(_base_row(len(rows), "img/linked/target.png", index="5"))
    rows.extend(_base_row(len(rows), f"img/linked/r{i}.png") for i in range(30))
    np.savez(root / "img" / "stack.npz", images=np.zeros((3, 4, 4), np.uint8))
    rows.extend(_base_row(len(rows), "img/stack.npz", key="images", index=str(i)) for i in range(3))
    _touch(root / "img" / "ünï cødé.png")
    rows.append(_base_row(len(rows), "img/ünï cødé.png"))
    while len(rows) < 2000:
        i = len(rows)
        _touch(root / "img" / "tail" / f"{i}.png")
        rows.append(_base_row(i, f"img/tail/{i}.png"))
    frame = pd.DataFrame(rows)
    frame["mask_heart"] = ""
    frame.loc[0:40, "mask_heart"] = [f"img/big/{i:04d}.png" for i in range(41)]
    frame.loc[1600, "mask_heart"] = str(outside / "abs" / "7.png")
    manifest = root / "m.csv"
    frame.to_csv(manifest, index=False)
    missing = pd.concat([frame, pd.DataFrame([_base_row(2000 + i, f"nowhere/{i}.png") for i in range(20)]
                                             + [_base_row(2020, "img/big/gone.png"), _base_row(2021, "/no/abs.png")])])
    with_missing = root / "missing.csv"
    missing.to_csv(with_missing, index=False)
    return manifest, with_missing


@posix_only
@pytest.mark.parametrize("check_files", [True, False])
def test_paths_and_datalist_equal_the_per_row_reference(varied, check_files):
    manifest, _ = varied
    raw = pd.read_csv(manifest, dtype=str, keep_default_na=False, na_values=[""])
    df = read_manifest(manifest, check_files=check_files)
    base = manifest.resolve().parent
    for column in ("path", "mask_heart"):
        assert df[column].tolist() == [reference_path(v, base) for v in raw[column]]
        assert df[column].dtype == object
    assert df["path"].iloc[1500 + 60 + 300 + 40] == str((base / "real" / "target.png"))  # the symlink, resolved
    reference_check(manifest.resolve(), df, ["path", "mask_heart"])  # every file exists: passes
    assert str(df["index"].dtype) == "Int64" and df["label"].dtype == np.int64 and df["score"].dtype == np.float64
    assert_same_items(manifest_to_datalist(df), reference_datalist(df))
    subset = df[df["split"].isin(["train", "test"])]
    assert_same_items(manifest_to_datalist(df, ["train", "test"]), reference_datalist(subset))
    items = manifest_to_datalist(df)
    assert items[0]["mask_heart"] == df["mask_heart"].iloc[0] and items[-1]["mask_heart"] is None
    assert items[7]["score"] is None and items[3]["modality"] == "XR" and items[2]["modality"] is None


@posix_only
def test_missing_files_resolve_like_the_reference_without_checks(varied):
    _, with_missing = varied
    raw = pd.read_csv(with_missing, dtype=str, keep_default_na=False, na_values=[""])
    df = read_manifest(with_missing, check_files=False)
    assert len(df) == len(raw)  # no row dropped
    assert df["path"].tolist() == [reference_path(v, with_missing.resolve().parent) for v in raw["path"]]
    assert_same_items(manifest_to_datalist(df), reference_datalist(df))


def _write(tmp_path: Path, paths: list[str], name: str = "e.csv", **columns: list[str]) -> Path:
    frame = pd.DataFrame([_base_row(i, p) for i, p in enumerate(paths)])
    for column, values in columns.items():
        frame[column] = values
    out = tmp_path / name
    frame.to_csv(out, index=False)
    return out


@posix_only
@pytest.mark.parametrize(
    "case",
    ["missing_in_listed_folder", "missing_in_small_folder", "folder_in_listed_folder", "folder_row", "broken_symlink",
     "symlink_to_folder", "missing_absolute", "missing_mask", "first_bad_row_wins", "missing_folder", "symlink_loop"],
)
def test_file_check_errors_name_the_row_like_the_reference(tmp_path, case):
    for i in range(40):
        _touch(tmp_path / "big" / f"{i}.png")
    _touch(tmp_path / "small" / "0.png")
    (tmp_path / "big" / "sub").mkdir()
    os.symlink(tmp_path / "nothing.png", tmp_path / "big" / "broken.png")
    os.symlink(tmp_path / "small", tmp_path / "big" / "dirlink")
    os.symlink("loop", tmp_path / "loop")
    good = [f"big/{i}.png" for i in range(40)]
    masks: dict[str, list[str]] = {}
    paths = {
        "missing_in_listed_folder": good + ["big/nope.png"],
        "missing_in_small_folder": good + ["small/nope.png"],
        "folder_in_listed_folder": good + ["big/sub"],
        "folder_row": good + ["small"],
        "broken_symlink": good + ["big/broken.png"],
        "symlink_to_folder": good + ["big/dirlink"],
        "missing_absolute": good + [str(tmp_path / "small" / "nope.png")],
        "missing_mask": good,
        "first_bad_row_wins": good[:5] + ["small/nope.png", "big/sub", "big/nope.png"] + good[5:],
        "missing_folder": good + [f"gone/{i}.png" for i in range(20)],
        "symlink_loop": good + ["loop/a.png"],
    }[case]
    if case == "missing_mask":
        masks["mask_heart"] = [""] * 30 + ["big/0.png"] * 3 + ["big/nope.png"] + [""] * 6
    manifest = _write(tmp_path, paths, **masks)
    base = manifest.resolve().parent

    def reference() -> None:
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False, na_values=[""])
        for column in ["path"] + list(masks):
            df[column] = pd.Series([reference_path(v, base) for v in df[column]], index=df.index, dtype=object)
        df["row"] = np.arange(len(df))
        reference_check(manifest.resolve(), df, ["path"] + list(masks))

    expected = outcome(reference)
    actual = outcome(lambda: read_manifest(manifest))
    assert expected != "ok"
    assert actual[0] is expected[0] and actual[1].startswith(expected[1].rstrip())
    if case == "first_bad_row_wins":
        assert " row 5: file not found" in actual[1]
    if case != "symlink_loop":
        assert f"manifest {manifest.resolve()} row " in actual[1]
        assert outcome(lambda: read_manifest(manifest, check_files=False)) == "ok"


def test_builder_frame_datalist_equals_the_reference():
    n = 6
    frame = pd.DataFrame({
        "path": [f"/data/{i}.png" for i in range(n)], "modality": ["XR", None, "CT", np.nan, "MR", "US"],
        "anatomy": ["chest"] * n, "split": ["train", "val", "test", "train", "train", "val"], "dataset": ["d"] * n,
        "case_id": [1, 2, 3, 4, 5, 6], "key": [None, "k", np.nan, 3, "a", "b"], "index": [0, 1.0, None, 3, 4, 5],
        "f": [0.5, np.nan, 1, 2, 3, 4], "i32": np.arange(n, dtype=np.int32), "flag": [True, False] * 3,
        "I": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"), "F": pd.array([1.5, None, 3, 4, 5, 6], dtype="Float64"),
        "B": pd.array([True, None, False, True, True, False], dtype="boolean"),
        "numpy": pd.Series([np.int64(1), np.float32(2.5), np.str_("s"), None, np.bool_(True),
                            np.datetime64("2020-01-01")], dtype=object),
        "when": pd.to_datetime(["2020-01-01", None, "2020-01-03", "2020-01-04", "2020-01-05", "2020-01-06"]),
        "cat": pd.Categorical(["a", "b", None, "a", "b", "a"]), "cat_int": pd.Categorical([1, 2, None, 1, 2, 1]),
        "things": pd.Series([[1], (2,), {"a": 1}, "x", None, Path("p")], dtype=object),
        "image": ["old"] * n, 5: list(range(n)), "row": [3, None, 5, 6, 7, 8],
    })
    for splits in (None, "train"):
        subset = frame if splits is None else frame[frame["split"] == splits]
        expected = reference_datalist(subset)
        actual = manifest_to_datalist(frame, splits)
        assert len(actual) == len(expected)
        for got, want in zip(actual, expected):
            assert list(got) == list(want)
            assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
            assert got == want
    assert manifest_to_datalist(frame.iloc[:0]) == []


def test_duplicates_compare_the_entry_text():
    # index 1 and "1" are the same entry; 1 and 1.0 are not (their text differs); an empty key equals a missing one.
    frame = pd.DataFrame({"path": ["a", "a", "a", "b", "b"], "index": [1, "1", 1.0, None, None],
                          "key": [None, np.nan, None, "", np.nan]})
    with pytest.raises(ValueError) as error:
        check_duplicates(frame)
    assert "2 image entries" in str(error.value)
    assert "rows 0, 1: a index 1; rows 3, 4: b." in str(error.value)
    assert check_duplicates(frame, "warn") == 2
    nullable = pd.DataFrame({"path": ["a", "a", "a"], "index": pd.array([1, None, None], dtype="Int64")})
    with pytest.raises(ValueError, match=r"1 image entry .*: rows 1, 2: a\."):
        check_duplicates(nullable)
    assert check_duplicates(pd.DataFrame({"path": ["a", "b"], "index": [1, 1]})) == 0
