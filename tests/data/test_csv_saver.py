"""HeaderCSVSaver: MONAI's CSVSaver with a header row, replacing or appending, and its refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from modan_monai.data import HeaderCSVSaver, probability_header

HEADER = ["file", "p(negative)", "p(positive)"]


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_header_then_rows_and_appending_keeps_one_header(tmp_path: Path) -> None:
    (tmp_path / "predictions.csv").write_text("stale\n")
    saver = HeaderCSVSaver(HEADER, output_dir=tmp_path)
    assert (tmp_path / "predictions.csv").read_text() == "stale\n"  # nothing touched before finalize
    saver.save_batch(np.array([[0.25, 0.75], [1.0, 0.0]]), {"filename_or_obj": ["a.png", "b,c.png"]})
    saver.finalize()
    saver.save(np.array([0.5, 0.5]), {"filename_or_obj": "d.png"})
    saver.finalize()  # a later epoch appends
    assert rows(tmp_path / "predictions.csv") == [HEADER, ["a.png", "0.25", "0.75"], ["b,c.png", "1.0", "0.0"],
                                                  ["d.png", "0.5", "0.5"]]
    again = HeaderCSVSaver(HEADER, output_dir=tmp_path, overwrite=False)
    again.save(np.array([0.0, 1.0]), {"filename_or_obj": "e.png"})
    again.finalize()
    assert rows(tmp_path / "predictions.csv")[0] == HEADER and len(rows(tmp_path / "predictions.csv")) == 5


def test_row_width_other_than_the_header_is_refused_naming_file_and_row(tmp_path: Path) -> None:
    saver = HeaderCSVSaver(HEADER, output_dir=tmp_path, filename="test_predictions.csv")
    saver.save(np.array([0.2, 0.3, 0.5]), {"filename_or_obj": "x.png"})
    with pytest.raises(ValueError, match=r"test_predictions.csv: row 'x.png' has 3 values but the header"):
        saver.finalize()
    assert not (tmp_path / "test_predictions.csv").exists()


def test_probability_header() -> None:
    assert probability_header(["negative", "positive"]) == HEADER
    for bad in ([], ["a", "a"], ["a", " "]):
        with pytest.raises(ValueError, match="class_names must be distinct non-empty names"):
            probability_header(bad)
    with pytest.raises(ValueError, match="needs the file column"):
        HeaderCSVSaver(["file"], output_dir="x")
