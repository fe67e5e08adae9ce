"""Exact resume on a tiny MONAI SupervisedTrainer, atomic checkpoint writes, pruning and damaged files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import MeanSquaredError
from monai.data import CacheDataset, DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import LrScheduleHandler, from_engine
from monai.optimizers import WarmupCosineSchedule
from monai.transforms import Compose, RandFlipd, RandGaussianNoised
from monai.utils import set_determinism

from modan_monai.handlers import (
    BestModelSaver,
    EncoderCheckpointSaver,
    FinalModelSaver,
    ResumeFromCheckpoint,
    RngPreservingValidationHandler,
    TrainingCheckpointSaver,
    list_checkpoints,
)
from modan_monai.networks import ResNet18Encoder, load_encoder
from modan_monai.transforms import MultiViewd, RandResizedCropd, SimCLRViewsd
from modan_monai.utils import RandomStates, RunSettings, atomic_save, max_abs_difference, state_differences

EPOCHS = 4


class Killed(Exception):
    """Stands for SIGKILL inside the test process."""


class RunningLoss(torch.nn.Module):
    """MSE scaled by a running mean of itself kept in a buffer (a loss whose buffers must be restored)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("running", torch.zeros(()))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(pred, target)
        with torch.no_grad():
            self.running.mul_(0.9).add_(0.1 * loss.detach())
        return loss * (1 + self.running)


def prepare(batch: Mapping[str, torch.Tensor], device: Any, non_blocking: bool, **_: Any) -> tuple:
    inputs = batch["views"][:, 0] + batch["crops"][:, 1] if "views" in batch else batch["image"][:, :, :12, :12]
    return inputs.to(device), batch["label"].to(device)


def rows(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"image": rng.random((1, 20, 20), dtype=np.float32), "label": rng.random(1, dtype=np.float32)} for _ in range(n)
    ]


def build(out: Path, num_workers: int = 0, random_states: bool = True, kill_at: tuple[int, int] | None = None):
    """A complete run: random train and validation transforms, shuffling, dropout, scheduler, loss buffer."""
    set_determinism(seed=0)
    train_transform = Compose([
        RandFlipd("image", prob=0.5, spatial_axis=1),
        MultiViewd("image", Compose([RandResizedCropd("image", 12), RandGaussianNoised("image", prob=0.5)]),
                   num_views=2, views_key="crops"),
        SimCLRViewsd("image", spatial_size=12, views_key="views", keep_source=False),
    ])
    dataset = CacheDataset(rows(10, 1), train_transform, cache_rate=1.0, progress=False)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=num_workers)
    val_loader = DataLoader(
        CacheDataset(rows(6, 2), RandGaussianNoised("image", prob=1.0), progress=False), batch_size=3
    )
    network = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 1),
    )
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    loss = RunningLoss()
    checkpoint_dict: dict[str, Any] = {"network": network, "optimizer": optimizer, "lr_scheduler": scheduler,
                                       "loss": loss}
    best = BestModelSaver(network, out)
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=val_loader, network=network, prepare_batch=prepare, decollate=False,
        key_val_metric={"val_mse": MeanSquaredError(output_transform=from_engine(["pred", "label"]))},
        metric_cmp_fn=lambda current, previous: current < previous, val_handlers=[best],
    )
    checkpoint_dict["best_model"] = best
    if random_states:
        checkpoint_dict["random_states"] = RandomStates(dataloader=loader)
    handlers = [
        ResumeFromCheckpoint(out, checkpoint_dict),
        TrainingCheckpointSaver(out, checkpoint_dict, n_saved=2),
        # listed after the saver, it still writes after them (validation, epoch-level scheduler step); the
        # validation at start (after the resume) must not move the random states
        RngPreservingValidationHandler(interval=1, validator=evaluator, exec_at_start=True),
        LrScheduleHandler(scheduler, epoch_level=True, print_lr=False),
        FinalModelSaver(network, out),
    ]
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=EPOCHS, train_data_loader=loader, network=network, optimizer=optimizer,
        loss_function=loss, prepare_batch=prepare, train_handlers=handlers, decollate=False,
    )
    if kill_at is not None:
        epoch, iteration = kill_at

        @trainer.on(Events.ITERATION_COMPLETED)
        def _kill(engine: Engine) -> None:
            if engine.state.epoch == epoch and (engine.state.iteration - 1) % engine.state.epoch_length + 1 == iteration:
                raise Killed

    return trainer


def assert_identical(a: Any, b: Any, what: str = "checkpoint") -> None:
    """Every tensor and value of two loaded states equal, bit for bit."""
    differ = state_differences(a, b)
    assert not differ, f"{what} differs at {differ[:5]} (max abs difference {max_abs_difference(a, b)})"


