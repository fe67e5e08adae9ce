"""The training bundles under ``torchrun`` (2 processes, gloo on the CPU), run as subprocesses.

- the first step of a 2-rank run equals a 1-process run over the same global batch: the mean of the ranks'
  losses is the 1-process loss and the DDP-averaged gradients are its gradients (global batch norm, gathered
  contrastive denominators, the global ``batch_size`` split over the ranks);
- only rank 0 writes: each rank is given its own ``output_dir`` and rank 1's stays absent;
- a 2-rank run killed during epoch 2 and started again ends with the checkpoint of the uninterrupted run;
- the settings a multi-process run cannot take are refused by name.

The 1-process reference is ``torchrun --nproc_per_node 1`` with the same config, so both draw their batches
from the same seeded ``DistributedSampler`` permutation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from modan_monai.data import ensure_demo_corpus
from modan_monai.data.demo_tasks import demo_classification_manifest
from modan_monai.handlers import list_checkpoints
from modan_monai.utils import state_differences

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
CONFIGS = "['configs/train.json','configs/multi_gpu_train.json']"
PROBE = '''
"""Saves the loss, gradients and batch files of the first training iteration of this rank."""
import os

import torch
from ignite.engine import Events


class FirstStepProbe:
    def __init__(self, network, path):
        self.network, self.path = network, path

    def attach(self, engine):
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self)

    def __call__(self, engine):
        net = getattr(self.network, "module", self.network)
        grads = {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
        output, batch = engine.state.output, engine.state.batch  # lists of items when the engine decollates
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        sources = [item["source"] for item in batch] if isinstance(batch, list) else batch["source"]
        torch.save({"loss": float(loss), "grads": grads, "sources": list(sources)},
                   f"{self.path}_rank{os.environ.get('RANK', '0')}.pt")
'''


def environment(probe_dir: Path) -> dict[str, str]:
    path = os.pathsep.join([str(probe_dir), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "PYTHONPATH": path}


def torchrun(nproc: int, out: Path, extra_configs: list[Path], shared: bool = False, **overrides: Any) -> list[str]:
    """The torchrun command; each rank writes into ``out/rank<RANK>`` unless ``shared`` (one folder, as users run)."""
    configs = CONFIGS[:-1] + "".join(f",'{p}'" for p in extra_configs) + "]"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "monai.bundle", "run", "--config_file", configs, "--logging_file", "configs/logging.conf",
           "--output_dir", str(out) if shared else f"$'{out}/rank' + os.environ['RANK']"]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def start(bundle: str, cmd: list[str], probe_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=BUNDLES / bundle, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=environment(probe_dir), start_new_session=True)


def run(bundle: str, cmd: list[str], probe_dir: Path, ok: bool = True) -> str:
    proc = start(bundle, cmd, probe_dir)
    try:
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    assert (proc.returncode == 0) == ok, log[-6000:]
    return log


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc; torchrun's workers do not stay in its process group)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants at once, as a lost node would stop them."""
    for target in [pid, *descendants(pid)]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_and_kill(bundle: str, cmd: list[str], probe_dir: Path, line: str) -> None:
    """Start ``cmd`` and SIGKILL torchrun and its workers when rank 0 prints ``line``."""
    proc = start(bundle, cmd, probe_dir)
    watchdog = threading.Timer(600, lambda: kill_tree(proc.pid))
    watchdog.start()
    lines: list[str] = []
    try:
        for text in proc.stdout:
            lines.append(text)
            if line in text:
                kill_tree(proc.pid)
                break
    finally:
        watchdog.cancel()
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(lines)[-6000:]


def probe_config(tmp_path: Path, name: str) -> Path:
    config = tmp_path / f"probe_{name}.json"
    path = tmp_path / f"step_{name}"
    config.write_text(
        '{"+train#handlers": [{"_target_": "first_step_probe.FirstStepProbe", "network": "@network", '
        f'"path": "{path}"}}]}}'
    )
    return config


def load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_first_step_equal(tmp_path: Path, single: str, ranks: str) -> None:
    one = load(tmp_path / f"step_{single}_rank0.pt")
    two = [load(tmp_path / f"step_{ranks}_rank{r}.pt") for r in (0, 1)]
    assert sorted(one["sources"]) == sorted(two[0]["sources"] + two[1]["sources"])  # the same global batch
    assert not set(two[0]["sources"]) & set(two[1]["sources"])
    mean_loss = (two[0]["loss"] + two[1]["loss"]) / 2
    assert abs(mean_loss - one["loss"]) < 1e-5 * max(1.0, abs(one["loss"])), (mean_loss, one["loss"])
    assert set(one["grads"]) == set(two[0]["grads"]) and len(one["grads"]) > 10
    for name, grad in one["grads"].items():
        assert torch.equal(two[0]["grads"][name], two[1]["grads"][name]), name  # DDP averaged them
        scale = float(grad.abs().max()) + 1e-8
        assert float((two[0]["grads"][name] - grad).abs().max()) <= 1e-4 * scale + 1e-7, name


def assert_rank_zero_wrote(out: Path, files: list[str]) -> None:
    assert not (out / "rank1").exists(), sorted(p.name for p in (out / "rank1").rglob("*"))
    written = {p.relative_to(out / "rank0").as_posix() for p in (out / "rank0").rglob("*") if p.is_file()}
    assert set(files) <= written, written


