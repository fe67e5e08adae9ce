"""Adam-v2 handlers on a real modan_monai Trainer: EMA teacher, clipping, freezing, schedules, collapse warning."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines.utils import IterationEvents
from monai.transforms import Compose, MapTransform

from modan_monai.engines import Trainer
from modan_monai.handlers import (
    CollapseMonitor,
    EMATeacherUpdate,
    FreezeLastLayer,
    LevelSchedule,
    PerParameterGradientClipping,
    ResumeFromCheckpoint,
    SetEpoch,
    TrainingCheckpointSaver,
    WeightDecaySchedule,
)

LN_K = math.log(64)


class Branch(torch.nn.Module):
    """A backbone and a two-layer head, the shape of one AdamV2Model branch."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(4, 4)
        self.head = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
        self.offset = torch.nn.Parameter(torch.zeros(3))  # enters at 1e-4 scale: a parameter with a small gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)) + 1e-4 * self.offset


class ToyStudentTeacher(torch.nn.Module):
    """The PLAN10 model interface in miniature: student, gradient-free teacher copy, update_teacher, last layer."""

    def __init__(self) -> None:
        super().__init__()
        self.student = Branch()
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.teacher(x)
        return self.student(x)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

    def last_layer_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.student.head[1].parameters())


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, float(value), int(step)))


def mse(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(pred, label)


def make_trainer(
    model: torch.nn.Module,
    epochs: int,
    items: int = 4,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable[..., Any] = mse,
    seed: int = 0,
) -> Trainer:
    g = torch.Generator().manual_seed(seed)
    data = [
        {"image": torch.randn(4, generator=g), "label": torch.randn(3, generator=g)} for _ in range(items)
    ]
    return Trainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=DataLoader(data, batch_size=2, shuffle=False),
        network=model,
        optimizer=optimizer or torch.optim.SGD(model.parameters(), lr=0.1),
        loss_function=loss,
        decollate=False,
    )


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def closed_form(start: float, end: float, i: int, total: int) -> float:
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * i / total))


def test_ema_momentum_one_keeps_teacher_and_half_averages_the_stepped_student() -> None:
    torch.manual_seed(0)
    model = ToyStudentTeacher()
    teacher0, student0 = params(model.teacher), params(model.student)
    trainer = make_trainer(model, epochs=2)
    EMATeacherUpdate(model, momentum_start=1.0, momentum_end=1.0).attach(trainer)
    trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(params(model.teacher), teacher0))
    assert not all(torch.equal(a, b) for a, b in zip(params(model.student), student0))
    assert all(p.grad is None for p in model.teacher.parameters())

    # constant momentum 0.5, one iteration: the teacher is the mean of itself and the student AFTER the step
    model = ToyStudentTeacher()
    teacher0 = params(model.teacher)
    trainer = make_trainer(model, epochs=1, items=2)
    EMATeacherUpdate(model, momentum_start=0.5, momentum_end=0.5).attach(trainer)
    trainer.run()
    for t, t0, s in zip(params(model.teacher), teacher0, params(model.student)):
        torch.testing.assert_close(t, 0.5 * t0 + 0.5 * s)