def load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path: Path, num_workers: int) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    build(whole, num_workers).run()
    with pytest.raises(Killed):
        build(resumed, num_workers, kill_at=(3, 2)).run()
    assert [p.name for _, p in list_checkpoints(resumed)] == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    build(resumed, num_workers).run()

    assert [p.name for _, p in list_checkpoints(whole)] == ["checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt"]
    assert [p.name for _, p in list_checkpoints(resumed)] == ["checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt"]
    assert_identical(load(whole / "checkpoint_epoch=4.pt"), load(resumed / "checkpoint_epoch=4.pt"))
    for name in ("model.pt", "model_final.pt"):
        assert_identical(load(whole / name), load(resumed / name), name)
    final = load(whole / "checkpoint_epoch=4.pt")
    assert final["trainer"]["iteration"] == EPOCHS * 3 and final["lr_scheduler"]["last_epoch"] == EPOCHS
    assert float(final["loss"]["running"]) > 0


def test_without_random_states_the_resumed_run_differs(tmp_path: Path) -> None:
    """The control: the same kill and resume, the random states left out of the checkpoint."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    build(whole, random_states=False).run()
    with pytest.raises(Killed):
        build(resumed, random_states=False, kill_at=(3, 2)).run()
    build(resumed, random_states=False).run()
    a, b = load(whole / "checkpoint_epoch=4.pt")["network"], load(resumed / "checkpoint_epoch=4.pt")["network"]
    assert max_abs_difference(a, b) > 0


def test_resuming_a_finished_run_changes_nothing(tmp_path: Path) -> None:
    build(tmp_path).run()
    before = load(tmp_path / "checkpoint_epoch=4.pt")
    trainer = build(tmp_path)
    trainer.run()
    assert trainer.state.epoch == EPOCHS and trainer.state.iteration == EPOCHS * 3
    assert_identical(before["network"], load(tmp_path / "model_final.pt"))
    assert_identical(before, load(tmp_path / "checkpoint_epoch=4.pt"))


# --- a minimal ignite engine for the file-level behaviour ---


def tiny_run(out: Path, max_epochs: int, n_saved: int | None = 1, settings: dict | None = None) -> Engine:
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(engine: Engine, batch: Any) -> None:
        optimizer.zero_grad()
        model(torch.ones(1, 1)).sum().backward()
        optimizer.step()

    engine = Engine(step)
    objects: dict[str, Any] = {"network": model, "optimizer": optimizer, "random_states": RandomStates()}
    if settings is not None:
        objects["settings"] = RunSettings(settings)
    ResumeFromCheckpoint(out, objects).attach(engine)
    TrainingCheckpointSaver(out, objects, n_saved=n_saved).attach(engine)
    engine.run([0, 0], max_epochs=max_epochs)
    return engine


def names(out: Path) -> list[str]:
    return [p.name for _, p in list_checkpoints(out)]


def test_keep_last_n_counts_checkpoints_of_earlier_runs(tmp_path: Path) -> None:
    tiny_run(tmp_path, 3, n_saved=None)
    assert names(tmp_path) == [f"checkpoint_epoch={n}.pt" for n in (1, 2, 3)]
    engine = tiny_run(tmp_path, 5, n_saved=2)  # resumes at 3, writes 4 and 5, keeps the newest two of all
    assert engine.state.iteration == 10
    assert names(tmp_path) == ["checkpoint_epoch=4.pt", "checkpoint_epoch=5.pt"]
    tiny_run(tmp_path, 6, n_saved=1)
    assert names(tmp_path) == ["checkpoint_epoch=6.pt"]


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    tiny_run(tmp_path, 1)
    previous = load(tmp_path / "checkpoint_epoch=1.pt")

    def half_then_fail(obj: Any, f: Any) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr("modan_monai.utils.atomic.torch.save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"network": {}}, tmp_path / "checkpoint_epoch=1.pt")
    assert_identical(previous, load(tmp_path / "checkpoint_epoch=1.pt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt"]  # the temporary is gone


def test_a_write_killed_midway_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    tiny_run(tmp_path, 2)
    target = tmp_path / "checkpoint_epoch=2.pt"
    previous = target.read_bytes()
    script = textwrap.dedent(f"""
        import time, torch
        import modan_monai.utils.atomic as atomic
        def slow(obj, f):
            f.write(b"PK\\x03\\x04 the first half"); f.flush()
            print("half written", flush=True); time.sleep(60)
        atomic.torch.save = slow
        atomic.atomic_save({{"network": {{}}}}, {str(target)!r})
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "half written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert target.read_bytes() == previous and names(tmp_path) == ["checkpoint_epoch=2.pt"]
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) == 1
    assert tiny_run(tmp_path, 3).state.iteration == 6  # resumes from the intact epoch-2 checkpoint
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the next save removed the stale one


