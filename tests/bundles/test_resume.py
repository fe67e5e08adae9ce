"""Exact resume of the training bundles: SIGKILL during epoch 3, the same command again, the weights of an uninterrupted run.

Each bundle runs as a subprocess (``python -m monai.bundle run``, tiny: 32 px, a few images, 4 epochs, seed 0):
once uninterrupted, once killed with SIGKILL at the first progress line of epoch 3 (after the epoch-2 checkpoint,
before the epoch-3 one) and then started again with the same command. On CPU the last checkpoint (network,
optimiser, scheduler, loss, random states, trainer state...) and ``encoder.pt`` / ``model.pt`` /
``model_final.pt`` must equal the uninterrupted run's bit for bit, and the classify and segment runs'
``summary.json`` must report the same best validation epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigWorkflow

from modan_monai.data import ensure_demo_corpus
from modan_monai.data.demo_segmentation import demo_segmentation_manifest
from modan_monai.data.demo_tasks import demo_classification_manifest
from modan_monai.handlers import list_checkpoints
from modan_monai.utils import max_abs_difference, state_differences

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
EPOCHS = 4
KILL_LINE = f"epoch 3/{EPOCHS}  iter 1/"  # ProgressPrinter's first line of epoch 3
ATTEMPTS = 3  # a kill that lands after the epoch-3 checkpoint (a very slow reader) is retried in a new folder


def command(bundle: str, out: Path, config_file: str = "configs/train.json", **overrides: Any) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file,
           "--logging_file", "configs/logging.conf", "--output_dir", str(out)]
    for key, value in {"epochs": EPOCHS, "image_size": 32, "log_interval": 1, "seed": 0, **overrides}.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def environment() -> dict[str, str]:
    # bit for bit: on CPU, one thread in every run (the uninterrupted run goes on beside the other two)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


def start(bundle: str, cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=BUNDLES / bundle, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=environment())


def finish(proc: subprocess.Popen) -> str:
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-6000:]
    return log


def run(bundle: str, cmd: list[str]) -> str:
    return finish(start(bundle, cmd))


def run_and_kill(bundle: str, cmd: list[str]) -> str:
    """Start ``cmd``, SIGKILL it when it prints :data:`KILL_LINE`; return its output so far."""
    proc = start(bundle, cmd)
    watchdog = threading.Timer(600, proc.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if KILL_LINE in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        proc.wait(timeout=60)
        proc.stdout.close()
    log = "".join(lines)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed (exit {proc.returncode}):\n{log[-6000:]}"
    return log


def load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_summary(root: Path, resumed: Path) -> dict[str, Any]:
    """Assert the resumed run's ``summary.json`` reports what the uninterrupted run's does (the best validation epoch
    may come before the kill: the checkpoint brings it back); return it."""
    whole = json.loads((root / "whole" / "summary.json").read_text())
    again = json.loads((resumed / "summary.json").read_text())
    keys = ["task", "metric", "best", "last", "epochs_completed", "max_epochs", "model_exists", "final_model_exists"]
    assert {k: again[k] for k in keys} == {k: whole[k] for k in keys}
    assert again["epochs_completed"] == EPOCHS and again["best"] is not None and again["model_exists"]
    assert again["model"] == str(resumed / "model.pt") and again["next"][0].endswith(f"--output_dir {resumed}")
    return again


def killed_then_resumed(bundle: str, root: Path, **overrides: Any) -> tuple[Path, str]:
    """Kill a run during epoch 3 and run the same command again; return its folder and the second log."""
    for attempt in range(ATTEMPTS):
        out = root / f"resumed{attempt}"
        run_and_kill(bundle, command(bundle, out, **overrides))
        left = [p.name for _, p in list_checkpoints(out)]
        if left == ["checkpoint_epoch=2.pt"]:
            break
        assert left == ["checkpoint_epoch=3.pt"], f"after the kill: {left}"  # killed too late: try again
    else:
        pytest.fail(f"{ATTEMPTS} kills in a row landed after the epoch-3 checkpoint")
    log = run(bundle, command(bundle, out, **overrides))
    assert "resuming from" in log and "checkpoint_epoch=2.pt (epoch 2, iteration" in log, log[-3000:]
    return out, log


def compare(whole: Path, resumed: Path, files: list[str]) -> float:
    """Assert the last checkpoints and ``files`` are identical; return the max abs network weight difference."""
    assert [p.name for _, p in list_checkpoints(resumed)] == [f"checkpoint_epoch={EPOCHS}.pt"]
    a, b = load(whole / f"checkpoint_epoch={EPOCHS}.pt"), load(resumed / f"checkpoint_epoch={EPOCHS}.pt")
    difference = max_abs_difference(a["network"], b["network"])
    print(f"\n{whole.parent.name}: max abs network weight difference {difference}")
    assert not state_differences(a, b), f"{state_differences(a, b)[:5]}: max abs difference {difference}"
    for name in files:
        assert not state_differences(load(whole / name), load(resumed / name)), name
    assert b["trainer"]["epoch_length"] * EPOCHS == b["trainer"]["iteration"]
    return difference


def resume_matches_whole_run(bundle: str, root: Path, files: list[str], **data: Any) -> tuple[Path, dict[str, Any]]:
    """The uninterrupted run beside a killed and resumed one; assert they end identical.

    Returns:
        The resumed run's folder and its last checkpoint.
    """
    whole = start(bundle, command(bundle, root / "whole", **data))
    resumed, _ = killed_then_resumed(bundle, root, **data)
    finish(whole)
    assert compare(root / "whole", resumed, files) == 0.0
    return resumed, load(resumed / f"checkpoint_epoch={EPOCHS}.pt")


def test_pretrain_bundle_resumes_exactly(tmp_path: Path) -> None:
    manifest = ensure_demo_corpus(tmp_path / "demo", size=32, per_pair=4)
    _, last = resume_matches_whole_run(
        "pretrain", tmp_path, ["encoder.pt"], dataset_dir=tmp_path / "demo", manifest=manifest, batch_size=8
    )
    assert set(last) >= {"network", "optimizer", "lr_scheduler", "loss", "random_states", "trainer"}


def test_adamv2_resumes_exactly(tmp_path: Path) -> None:
    """Adam-v2: student, EMA teacher, heads, DINO centre, AdamW, schedules and the level of each epoch."""
    manifest = ensure_demo_corpus(tmp_path / "demo", size=32, per_pair=4)
    _, last = resume_matches_whole_run(
        "pretrain", tmp_path, ["encoder.pt"], dataset_dir=tmp_path / "demo", manifest=manifest, batch_size=8,
        config_file="['configs/train.json','configs/adamv2.json']", level_schedule="[[0,2],[1,2]]", num_locals=2,
        num_prototypes=64, head_hidden_features=32, head_bottleneck_features=16, stem="7x7",
    )
    assert "dino.center" in last["loss"] and any(k.startswith("teacher.") for k in last["network"])


def test_segment_bundle_resumes_exactly(tmp_path: Path) -> None:
    manifest = demo_segmentation_manifest(tmp_path / "demo", size=32, n_images=10)
    data = {"dataset_dir": tmp_path / "demo", "manifest": manifest, "batch_size": 2, "samples_per_epoch": 8,
            "overlay_images": 1}
    resumed, last = resume_matches_whole_run("segment", tmp_path, ["model.pt", "model_final.pt"], **data)
    assert set(last) >= {"best_model", "random_states", "settings"}
    assert same_summary(tmp_path, resumed)["metric"] == "val_mean_dice"
    # the same folder with another subset is refused, naming the setting (in process: the refusal comes at start-up)
    flow = ConfigWorkflow(
        config_file=str(BUNDLES / "segment" / "configs" / "train.json"), workflow_type="train",
        bundle_root=str(BUNDLES / "segment"), output_dir=str(resumed), seed=0, few_shot=3,
        **{k: str(v) if isinstance(v, Path) else v for k, v in {**data, "epochs": EPOCHS, "image_size": 32}.items()},
    )
    flow.initialize()
    with pytest.raises(ValueError, match=r"checkpoint_epoch=4\.pt: entry 'settings'.*few_shot None there, 3 here"):
        flow.parser.get_parsed_content("train#trainer").run()


def test_classify_bundle_resumes_exactly(tmp_path: Path) -> None:
    manifest = demo_classification_manifest(tmp_path / "demo", size=32, per_pair=4)
    resumed, last = resume_matches_whole_run(
        "classify", tmp_path, ["model.pt", "model_final.pt"], dataset_dir=tmp_path / "demo", manifest=manifest,
        batch_size=4,
    )
    assert set(last) >= {"best_weights", "random_states", "settings"}
    assert same_summary(tmp_path, resumed)["metric"] == "val_auc"
