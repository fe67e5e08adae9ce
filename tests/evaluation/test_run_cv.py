"""``scripts/run_cv.py`` end to end on a tiny manifest (the classify bundle per fold), resuming, bad labels."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from modan_monai.evaluation import RESULT_COLUMNS, run_protocol
from modan_monai.networks import ResNet18Encoder, save_encoder

from evaluation_data import write_png_manifest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run_cv.py"
KEYS = ["init", "mode", "fraction", "repeat", "fold"]


def run_cli(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only fight over busy cores
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def test_run_cv_end_to_end_and_rerun(tmp_path: Path, png_manifest: Path, caplog: pytest.LogCaptureFixture) -> None:
    encoder = save_encoder(ResNet18Encoder(), tmp_path / "encoder.pt", method="test")
    out = tmp_path / "cv"
    args = [
        "--manifest", str(png_manifest), "--label-column", "finding", "--positive", "malignant",
        "--init", "scratch", "--init", f"pre={encoder}", "--reference", "scratch",
        "--modes", "finetune", "linear_probe", "--fractions", "50", "100", "--repeats", "2", "--folds", "2",
        "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--out", str(out),
    ]
    log = run_cli(*args)
    assert "[32/32]" in log and "~0m00s left" in log  # progress with ETA
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 * 2 * 2 * 2 * 2 and list(results.columns) == list(RESULT_COLUMNS)
    assert not results.duplicated(KEYS).any()
    assert set(results["init"]) == {"scratch", "pre"} and set(results["mode"]) == {"finetune", "linear_probe"}
    assert results["auc"].between(0, 1).all() and (results["n_test"] == 12).all()
    # same partition for every init, mode and fraction: the comparisons are paired
    assert results.groupby(["repeat", "fold"])["n_test"].nunique().eq(1).all()
    assert (results.loc[results["fraction"] == 50, "n_train"] + results.loc[results["fraction"] == 50, "n_val"]
            < 12).all()
    folds = pd.read_csv(out / "folds.csv", dtype={"case_id": str})
    assert len(folds) == 24 and (folds.groupby("case_id")[["fold_r0", "fold_r1"]].nunique() == 1).all().all()

    summary = (out / "summary.md").read_text()
    for text in ("## finetune: AUC", "## linear_probe: AUC", "| 50% | 100% |", "| pre |", "(n=2)",
                 "Wilcoxon signed-rank test vs `scratch`", "two-sided", "one-sided (greater)"):
        assert text in summary, text
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 32 * 12 and predictions["score"].between(0, 1).all()

    def rerun() -> pd.DataFrame:
        return run_protocol(
            png_manifest, "finding", {"scratch": "scratch", "pre": str(encoder)}, out, positive="malignant",
            modes=["finetune", "linear_probe"], fractions=[50, 100], repeats=2, folds=2, epochs=1, batch_size=8,
            image_size=32, reference="scratch",
        )

    before = (out / "results.csv").read_bytes()
    with caplog.at_level(logging.INFO, logger="modan_monai.evaluation"):
        again = rerun()  # everything is done: nothing is trained again
    assert "32 already done" in caplog.text and "[1/" not in caplog.text
    assert (out / "results.csv").read_bytes() == before and len(again) == 32

    # an interrupted run: the last two folds never reached results.csv
    caplog.clear()
    pd.read_csv(out / "results.csv").iloc[:-2].to_csv(out / "results.csv", index=False)
    with caplog.at_level(logging.INFO, logger="modan_monai.evaluation"):
        resumed = rerun()
    assert "30 already done" in caplog.text and "[2/2]" in caplog.text
    assert len(resumed) == 32 and not resumed.duplicated(KEYS).any()
    pd.testing.assert_frame_equal(resumed.iloc[:30], results.iloc[:30])
    assert len(pd.read_csv(out / "predictions.csv").drop_duplicates(KEYS + ["row"])) == 32 * 12
    # every fold ran the classify bundle into its own folder: one TensorBoard file each (the two re-run folds
    # started from an emptied folder), no model files
    events = [p.relative_to(out / "runs").parts[:3] for p in (out / "runs").rglob("events.out.tfevents.*")]
    assert len(events) == len(set(events)) == 32 and ("pre", "linear_probe", "fraction50_repeat1_fold1") in events
    assert not list(out.rglob("*.pt"))
    with pytest.raises(ValueError, match=r"other settings \(epochs: 1 -> 2\)"):
        run_protocol(png_manifest, "finding", {"scratch": "scratch"}, out, positive="malignant", fractions=[100],
                     repeats=2, folds=2, epochs=2, batch_size=8, image_size=32)


@pytest.mark.parametrize(
    "column, positive, match",
    [
        ("nodule", None, r"label column 'nodule' not found in manifest .*columns: \["),
        ("finding", None, r"label column 'finding' in manifest .* is not binary 0/1: values seen \{'benign' \(x12\), "
                          r"'malignant' \(x12\)\}"),
        ("case_id", "case00", r"label column 'case_id' in manifest .* is not binary: 12 distinct values"),
    ],
)
def test_bad_label_column(tmp_path: Path, png_manifest: Path, column: str, positive: str | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run_protocol(png_manifest, column, {"scratch": "scratch"}, tmp_path, positive=positive)


def test_single_class_fold_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture, load_script: Callable) -> None:
    manifest = write_png_manifest(tmp_path / "data", n_cases=5, per_case=1)  # 2 positive cases
    rc = load_script("run_cv").main(["--manifest", str(manifest), "--label-column", "label", "--init", "scratch",
                             "--folds", "3", "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "cannot stratify 3 folds" in err and "at least 3 cases of each class" in err


def test_fold_folders_of_init_names() -> None:
    from modan_monai.evaluation.protocol import _safe_name

    assert _safe_name("modan_v2.1") == "modan_v2.1"
    altered = [_safe_name(n) for n in ("a b", "a/b", "../x", "é")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.+-]+-[0-9a-f]{8}", n) for n in altered) and len(set(altered)) == 4
    assert _safe_name("a_b") != _safe_name("a b")  # two inits never share a folder
