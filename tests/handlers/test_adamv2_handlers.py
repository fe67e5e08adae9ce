"""Adam-v2's training handlers on a real :class:`modan_monai.engines.Trainer` with a toy student/teacher model."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from torch import nn

from modan_monai.engines import Trainer
from modan_monai.handlers import (
    CollapseMonitor,
    EMATeacherUpdate,
    FreezeLastLayer,
    LevelSchedule,
    PerParameterGradientClipping,
    WeightDecaySchedule,
    cosine_schedule,
)
from modan_monai.optimizers import lars_param_groups


class Toy(nn.Module):
    """The :class:`~modan_monai.networks.AdamV2Model` interface on two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x) * 100.0  # large gradients for the clipping test

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return list(self.student[1].parameters())


def trainer(model: Toy, handlers: list, epochs: int = 2, optimizer: torch.optim.Optimizer | None = None) -> Trainer:
    data = [{"image": torch.randn(4), "label": torch.zeros(3)} for _ in range(8)]
    return Trainer(
        device="cpu", max_epochs=epochs, train_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
        network=model, optimizer=optimizer or torch.optim.SGD(model.parameters(), lr=1e-5),
        loss_function=lambda pred, target: {"loss": pred.pow(2).mean(), "loc": torch.tensor(math.log(64.0)),
                                            "ln_K": torch.tensor(math.log(64.0))},
        train_handlers=handlers, decollate=False,
    )


def test_ema_momentum_one_keeps_the_teacher_and_the_schedule_is_the_closed_form() -> None:
    torch.manual_seed(0)
    model = Toy()
    before = copy.deepcopy(model.teacher.state_dict())
    trainer(model, [EMATeacherUpdate(model, momentum_start=1.0, momentum_end=1.0)]).run()
    assert all(torch.equal(before[k], v) for k, v in model.teacher.state_dict().items())
    assert all(p.grad is None for p in model.teacher.parameters())

    seen: list[float] = []
    model = Toy()
    ema = EMATeacherUpdate(model, momentum_start=0.996)
    engine = trainer(model, [ema], epochs=2)
    engine.add_event_handler(Events.ITERATION_COMPLETED,
                             lambda e: seen.append(e.state.ema_momentum))
    engine.run()
    total = 8
    closed = [1.0 - 0.5 * 0.004 * (1.0 + math.cos(math.pi * i / total)) for i in range(total)]
    assert seen == pytest.approx(closed, abs=1e-12)
    assert seen[0] == pytest.approx(0.996) and seen[total // 2] == pytest.approx(0.998)
    # a resumed run (iteration restored) gets the same momenta: the value depends only on the state
    assert ema.momentum(5, total) == pytest.approx(closed[4]) == cosine_schedule(0.996, 1.0, 4, total)


def test_clipping_bounds_each_gradient_and_the_last_layer_is_frozen_in_epoch_1() -> None:
    torch.manual_seed(0)
    model = Toy()
    norms: list[float] = []
    optimizer = torch.optim.AdamW(lars_param_groups(model, 0.1), lr=0.1, weight_decay=0.1)
    engine = trainer(model, [PerParameterGradientClipping(model.student, 0.5), FreezeLastLayer(model.last_layer_parameters, 1)],
                     optimizer=optimizer)
    last = [p.detach().clone() for p in model.last_layer_parameters()]
    first = [p.detach().clone() for p in model.student[0].parameters()]
    snapshots: dict[int, list[torch.Tensor]] = {}

    @engine.on(IterationEvents.BACKWARD_COMPLETED)
    def record(e: Trainer) -> None:
        norms.extend(float(p.grad.norm()) for p in model.student.parameters() if p.grad is not None)

    @engine.on(Events.EPOCH_COMPLETED)
    def snapshot(e: Trainer) -> None:
        snapshots[e.state.epoch] = [p.detach().clone() for p in model.last_layer_parameters()]

    engine.run()
    assert norms and max(norms) <= 0.5 + 1e-5
    assert all(torch.equal(a, b) for a, b in zip(last, snapshots[1]))  # frozen during epoch 1
    assert not all(torch.equal(a, b) for a, b in zip(last, snapshots[2]))  # trained in epoch 2
    assert not all(torch.equal(a, b) for a, b in zip(first, model.student[0].parameters()))


def test_weight_decay_schedule_leaves_1d_groups_at_zero() -> None:
    model = Toy()
    optimizer = torch.optim.AdamW(lars_param_groups(model, 0.04), lr=0.0)
    values: list[float] = []
    engine = trainer(model, [WeightDecaySchedule(optimizer, 0.04, 0.4)], optimizer=optimizer)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: values.append(optimizer.param_groups[0]["weight_decay"]))
    engine.run()
    assert values[0] == pytest.approx(0.04) and values[-1] == pytest.approx(cosine_schedule(0.04, 0.4, 7, 8))
    assert optimizer.param_groups[1]["weight_decay"] == 0.0


def test_level_schedule_sets_the_level_and_must_cover_the_epochs() -> None:
    class Views:
        level = 0

    views, levels = Views(), []
    engine = trainer(Toy(), [LevelSchedule(views, [(0, 1), (2, 1)])])
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: levels.append(views.level))
    engine.run()
    assert levels == [0] * 4 + [2] * 4
    with pytest.raises(ValueError, match="level_schedule .* covers 1 epochs but epochs is 2"):
        trainer(Toy(), [LevelSchedule(Views(), [(0, 1)])]).run()
    with pytest.raises(ValueError, match=r"level_schedule\[0\]"):
        LevelSchedule(Views(), [(0, 0)])


def test_collapse_monitor_warns_at_ln_k(caplog: pytest.LogCaptureFixture) -> None:
    monitor = CollapseMonitor()
    with caplog.at_level(logging.WARNING, logger="modan_monai"):
        trainer(Toy(), [monitor], epochs=1).run()
    assert monitor.flagged_epochs == [1] and "ln K = 4.1589" in caplog.text and "collapse" in caplog.text
    healthy = CollapseMonitor(term="loss")
    trainer(Toy(), [healthy], epochs=1).run()
    assert healthy.flagged_epochs == []
