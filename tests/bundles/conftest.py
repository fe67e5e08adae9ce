"""Helpers shared by the bundle tests: the ``python -m monai.bundle`` command line, a summary's next command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _bundle_cli(bundle: str, command: str, *args: str, check: bool = True, **overrides: object) -> str:
    """Run ``python -m monai.bundle <command> <args> --key value...`` in ``bundles/<bundle>``; return its output.

    With ``check`` the run must succeed (the end of its output is shown otherwise).
    """
    cmd = [sys.executable, "-m", "monai.bundle", command, *args]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.run(cmd, cwd=BUNDLES / bundle, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, log[-6000:]
    else:
        assert proc.returncode != 0, f"expected {command} to fail:\n{log[-3000:]}"
    return log


@pytest.fixture
def bundle_cli() -> Callable[..., str]:
    """``bundle_cli(bundle, command, *args, check=True, **overrides) -> output`` (see ``_bundle_cli``)."""
    return _bundle_cli


def _run_summary_command(summary_json: Path, cwd: Path) -> str:
    """Run the first ``next`` command of a bundle's ``summary.json`` exactly as printed (``bash -c``, from ``cwd``,
    this interpreter's folder first on ``PATH`` so that ``python`` is this environment's); return its output."""
    command = json.loads(summary_json.read_text())["next"][0]
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{command}\n{log[-6000:]}"
    return log


@pytest.fixture
def run_summary_command() -> Callable[[Path, Path], str]:
    """``run_summary_command(summary_json, cwd) -> output``: the run's printed next command, run as printed."""
    return _run_summary_command
