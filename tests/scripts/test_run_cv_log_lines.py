"""``scripts/run_cv.py`` prints one line per fold (issue 22): no per-epoch lines of the classify bundle (MONAI's
``StatsHandler`` "Epoch[n] Metrics" / "Key metric", ignite, encoder lines), every log line in the bundles' format."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - (?P<name>[\w.]+) - (?P<level>[A-Z]+) - (?P<message>.*)$")


def three_class_manifest(root: Path) -> Path:
    """The 3-class PNG manifest of ``test_run_cv_tasks.py`` (its writer, reused)."""
    spec = importlib.util.spec_from_file_location("run_cv_tasks_helpers", Path(__file__).with_name(
        "test_run_cv_tasks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_three_class_manifest(root, n_cases=12, per_case=1)


def test_run_cv_prints_fold_lines_only_in_one_format(tmp_path: Path) -> None:
    manifest = three_class_manifest(tmp_path / "data")
    out = tmp_path / "cv"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_cv.py"), "--task", "multiclass", "--manifest", str(manifest),
         "--label-column", "label", "--fractions", "100", "--folds", "2", "--init", "scratch", "--modes", "finetune",
         "--repeats", "1", "--epochs", "2", "--batch-size", "8", "--image-size", "28", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert not [line for line in lines if "Epoch[" in line or "Key metric" in line], lines
    # stdout: the closing line; stderr: the log, one line per fold between the start and the files written
    assert done.stdout.splitlines() == [f"2 fold results in {out}/results.csv; summary in {out}/summary.md"]
    logged = done.stderr.splitlines()
    parsed = [LOG_LINE.match(line) for line in logged]
    assert all(parsed), logged
    assert {(m["name"], m["level"]) for m in parsed} == {("modan_monai.evaluation", "INFO")}, logged
    assert [m["message"][:5] for m in parsed if m["message"].startswith("[")] == ["[1/2]", "[2/2]"]
