"""Appends to the CSV files a resumed run reads: never a half-written line left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from modan_monai.utils import append_complete_lines, atomic_append_text


def test_appends_leave_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    results = atomic_append_text(tmp_path / "results.csv", "a,b\n1,2\n")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr("modan_monai.utils.atomic.os.replace", fail)  # a write that never completes
    with pytest.raises(OSError, match="killed"):
        atomic_append_text(results, "3,4\n")
    monkeypatch.undo()
    assert results.read_text() == "a,b\n1,2\n" and [p.name for p in tmp_path.iterdir()] == ["results.csv"]

    predictions = tmp_path / "predictions.csv"
    predictions.write_text("a,b\n1,2\n3,")  # the last append was killed midway
    append_complete_lines(predictions, "5,6\n")
    assert predictions.read_text() == "a,b\n1,2\n5,6\n"
    assert "removed a partial last line (2 bytes)" in caplog.text
