"""``scripts/bench_adamv2_gpu.py``: the no-CUDA refusal, the time limit, the GPU sampler and a CPU smoke run.

The smoke run is the script's whole path (shared corpus manifest, the pretraining bundle with ``adamv2.json``, the
wall-clock stop, the final k-NN, the table and the JSON) at 32 px, batch 4, for 18 s on the CPU. It runs in fp32:
the CPU's bf16 kernels gave a non-finite weight gradient in ``layer4`` at 32 px (1x1 maps) after a few steps.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from ignite.engine import Engine, Events

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_adamv2_gpu.py"


@pytest.fixture(scope="module")
def bench(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("bench_adamv2_gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_refuses_naming_device(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--image-size", "32"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--device cuda: torch sees no CUDA device" in last and "--device cpu" in last, last


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "cpu", "--minutes", "9"], "--minutes 9 is above the 8-minute limit"),
        (["--device", "cpu", "--minutes", "0"], "--minutes must be a positive number"),
        (["--device", "tpu"], "--device must be cuda, cuda:N or cpu, got 'tpu'"),
    ],
)
def test_bad_arguments_are_refused(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_defaults_are_the_paper_scale_recipe(bench: ModuleType) -> None:
    args = bench._parse_args(["--device", "cpu", "--minutes", "9", "--allow-longer"])
    overrides = bench._overrides(args, "m.csv", "out")
    assert (overrides["image_size"], overrides["batch_size"], overrides["amp"]) == (224, 128, "bf16")
    assert overrides["stem"] == "7x7" and overrides["level_schedule"] == [[0, 10], [1, 10], [2, 10]]
    assert args.minutes == 9 and args.exclude == ["jsrt"]
    assert overrides["knn_interval"] == 30  # the monitor at epoch 0 and where the run ends only
    from monai.bundle import ConfigParser

    from modan_monai.bundle import check_overrides

    check_overrides([str(c) for c in bench.CONFIGS], overrides)  # every id exists in the bundle
    parser = ConfigParser()
    parser.read_config([str(c) for c in bench.CONFIGS])
    parser.update(overrides)
    assert parser.get_parsed_content("train#trainer#precision") == "bf16"
    assert parser.get_parsed_content("epochs") == 30 and parser.get_parsed_content("load_size") == 896


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _engine(clock: FakeClock, step_s: float, first_batch_s: float = 0.0) -> Engine:
    def step(engine: Engine, batch: int) -> float:
        clock.now += step_s
        return 0.0

    engine = Engine(step)

    @engine.on(Events.STARTED)
    def evaluation(_: Engine) -> None:  # the k-NN evaluation at epoch 0
        clock.now += first_batch_s

    return engine


def test_time_limit_stops_before_an_epoch_that_would_not_fit(bench: ModuleType) -> None:
    clock = FakeClock()
    engine = _engine(clock, step_s=1.0, first_batch_s=3.0)  # 4 iterations per epoch: 4 s epochs, 3 s reserve
    limit = bench.WallClockLimit(20.0, clock=clock)
    limit.attach(engine)
    terminated = []
    engine.add_event_handler(Events.TERMINATE, lambda e: terminated.append(e.state.epoch))
    limit.begin()
    engine.run(range(4), max_epochs=50)
    # after epoch 2: 3 + 2 * 4 = 11 s, + 4 s (another epoch) + 3 s (reserve) = 18 s <= 20 s: go on;
    # after epoch 3: 15 s + 4 s + 3 s = 22 s > 20 s: stop
    assert limit.reserve_s == 3.0
    assert (engine.state.epoch, engine.state.iteration, limit.mid_epoch) == (3, 12, False)
    assert limit.stopped and "epoch 4" in limit.stop_reason and terminated == [3]


def test_time_limit_stops_within_an_epoch_before_a_step_that_would_not_fit(bench: ModuleType) -> None:
    clock = FakeClock()
    engine = _engine(clock, step_s=1.0, first_batch_s=2.0)  # one epoch of 100 s: stopped inside it
    limit = bench.WallClockLimit(10.0, clock=clock)
    limit.attach(engine)
    limit.begin()
    engine.run(range(100), max_epochs=2)
    # after step 4: 2 + 4 s elapsed + 1 s (another step) + 2 s reserve = 9 s < 10 s; after step 5: 10 s: stop
    assert (engine.state.iteration, limit.mid_epoch) == (5, True)
    assert "iteration 5 (epoch 1, not completed)" in limit.stop_reason


def test_time_limit_lets_a_short_run_finish(bench: ModuleType) -> None:
    clock = FakeClock()
    engine = _engine(clock, step_s=1.0)
    limit = bench.WallClockLimit(100.0, clock=clock)
    limit.attach(engine)
    limit.begin()
    engine.run(range(3), max_epochs=2)
    assert engine.state.epoch == 2 and not limit.stopped and limit.stop_reason is None


def _fake_nvidia_smi(folder: Path, body: str) -> None:
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)


def test_gpu_sampler_reads_nvidia_smi_and_keeps_samples_inside_the_steps(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path, 'test "$2" = "GPU-abc" || exit 9\necho "87, 40213"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sampler = bench.GPUSampler("GPU-abc", interval=0.01)
    assert sampler.sample() == (87.0, 40213.0)
    sampler.samples = [(1.0, 90.0, 100.0), (2.5, 10.0, 900.0), (3.5, 80.0, 200.0), (9.0, 0.0, 50.0)]
    summary = sampler.summary([(0.5, 2.0), (3.0, 4.0)])  # 2.5 (between steps) and 9.0 (after) left out
    assert summary == {"samples": 2, "utilization_mean": 85.0, "utilization_median": 85.0, "utilization_min": 80.0,
                       "memory_used_max_mib": 200.0, "error": None}
    sampler.samples = []
    sampler.start()
    sampler.stop()
    assert sampler.samples and sampler.samples[0][1:] == (87.0, 40213.0) and sampler.error is None


def test_gpu_sampler_failure_is_reported(bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(tmp_path, 'echo "No devices were found" >&2; exit 6')
    monkeypatch.setenv("PATH", str(tmp_path))
    sampler = bench.GPUSampler("0", interval=0.01)
    sampler.start()
    sampler.stop()
    assert sampler.samples == [] and "nvidia-smi -i 0 failed (exit 6): No devices were found" in sampler.error
    assert sampler.summary([(0.0, 1.0)])["utilization_mean"] is None


def test_gpu_sampler_falls_back_to_a_selector_nvidia_smi_answers(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path, 'test "$2" = "3" || exit 6\necho "50, 10"')
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(bench, "_nvidia_smi_ids", lambda device: ["GPU-not-this-one", "3", "0"])
    assert bench.gpu_sampler("cuda").gpu == "3"
    monkeypatch.setattr(bench, "_nvidia_smi_ids", lambda device: ["GPU-a", "7"])
    assert bench.gpu_sampler("cuda").gpu == "GPU-a"  # none answers: the first, whose error is reported


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_cpu_smoke_run_prints_and_writes_every_figure(shared_datasets: Path, tmp_path: Path) -> None:
    out, result_json = tmp_path / "run", tmp_path / "result.json"
    argv = ["--device", "cpu", "--image-size", "32", "--batch-size", "4", "--minutes", "0.3", "--amp", "fp32",
            "--shared", str(shared_datasets), "--max-per-dataset", "4", "--epochs-per-level", "20",
            "--knn-interval", "1", "--num-workers", "0", "--warmup-iterations", "1", "--threads", "1",
            "--output-dir", str(out), "--json", str(result_json)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=240,
                          cwd=SCRIPT.parents[1], env=env)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    result = json.loads(result_json.read_text())
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"written: {result_json}"
    for name in ("images/s", "GPU utilisation", "L_loc vs ln K", "k-NN accuracy", "linear probe"):
        assert any(line.startswith(f"| {name} |") for line in lines), name

    assert result["settings"]["image_size"] == 32 and result["settings"]["train_images"] > 0
    assert result["stopped_by_time_limit"] and result["limit_s"] == 18.0
    assert result["epochs_completed"] < result["max_epochs"] == 60
    assert result["iterations"] >= 2 and result["timed_iterations"] == result["iterations"] - 1
    for key in ("images_per_s", "images_per_s_wall", "train_wall_s", "startup_s"):
        assert _finite(result[key]) and result[key] > 0, key
    assert result["gpu"] is None and "| GPU utilisation | n/a (--device cpu) |" in lines
    loc = result["loc"]
    assert loc["ln_K"] == pytest.approx(math.log(4096), rel=1e-6)
    assert all(_finite(loc[k]) for k in ("first_iteration", "last_iterations_mean", "last_iterations_mean_over_ln_K"))
    if loc["epoch_mean"] is not None:  # at least one epoch completed within the 18 s
        assert _finite(loc["epoch_mean"]["first"]) and _finite(loc["epoch_mean"]["last"])
    for monitor in ("knn", "linear_probe"):  # epoch 0 and the encoder where the limit stopped it
        block = result[monitor]
        assert block["first_epoch"] == 0 and _finite(block["first"]) and _finite(block["last"])
        assert block["last_epoch"] == result["epochs_completed"] + int(result["stopped_within_epoch"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "adamv2" and (out / "encoder.pt").is_file()
    assert str(summary["knn"]["last"]["epoch"]) in summary["knn"]["per_epoch"]
