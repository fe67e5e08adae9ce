"""Smoke run of ``scripts/bench_precision.py``: it finishes and prints every row (no timing is asserted)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_precision.py"
# the smallest run of the script: one step per row and round, one round, 2 loss steps, 16 px images
SMOKE = ["--steps", "1", "--warmup", "0", "--image-size", "16", "--batch-size", "4", "--rounds", "1", "--loss-steps", "2"]
ROWS = ["bare encoder fp32 (eager)", "fp32", "channels_last", "bf16", "bf16 + channels_last"]


def _row(lines: list[str], first_cell: str) -> list[str]:
    """The cells of the Markdown row whose first cell is ``first_cell`` (exactly one such row)."""
    rows = [line for line in lines if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"expected one row {first_cell!r}, found {rows}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_smoke_run_prints_every_setting_and_the_losses():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *SMOKE], capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()

    for name in ROWS:  # setting | images/s | ratio | rounds
        cells = _row(lines, name)
        assert len(cells) == 4, cells
        images_per_s, ratio = float(cells[1]), float(cells[2])
        assert images_per_s > 0 and math.isfinite(images_per_s) and ratio > 0, cells
        assert len(cells[3].split(",")) == 1, cells  # one value per round
    assert _row(lines, ROWS[0])[2] == "1.00"  # the reference row
    assert "fp16" not in " ".join(line.split("|")[1] for line in lines if line.startswith("| "))  # CUDA only
    target = re.compile(r"target bf16 \+ channels_last >= 1\.6x the fp32 bare encoder: \d+\.\d\dx, (met|NOT met)$")
    assert any(target.match(line) for line in lines), proc.stdout

    for step in ("1", "2"):  # step | fp32 loss | bf16 loss | relative difference
        cells = _row(lines, step)
        fp32, bf16 = float(cells[1]), float(cells[2])
        assert math.isfinite(fp32) and math.isfinite(bf16) and fp32 > 0 and bf16 > 0, cells
        assert cells[3].endswith("%"), cells
