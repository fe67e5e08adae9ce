"""Validation during training: ignite's "Engine run resuming" line is dropped for evaluators, kept for trainers."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine
from monai.engines import SupervisedEvaluator

from modan_monai.handlers import EvaluatorResumeLineFilter, RngPreservingValidationHandler, quiet_evaluator_resume_line

RESUME = "Engine run resuming from iteration"


def make_evaluator() -> SupervisedEvaluator:
    data = [{"image": torch.zeros(1, 2), "label": torch.zeros(1, dtype=torch.long)}]
    return SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=data, network=torch.nn.Identity())


def resume_lines(caplog: pytest.LogCaptureFixture, engine: Engine) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.name == engine.logger.name]
    return [m for m in messages if m.startswith(RESUME)]


def test_validation_has_no_resume_line_and_the_trainer_keeps_its_own(caplog: pytest.LogCaptureFixture) -> None:
    evaluator = make_evaluator()
    trainer = Engine(lambda engine, batch: None)
    RngPreservingValidationHandler(interval=1, validator=evaluator).attach(trainer)
    with caplog.at_level(logging.INFO):
        trainer.run([0], max_epochs=2)
        assert evaluator.state.epoch == 2  # validated after epochs 1 and 2
        trainer.run([0], max_epochs=3)  # a resumed trainer: its own line stays
    assert resume_lines(caplog, evaluator) == []
    assert resume_lines(caplog, trainer) == [f"{RESUME} 2, epoch 2 until 3 epochs"]
    assert any(r.name == evaluator.logger.name and "Engine run finished" in r.getMessage() for r in caplog.records)


def test_standalone_evaluator_is_quiet_and_the_filter_is_installed_once(caplog: pytest.LogCaptureFixture) -> None:
    evaluator = make_evaluator()
    assert quiet_evaluator_resume_line(quiet_evaluator_resume_line(evaluator)) is evaluator
    assert sum(isinstance(f, EvaluatorResumeLineFilter) for f in evaluator.logger.filters) == 1
    with caplog.at_level(logging.INFO):
        evaluator.run()
    assert resume_lines(caplog, evaluator) == []


@pytest.mark.parametrize(
    "message, kept",
    [("Engine run resuming from iteration 0, epoch 5 until 6 epochs", False),
     ("Engine run resuming from iteration 12, epoch 3 until 6 epochs", True),
     ("Epoch[6] Complete. Time taken: 00:00:01.000", True)],
)
def test_filter_drops_only_the_iteration_zero_resume_line(message: str, kept: bool) -> None:
    name = "ignite.engine.engine.SupervisedEvaluator"
    record = logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)
    assert EvaluatorResumeLineFilter().filter(record) is kept