def test_damaged_newest_checkpoint_is_named_with_the_earlier_one(tmp_path: Path) -> None:
    tiny_run(tmp_path, 3, n_saved=None)
    newest, earlier = tmp_path / "checkpoint_epoch=3.pt", tmp_path / "checkpoint_epoch=2.pt"
    newest.write_bytes(b"")
    with pytest.raises(ValueError) as err:
        tiny_run(tmp_path, 4)
    message = str(err.value)
    assert str(newest) in message and "damaged (empty, 0 bytes)" in message
    assert f"earlier checkpoint {earlier}" in message

    whole = earlier.read_bytes()
    newest.write_bytes(whole[: len(whole) // 2])  # truncated
    with pytest.raises(ValueError, match=r"checkpoint_epoch=3\.pt is damaged \(truncated, \d+ bytes: .*"
                       r"delete it to resume from the earlier checkpoint .*checkpoint_epoch=2\.pt"):
        tiny_run(tmp_path, 4)
    newest.write_bytes(np.random.default_rng(0).bytes(300))  # random bytes
    with pytest.raises(ValueError, match=r"checkpoint_epoch=3\.pt is damaged \(corrupt, 300 bytes: .*"
                       r"delete it to resume from the earlier checkpoint .*checkpoint_epoch=2\.pt"):
        tiny_run(tmp_path, 4)

    for n in (1, 2):
        (tmp_path / f"checkpoint_epoch={n}.pt").unlink()
    with pytest.raises(ValueError, match="no earlier checkpoint is left: delete it to train from scratch"):
        tiny_run(tmp_path, 4)


def test_other_run_settings_and_missing_entries_are_refused(tmp_path: Path) -> None:
    tiny_run(tmp_path, 1, settings={"init": "scratch", "seed": 0})
    with pytest.raises(ValueError) as err:
        tiny_run(tmp_path, 2, settings={"init": "encoder.pt", "seed": 0})
    message = str(err.value)
    assert "checkpoint_epoch=1.pt" in message and "entry 'settings'" in message
    assert "init 'scratch' there, 'encoder.pt' here" in message
    # the same settings resume
    assert tiny_run(tmp_path, 2, settings={"init": "scratch", "seed": 0}).state.iteration == 4

    model = torch.nn.Linear(1, 1)
    engine = Engine(lambda e, b: None)
    ResumeFromCheckpoint(tmp_path, {"network": model, "loss": RunningLoss()}).attach(engine)
    with pytest.raises(ValueError, match=r"has no \['loss'\] entries .*strict=False"):
        engine.run([0, 0], max_epochs=3)


def test_checkpoint_beyond_max_epochs_is_refused(tmp_path: Path) -> None:
    tiny_run(tmp_path, 3)
    with pytest.raises(ValueError, match="at epoch 3, beyond this run's max_epochs 2"):
        tiny_run(tmp_path, 2)


def test_encoder_saver_writes_atomically(tmp_path: Path, monkeypatch) -> None:
    encoder = ResNet18Encoder()
    engine = Engine(lambda e, b: None)
    EncoderCheckpointSaver(encoder, tmp_path, metadata={"method": "test"}).attach(engine)
    engine.run([0], max_epochs=1)
    before = (tmp_path / "encoder.pt").read_bytes()

    def fail(obj: Any, path: Any) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("killed")

    monkeypatch.setattr("modan_monai.networks.checkpoint.torch.save", fail)
    with pytest.raises(OSError):
        engine.run([0], max_epochs=2)
    assert (tmp_path / "encoder.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.pt"]
    torch.testing.assert_close(load_encoder(tmp_path / "encoder.pt").state_dict(), encoder.state_dict())


# --- resuming with more epochs: the schedule of the longer run ---

SCHEDULES = {
    "warmup_cosine": lambda opt, epochs: WarmupCosineSchedule(opt, warmup_steps=3, t_total=epochs * 3),  # LambdaLR
    "cosine": lambda opt, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * 3),  # chainable
}


def scheduled_run(out: Path, epochs: int, schedule: str) -> list[float]:
    """3 iterations per epoch, the scheduler stepped per iteration; the learning rate each iteration used."""
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = SCHEDULES[schedule](optimizer, epochs)
    used: list[float] = []

    def step(engine: Engine, batch: Any) -> None:
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        model(torch.ones(1, 1)).sum().backward()
        optimizer.step()

    engine = Engine(step)
    objects = {"network": model, "optimizer": optimizer, "lr_scheduler": scheduler, "random_states": RandomStates()}
    ResumeFromCheckpoint(out, objects).attach(engine)
    LrScheduleHandler(scheduler, epoch_level=False, print_lr=False).attach(engine)
    TrainingCheckpointSaver(out, objects).attach(engine)
    engine.run([0, 0, 0], max_epochs=epochs)
    return used


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_resuming_with_more_epochs_follows_the_longer_schedule(tmp_path: Path, schedule: str, caplog) -> None:
    longer = scheduled_run(tmp_path / "longer", 5, schedule)  # given 5 epochs from the start
    shorter = scheduled_run(tmp_path / "resumed", 2, schedule)
    with caplog.at_level("WARNING", logger="modan_monai.handlers.checkpoint"):
        resumed = scheduled_run(tmp_path / "resumed", 5, schedule)  # epochs 3-5, 9 iterations
    assert len(resumed) == 9
    np.testing.assert_allclose(resumed, longer[6:], rtol=1e-12)  # every later step: the 5-epoch schedule
    # the one jump, at the resume point: the 2-epoch schedule had decayed further (cosine to 0 at its end)
    assert shorter[-1] < longer[5] and resumed[0] == pytest.approx(longer[6])
    assert any("learning rate jumps" in r.getMessage() and "from step 6" in r.getMessage() for r in caplog.records)