def test_cosine_momentum_closed_form_and_exact_after_resume(tmp_path: Any) -> None:
    epochs, per_epoch = 4, 2
    total = epochs * per_epoch

    def run(stop_after: int | None, resume: bool) -> tuple[list[float], list[tuple[str, float, int]]]:
        torch.manual_seed(0)
        model = ToyStudentTeacher()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = make_trainer(model, epochs=epochs, optimizer=optimizer)
        state = {"network": model, "optimizer": optimizer}
        if resume:
            ResumeFromCheckpoint(tmp_path, state).attach(trainer)
        TrainingCheckpointSaver(tmp_path, state).attach(trainer)
        writer = FakeWriter()
        EMATeacherUpdate(model, summary_writer=writer).attach(trainer)
        seen: list[float] = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.ema_momentum))
        if stop_after is not None:
            trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())
        trainer.run()
        return seen, writer.scalars

    full, scalars = run(None, resume=False)
    assert len(full) == total
    for i in (0, total // 2, total - 1):
        assert full[i] == pytest.approx(closed_form(0.996, 1.0, i, total), abs=1e-12)
    assert full[0] == pytest.approx(0.996) and full[total // 2] == pytest.approx(0.998)
    assert scalars[0] == ("adamv2/ema_momentum", pytest.approx(0.996), 1) and scalars[-1][2] == total

    for f in tmp_path.iterdir():
        f.unlink()
    first, _ = run(1, resume=False)
    second, _ = run(None, resume=True)
    assert len(first) == per_epoch and len(second) == total - per_epoch
    assert first + second == full


def test_clipping_bounds_each_gradient_and_leaves_small_ones() -> None:
    torch.manual_seed(0)
    model = ToyStudentTeacher()
    trainer = make_trainer(model, epochs=1, loss=lambda p, t: 50 * mse(p, t))
    before: list[torch.Tensor | None] = []
    after: list[torch.Tensor | None] = []

    def grads() -> list[torch.Tensor | None]:
        return [None if p.grad is None else p.grad.clone() for p in model.student.parameters()]

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, lambda e: before.append(grads()))
    PerParameterGradientClipping(model.student, max_norm=3.0).attach(trainer)
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, lambda e: after.append(grads()))
    trainer.run()
    clipped = kept = 0
    for pre_it, post_it in zip(before, after):
        for pre, post in zip(pre_it, post_it):
            assert float(post.norm()) <= 3.0 + 1e-5
            if float(pre.norm()) > 3.0:
                clipped += 1
                torch.testing.assert_close(post, pre * 3.0 / (pre.norm() + 1e-6))
            else:
                kept += 1
                assert torch.equal(post, pre)
    assert clipped and kept


def test_last_layer_frozen_in_epoch_one_with_adamw_then_trained() -> None:
    torch.manual_seed(0)
    model = ToyStudentTeacher()
    optimizer = torch.optim.AdamW(model.student.parameters(), lr=0.05, weight_decay=0.5)
    trainer = make_trainer(model, epochs=2, optimizer=optimizer)
    PerParameterGradientClipping(model.student, max_norm=3.0).attach(trainer)
    FreezeLastLayer(model.last_layer_parameters, epochs=1).attach(trainer)
    snapshots = {0: (params(model.student.head[1]), params(model.student.encoder))}
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: snapshots.__setitem__(e.state.epoch, (params(model.student.head[1]), params(model.student.encoder))),
    )
    trainer.run()
    (last0, enc0), (last1, enc1), (last2, _) = snapshots[0], snapshots[1], snapshots[2]
    assert all(torch.equal(a, b) for a, b in zip(last0, last1))  # no step, no weight decay in epoch 1
    assert not any(torch.equal(a, b) for a, b in zip(enc0, enc1))
    assert not any(torch.equal(a, b) for a, b in zip(last1, last2))


def test_weight_decay_schedule_first_last_and_excluded_group() -> None:
    torch.manual_seed(0)
    model = ToyStudentTeacher()
    weights = [p for p in model.student.parameters() if p.ndim > 1]
    biases = [p for p in model.student.parameters() if p.ndim == 1]
    optimizer = torch.optim.AdamW(
        [{"params": weights, "weight_decay": 0.04}, {"params": biases, "weight_decay": 0.0}], lr=1e-3
    )
    trainer = make_trainer(model, epochs=3, optimizer=optimizer)
    writer = FakeWriter()
    WeightDecaySchedule(optimizer, summary_writer=writer).attach(trainer)
    seen: list[tuple[float, float]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(tuple(g["weight_decay"] for g in optimizer.param_groups))
    )
    trainer.run()
    total = 6
    assert seen[0] == (pytest.approx(0.04), 0.0)
    assert seen[-1] == (pytest.approx(closed_form(0.04, 0.4, total - 1, total)), 0.0)
    assert seen[3][0] == pytest.approx(0.22) and all(b == 0.0 for _, b in seen)
    assert [s[2] for s in writer.scalars] == list(range(1, total + 1))
    with pytest.raises(ValueError, match="non-zero weight_decay"):
        WeightDecaySchedule(torch.optim.AdamW(biases, weight_decay=0.0))