def killed_run_resumes(bundle: str, tmp_path: Path, epochs: int, files: list[str], **overrides: Any) -> None:
    """A 2-rank run killed in epoch 2 and started again ends as the uninterrupted 2-rank run (one shared folder)."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    settings = {"epochs": epochs, "log_interval": 1, **overrides}
    run(bundle, torchrun(2, whole, [], shared=True, **settings), tmp_path)
    cmd = torchrun(2, resumed, [], shared=True, **settings)
    run_and_kill(bundle, cmd, tmp_path, f"epoch 2/{epochs}  iter 1/")
    left = [p.name for _, p in list_checkpoints(resumed)]
    assert left == ["checkpoint_epoch=1.pt"], left
    log = run(bundle, cmd, tmp_path)
    assert log.count("checkpoint_epoch=1.pt (epoch 1, iteration") == 2, log[-3000:]  # both ranks resumed
    last = f"checkpoint_epoch={epochs}.pt"
    a, b = load(whole / last), load(resumed / last)
    assert len(b["random_states"]["ranks"]) == 2  # each rank's augmentation states
    assert not state_differences(a, b), state_differences(a, b)[:5]
    for name in files:
        assert not state_differences(load(whole / name), load(resumed / name)), name


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    (tmp_path / "first_step_probe.py").write_text(textwrap.dedent(PROBE))
    return tmp_path


def test_pretrain_two_ranks_equal_one_process_and_rank_zero_writes(probe_dir: Path) -> None:
    tmp = probe_dir
    manifest = ensure_demo_corpus(tmp / "demo", size=32, per_pair=4)
    # views without randomness, so both runs see the same images (random augmentation draws per rank)
    data = {"dataset_dir": tmp / "demo", "manifest": manifest, "image_size": 32, "batch_size": 16, "epochs": 1,
            "knn_interval": 0, "train#augment_transforms#0#scale": "[1.0,1.0]",
            "train#augment_transforms#0#ratio": "[1.0,1.0]", "train#augment_transforms#0#flip_prob": 0,
            "train#augment_transforms#0#jitter_prob": 0,
            "new_ids": "['train#augment_transforms#0#scale','train#augment_transforms#0#ratio',"
                       "'train#augment_transforms#0#flip_prob','train#augment_transforms#0#jitter_prob']"}
    run("pretrain", torchrun(1, tmp / "one", [probe_config(tmp, "one")], **data), tmp)
    log = run("pretrain", torchrun(2, tmp / "two", [probe_config(tmp, "two")], **data), tmp)
    assert_first_step_equal(tmp, "one", "two")
    assert_rank_zero_wrote(tmp / "two", ["checkpoint_epoch=1.pt", "encoder.pt", "summary.json"])
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp / "two" / "rank0").iterdir())
    assert log.count("pretraining summary") == 1, log[-3000:]  # printed by rank 0 only


def test_pretrain_killed_two_rank_run_resumes_exactly(probe_dir: Path) -> None:
    manifest = ensure_demo_corpus(probe_dir / "demo", size=32, per_pair=4)
    killed_run_resumes("pretrain", probe_dir, 3, ["encoder.pt"], dataset_dir=probe_dir / "demo", manifest=manifest,
                       image_size=32, batch_size=16, knn_interval=0)


def test_classify_two_ranks_equal_one_process_and_resume(probe_dir: Path) -> None:
    tmp = probe_dir
    manifest = demo_classification_manifest(tmp / "demo", size=32, per_pair=4)
    data = {"dataset_dir": tmp / "demo", "manifest": manifest, "image_size": 32, "batch_size": 16, "epochs": 1,
            "train#preprocessing#augment": False}
    run("classify", torchrun(1, tmp / "one", [probe_config(tmp, "one")], **data), tmp)
    log = run("classify", torchrun(2, tmp / "two", [probe_config(tmp, "two")], **data), tmp)
    assert_first_step_equal(tmp, "one", "two")
    assert_rank_zero_wrote(tmp / "two", ["checkpoint_epoch=1.pt", "model.pt", "model_final.pt", "summary.json"])
    assert log.count("classification summary (1/1 epochs)") == 1, log[-3000:]  # printed by rank 0 only
    killed_run_resumes("classify", tmp, 3, ["model_final.pt"], dataset_dir=tmp / "demo", manifest=manifest,
                       image_size=32, batch_size=16)


def test_adamv2_two_ranks_with_rank_zero_knn_monitor(probe_dir: Path) -> None:
    """Adam-v2 over its three levels on 2 ranks; the k-NN monitor (rank 0 only) recalibrates a local copy."""
    manifest = ensure_demo_corpus(probe_dir / "demo", size=32, per_pair=4)
    cmd = torchrun(2, probe_dir / "adamv2", [], dataset_dir=probe_dir / "demo", manifest=manifest, image_size=32,
                   batch_size=8, num_locals=2, num_prototypes=64, head_hidden_features=32, head_bottleneck_features=16,
                   stem="7x7", knn_interval=1, log_interval=1)
    cmd[cmd.index(CONFIGS)] = "['configs/train.json','configs/adamv2.json','configs/multi_gpu_train.json']"
    log = run("pretrain", cmd, probe_dir)
    assert log.count("k-NN accuracy epoch 3") == 1 and "pretraining summary (adamv2, 3/3 epochs)" in log
    assert_rank_zero_wrote(probe_dir / "adamv2", ["checkpoint_epoch=3.pt", "encoder.pt", "summary.json"])


def test_batch_size_that_does_not_divide_is_refused(probe_dir: Path) -> None:
    manifest = ensure_demo_corpus(probe_dir / "demo", size=32, per_pair=4)
    log = run("pretrain", torchrun(2, probe_dir / "odd", [], dataset_dir=probe_dir / "demo", manifest=manifest,
                                    image_size=32, batch_size=15, epochs=1, knn_interval=0), probe_dir, ok=False)
    assert "config id 'batch_size' (15, the global batch) must be a multiple of" in log and "WORLD_SIZE=2" in log
    assert not (probe_dir / "odd" / "rank1").exists()
