"""Handlers of the pretraining bundle, on a tiny ignite engine."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from modan_monai.handlers import (
    EncoderCheckpointSaver,
    LearningRateTensorBoardHandler,
    ProgressPrinter,
    ResumeFromCheckpoint,
    TrainingCheckpointSaver,
    ViewsTensorBoardHandler,
    latest_checkpoint,
)
from modan_monai.networks import ResNet18Encoder, load_encoder


class FakeWriter:
    def __init__(self) -> None:
        self.images: dict[str, tuple] = {}
        self.scalars: list[tuple[str, float, int]] = []

    def add_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        self.images[tag] = (tuple(images.shape), float(images.min()), float(images.max()), step)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        pass


def make_engine(batches: list, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Engine:
    def step(engine: Engine, batch: dict) -> dict:
        optimizer.zero_grad()
        loss = model(torch.ones(1, 1)).sum()
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    engine = Engine(step)
    return engine


def test_latest_checkpoint_picks_highest_epoch(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    for n in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={n}.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=10.pt"


def test_save_then_resume_restores_state(tmp_path: Path) -> None:
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = make_engine([], model, optimizer)
    TrainingCheckpointSaver(tmp_path, {"network": model, "optimizer": optimizer}).attach(engine)
    engine.run([{}] * 3, max_epochs=2)
    trained = model.weight.detach().clone()

    fresh = torch.nn.Linear(1, 1)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1)
    resumed = make_engine([], fresh, fresh_opt)
    ResumeFromCheckpoint(tmp_path, {"network": fresh, "optimizer": fresh_opt}).attach(resumed)
    resumed.run([{}] * 3, max_epochs=3)
    assert resumed.state.iteration == 9  # 6 restored + 3 new
    assert not torch.equal(fresh.weight, trained)  # trained on from the restored weights


def test_encoder_saver_and_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    encoder = ResNet18Encoder()
    model = torch.nn.Linear(1, 1)
    engine = make_engine([], model, torch.optim.SGD(model.parameters(), lr=0.1))
    EncoderCheckpointSaver(encoder, tmp_path, metadata={"method": "test"}).attach(engine)
    ProgressPrinter(interval=2).attach(engine)
    with caplog.at_level(logging.INFO, logger="modan_monai.progress"):
        engine.run([{}] * 3, max_epochs=1)
    loaded = load_encoder(tmp_path / "encoder.pt")
    torch.testing.assert_close(loaded.state_dict(), encoder.state_dict())
    lines = [r.message for r in caplog.records if r.name == "modan_monai.progress"]
    assert [line.split("  ")[1] for line in lines] == ["iter 2/3", "iter 3/3"]
    assert all("left" in line for line in lines)


@pytest.mark.parametrize("decollated", [False, True])
def test_views_and_lr_to_tensorboard(decollated: bool) -> None:
    writer = FakeWriter()
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.25)
    views = torch.rand(3, 2, 1, 8, 8) * 5 - 1
    batch = [{"views": v} for v in views] if decollated else {"views": views}
    engine = make_engine([], model, optimizer)
    ViewsTensorBoardHandler(writer, max_images=2).attach(engine)
    LearningRateTensorBoardHandler(writer, optimizer).attach(engine)
    engine.run([batch] * 2, max_epochs=1)
    assert set(writer.images) == {"views/view_0", "views/view_1"}
    shape, lo, hi, step = writer.images["views/view_0"]
    assert shape == (2, 1, 8, 8) and lo == 0.0 and hi == pytest.approx(1.0) and step == 1
    assert writer.scalars == [("lr", 0.25, 1), ("lr", 0.25, 2)]