class WriteLevel(MapTransform):
    """Puts its current level into every item, so the batches show which level the DataLoader used."""

    def __init__(self) -> None:
        super().__init__(keys=["image"])
        self.level = -1

    def __call__(self, data: dict) -> dict:
        return {**data, "level": self.level}


class EpochTarget:
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


@pytest.mark.parametrize("workers", [0, 1])
def test_level_schedule_reaches_the_dataloader_each_epoch(workers: int) -> None:
    torch.manual_seed(0)
    items = [{"image": torch.randn(4), "label": torch.randn(3)} for _ in range(4)]
    transform = Compose([WriteLevel()])
    model = ToyStudentTeacher()
    trainer = Trainer(
        device="cpu",
        max_epochs=3,
        train_data_loader=DataLoader(Dataset(items, transform), batch_size=2, num_workers=workers),
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_function=mse,
        decollate=False,
    )
    writer, target = FakeWriter(), EpochTarget()
    LevelSchedule(transform, [[0, 1], [1, 2]], summary_writer=writer).attach(trainer)
    SetEpoch([target]).attach(trainer)
    levels: list[list[int]] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: levels.append(e.state.batch["level"].tolist()))
    trainer.run()
    assert levels == [[0, 0]] * 2 + [[1, 1]] * 4
    assert writer.scalars == [("adamv2/level", 0.0, 1), ("adamv2/level", 1.0, 3), ("adamv2/level", 1.0, 5)]
    assert target.epochs == [0, 1, 2]


def test_level_schedule_refusals() -> None:
    model = ToyStudentTeacher()
    trainer = make_trainer(model, epochs=3)
    transform = Compose([WriteLevel()])
    with pytest.raises(ValueError, match=r"level_schedule .* covers 2 epochs but epochs is 3"):
        LevelSchedule(transform, [(0, 1), (1, 1)]).attach(trainer)
    with pytest.raises(ValueError, match="level_schedule entry 1"):
        LevelSchedule(transform, [(0, 1), (1, 0)])
    with pytest.raises(ValueError, match="level_schedule: no transform with a 'level'"):
        LevelSchedule(Compose([]), [(0, 3)])
    items = [{"image": torch.randn(4), "label": torch.randn(3)}] * 2
    loader = DataLoader(Dataset(items, transform), batch_size=2, num_workers=1, persistent_workers=True)
    trainer = Trainer(device="cpu", max_epochs=1, train_data_loader=loader, network=model, loss_function=mse,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1), decollate=False)
    with pytest.raises(ValueError, match="persistent_workers"):
        LevelSchedule(loader, [(0, 1)]).attach(trainer)


@pytest.mark.parametrize("loc_factor, warned", [(1.0, True), (1.005, True), (0.9, False)])
def test_collapse_monitor_warns_only_at_ln_k(caplog: Any, loc_factor: float, warned: bool) -> None:
    model = ToyStudentTeacher()

    def loss(pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": mse(pred, label), "loc": torch.tensor(LN_K * loc_factor), "ln_K": torch.tensor(LN_K)}

    trainer = make_trainer(model, epochs=2, loss=loss)
    monitor = CollapseMonitor()
    monitor.attach(trainer)
    with caplog.at_level(logging.WARNING, logger="modan_monai"):
        trainer.run()
    messages = [r.getMessage() for r in caplog.records if r.name == "modan_monai" and r.levelno == logging.WARNING]
    assert monitor.flagged_epochs == ([1, 2] if warned else [])
    assert len(messages) == (2 if warned else 0)
    if warned:
        assert f"ln K = {LN_K:.4f} for all 2 iterations of epoch 1" in messages[0] and "collapse" in messages[0]
