"""scripts/run_segmentation.py and modan_monai.evaluation.segmentation_grid on the synthetic segmentation demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from modan_monai.data.demo_segmentation import demo_segmentation_manifest
from modan_monai.evaluation.segmentation_grid import plan_runs, segmentation_markdown, segmentation_summary
from modan_monai.networks import save_encoder
from modan_monai.networks.nets.cb_resnet_encoder import CBResNet18Encoder
from modan_monai.utils import LOCK_NAME

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

def test_plan_reads_the_arch_from_the_checkpoint(tmp_path: Path) -> None:
    path = save_encoder(CBResNet18Encoder(), tmp_path / "cb.pt")
    runs = plan_runs({"scratch": "scratch", "cb": str(path)}, [3, None], [0, 1])
    assert [(r.init, r.arch, r.n_train, r.seed) for r in runs[:4]] == [
        ("scratch", "resnet18", 3, 0), ("cb", "cb_resnet18", 3, 0),
        ("scratch", "resnet18", None, 0), ("cb", "cb_resnet18", None, 0),
    ]
    assert len(runs) == 8 and runs[2].name == "scratch/nall_s0"


def test_grid_runs_resumes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture, load_script: Callable) -> None:
    manifest = demo_segmentation_manifest(tmp_path / "data", size=32, n_images=10)
    encoder = save_encoder(CBResNet18Encoder(), tmp_path / "cb.pt")
    main = load_script("run_segmentation").main
    args = ["--manifest", str(manifest), "--structures", "{'heart': ['heart'], 'lungs': ['left_lung', 'right_lung']}",
            "--init", "scratch", "--init", f"cb={encoder}", "--few-shot", "3", "--seeds", "0", "1",
            "--image-size", "32", "--epochs", "1", "--samples-per-epoch", "6", "--batch-size", "3", "--jobs", "2",
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(zip(results.init, results.seed)) == [("cb", 0), ("cb", 1), ("scratch", 0), ("scratch", 1)]
    assert {"test_mean_dice", "test_dice_heart", "test_dice_lungs"} <= set(results.columns)
    assert results.test_dice_heart.between(0, 1).all() and (results.arch == "resnet18").sum() == 2
    assert (tmp_path / "out" / "cb" / "n3_s1" / "model.pt").is_file()
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| 3 | scratch | 2 |" in summary and "| 3 | cb | 2 |" in summary and "heart" in summary
    capsys.readouterr()

    # a rerun with one more seed only trains the new runs
    assert main(args[: args.index("1") + 1] + ["2"] + args[args.index("1") + 1 :]) == 0
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 6 and set(results.seed) == {0, 1, 2}
    assert "| 3 | scratch | 3 |" in capsys.readouterr().out


def test_failed_run_names_its_log(tmp_path: Path, load_script: Callable) -> None:
    manifest = demo_segmentation_manifest(tmp_path / "data", size=32, n_images=10)
    main = load_script("run_segmentation").main
    with pytest.raises(RuntimeError, match=r"scratch/n3_s0 failed .*run\.log"):
        main(["--manifest", str(manifest), "--structures", "['spleen']", "--init", "scratch", "--few-shot", "3",
              "--seeds", "0", "--image-size", "32", "--epochs", "1", "--out", str(tmp_path / "out")])
    assert "spleen" in (tmp_path / "out" / "scratch" / "n3_s0" / "run.log").read_text()


def test_summary_orders_sizes_and_formats_mean_sd() -> None:
    results = pd.DataFrame({
        "init": ["a", "a", "b", "a"], "init_spec": "scratch", "arch": "resnet18",
        "n_train": ["all", "12", "12", "3"], "seed": [0, 0, 0, 0], "test_dice_heart": [0.9, 0.8, 0.7, 0.5],
    })
    results = pd.concat([results, results.assign(seed=1, test_dice_heart=results.test_dice_heart - 0.1)])
    table = segmentation_summary(results)
    assert list(table.index) == [("3", "a"), ("12", "a"), ("12", "b"), ("all", "a")]
    assert table.loc[("12", "b"), "test_dice_heart"] == "0.650 ± 0.071" and table.seeds.tolist() == [2, 2, 2, 2]
    assert segmentation_markdown(table).splitlines()[0] == "| training images | init | seeds | heart |"
    assert list(segmentation_summary(results, init_order=["b", "a"]).index)[1:3] == [("12", "b"), ("12", "a")]


@pytest.mark.parametrize(
    ("script", "option", "value", "said"),
    [
        ("run_cv", "--batch-size", "0", "must be a positive integer (1 or more), got '0'"),
        ("run_cv", "--epochs", "-1", "must be a positive integer (1 or more), got '-1'"),
        ("run_cv", "--repeats", "two", "must be an integer, got 'two'"),
        ("run_cv", "--folds", "1", "K-fold cross-validation needs 2 folds or more, got 1"),
        ("run_segmentation", "--batch-size", "0", "must be a positive integer (1 or more), got '0'"),
        ("run_segmentation", "--few-shot", "0", "must be a positive integer (1 or more), got '0'"),
    ],
)
def test_bad_counts_are_refused_naming_the_option(
    tmp_path: Path, load_script: Callable, capsys: pytest.CaptureFixture, script: str, option: str, value: str,
    said: str,
) -> None:
    base = {"run_cv": ["--label-column", "finding"], "run_segmentation": ["--structures", "['heart']"]}[script]
    with pytest.raises(SystemExit) as err:
        load_script(script).main(["--manifest", "m.csv", *base, "--init", "scratch", "--out", str(tmp_path / "o"),
                                  option, value])
    assert err.value.code == 2
    assert f"error: argument {option}: {said}" in capsys.readouterr().err


def test_an_image_size_the_unet_cannot_take_stops_the_grid_first(
    tmp_path: Path, load_script: Callable, capsys: pytest.CaptureFixture
) -> None:
    main = load_script("run_segmentation").main
    assert main(["--manifest", "m.csv", "--structures", "['heart']", "--init", "scratch", "--image-size", "40",
                 "--out", str(tmp_path / "o")]) == 1
    assert ("error: init scratch (scratch): image_size 40 does not fit the segmentation U-Net on modan_resnet18_3x3: "
            "its encoder downsamples by 16") in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ctrl_c_stops_the_grid_and_its_workers_with_one_line(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group (as from a terminal): the workers ignore it, the grid ends them at
    once and the script prints one line, with the lock released and no worker left behind."""
    manifest = demo_segmentation_manifest(tmp_path / "data", size=32, n_images=10)
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPTS / "run_segmentation.py"), "--manifest", str(manifest),
               "--structures", "['heart']", "--init", "scratch", "--few-shot", "3", "--seeds", "0", "1",
               "--image-size", "32", "--epochs", "50", "--samples-per-epoch", "6", "--batch-size", "3",
               "--jobs", "2", "--out", str(out)]
    # SIGINT back to its default in the child: a test run started in the background of a non-interactive shell
    # inherits it ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("scratch/*/checkpoint_epoch=*.pt")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                   text=True).stdout.split()]
        assert workers, "the grid's worker processes were not found"
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT), stderr[-3000:]
    assert "Traceback" not in stderr and lines[-1].startswith("interrupted"), stderr[-3000:]
    assert "run the same command to resume" in lines[-1]
    assert not (out / LOCK_NAME).exists()
    # the workers (and multiprocessing's resource tracker, which ends once the grid has) are gone
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)]


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text().lower()
    except FileNotFoundError:
        return False
