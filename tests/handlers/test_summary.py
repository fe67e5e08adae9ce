"""The end-of-run pretraining summary: epoch-mean losses, k-NN first -> last, paths, next commands, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from modan_monai.handlers import KNNMonitor, PretrainingSummary


class FakeMonitor(KNNMonitor):
    """A monitor with a fixed history (no data, no encoder)."""

    def __init__(self, history: dict[int, float]) -> None:  # noqa: D107 - test double
        self.history = dict(history)
        self.query_split, self.bank_splits, self.k, self.temperature = "val", ["train"], 20, 0.07
        self.majority_rate = 0.25
        self.linear_probe, self.linear_probe_c, self.linear_probe_history = True, 1.0, {}


def losses_engine(losses: list[list[float]]) -> Engine:
    """An engine whose output["loss"] walks through ``losses`` (one list per epoch)."""
    flat = [v for epoch in losses for v in epoch]
    return Engine(lambda e, b: {"loss": torch.tensor(flat[e.state.iteration - 1]), "loss_terms": {}})


def test_summary_contents_json_and_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "encoder.pt").write_bytes(b"")
    summary = PretrainingSummary(
        tmp_path, knn_monitor=FakeMonitor({0: 0.4, 2: 0.7, 3: 0.9}), method="simclr",
        next_commands=["classify --init {encoder}", "look in {output_dir}"],
    )
    engine = losses_engine([[3.0, 2.0], [1.5, 1.5], [1.0, 0.5]])
    summary.attach(engine)
    with caplog.at_level("INFO", logger="modan_monai.summary"):
        engine.run([0, 1], max_epochs=3)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["method"] == "simclr" and data["epochs_completed"] == 3 and data["max_epochs"] == 3
    assert data["loss"]["first"] == {"epoch": 1, "value": 2.5} and data["loss"]["last"] == {"epoch": 3, "value": 0.75}
    assert data["loss"]["per_epoch"] == {"1": 2.5, "2": 1.5, "3": 0.75}
    knn = data["knn"]
    assert knn["first"] == {"epoch": 0, "accuracy": 0.4} and knn["last"] == {"epoch": 3, "accuracy": 0.9}
    assert knn["split"] == "val" and knn["k"] == 20 and knn["majority_rate"] == 0.25
    assert data["encoder"] == str(tmp_path.absolute() / "encoder.pt") and data["encoder_exists"]
    assert data["tensorboard"] == str(tmp_path.absolute())
    assert data["next"] == [f"classify --init {tmp_path.absolute() / 'encoder.pt'}", f"look in {tmp_path.absolute()}"]
    assert data["summary"] == str(tmp_path.absolute() / "summary.json")
    text = caplog.text
    assert f"summary file:       {tmp_path.absolute() / 'summary.json'}" in text
    assert "pretraining summary (simclr, 3/3 epochs)" in text
    assert "2.500 (epoch 1) -> 0.750 (epoch 3)" in text and "0.400 (epoch 0) -> 0.900 (epoch 3)" in text
    assert f"tensorboard --logdir {tmp_path.absolute()}" in text and "classify --init" in text


def test_without_monitor_and_missing_encoder(tmp_path: Path) -> None:
    summary = PretrainingSummary(tmp_path / "run", encoder_path=tmp_path / "elsewhere.pt")
    data = summary.summary(epochs_completed=0, max_epochs=2)
    assert data["knn"] is None and data["loss"]["first"] is None and not data["encoder_exists"]
    text = PretrainingSummary.format(data)
    assert "no epoch completed" in text and "(not written)" in text and "k-NN" not in text
    assert summary.write(data) == tmp_path / "run" / "summary.json"


def test_state_dict_round_trip_keeps_the_first_epoch(tmp_path: Path) -> None:
    first = PretrainingSummary(tmp_path)
    engine = losses_engine([[4.0], [2.0]])
    first.attach(engine)
    engine.run([0], max_epochs=2)
    resumed = PretrainingSummary(tmp_path)
    resumed.load_state_dict(first.state_dict())
    assert resumed.loss_history == {1: 4.0, 2: 2.0}
    later = losses_engine([[4.0], [2.0], [1.0]])
    later.load_state_dict({"epoch": 2, "max_epochs": 3, "epoch_length": 1})
    resumed.attach(later)
    later.run([0], max_epochs=3)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["loss"]["first"] == {"epoch": 1, "value": 4.0} and data["loss"]["last"] == {"epoch": 3, "value": 1.0}


def test_summary_is_written_after_other_completed_handlers(tmp_path: Path) -> None:
    """The encoder saver may be attached after the summary: its final write still comes first."""
    summary = PretrainingSummary(tmp_path)
    engine = losses_engine([[1.0]])
    summary.attach(engine)
    engine.add_event_handler(Events.COMPLETED, lambda e: (tmp_path / "encoder.pt").write_bytes(b"x"))
    engine.run([0], max_epochs=1)
    assert json.loads((tmp_path / "summary.json").read_text())["encoder_exists"]


def terms_engine(terms: list[list[dict[str, float]]]) -> Engine:
    """An engine whose output carries named loss terms (one list of per-iteration dicts per epoch)."""
    flat = [t for epoch in terms for t in epoch]

    def step(e: Engine, b: object) -> dict:
        named = {k: torch.tensor(v) for k, v in flat[e.state.iteration - 1].items()}
        return {"loss": named["loss"], "loss_terms": named}

    return Engine(step)


def test_terms_first_and_last_epoch_means_with_ln_k(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Adam-v2's terms: each term's epoch mean in the first and the last epoch, ln K beside L_loc; the total is
    ``loss``, not a term."""
    epochs = [
        [{"loss": 9.0, "loc": 8.0, "comp": 0.6, "ln_K": 8.3}, {"loss": 7.0, "loc": 6.0, "comp": 0.4, "ln_K": 8.3}],
        [{"loss": 6.0, "loc": 5.0, "comp": 0.3, "ln_K": 8.3}, {"loss": 4.0, "loc": 3.0, "comp": 0.1, "ln_K": 8.3}],
        [{"loss": 3.0, "loc": 2.0, "comp": 0.2, "ln_K": 8.3}, {"loss": 3.0, "loc": 2.0, "comp": 0.0, "ln_K": 8.3}],
    ]
    summary = PretrainingSummary(tmp_path, method="adamv2")
    engine = terms_engine(epochs)
    summary.attach(engine)
    with caplog.at_level("INFO", logger="modan_monai.summary"):
        engine.run([0, 1], max_epochs=3)
    terms = json.loads((tmp_path / "summary.json").read_text())["terms"]
    assert sorted(terms) == ["comp", "ln_K", "loc"]
    assert terms["loc"] == {"first": {"epoch": 1, "value": 7.0}, "last": {"epoch": 3, "value": 2.0}}
    assert terms["comp"]["first"]["value"] == pytest.approx(0.5)
    assert terms["comp"]["last"]["value"] == pytest.approx(0.1)
    assert terms["ln_K"]["first"]["value"] == pytest.approx(8.3) and terms["ln_K"]["last"]["epoch"] == 3
    assert "terms (epoch mean): comp 0.500 (epoch 1) -> 0.100 (epoch 3)" in caplog.text
    assert "loc 7.000 (epoch 1) -> 2.000 (epoch 3)" in caplog.text and "ln_K 8.300 (epoch 1)" in caplog.text

    resumed = PretrainingSummary(tmp_path)  # a resumed run keeps the terms of epoch 1
    resumed.load_state_dict(summary.state_dict())
    later = terms_engine(epochs + [[{"loss": 1.0, "loc": 1.0, "comp": 0.0, "ln_K": 8.3}] * 2])
    later.load_state_dict({"epoch": 3, "max_epochs": 4, "epoch_length": 2})
    resumed.attach(later)
    later.run([0, 1], max_epochs=4)
    terms = json.loads((tmp_path / "summary.json").read_text())["terms"]
    assert terms["loc"] == {"first": {"epoch": 1, "value": 7.0}, "last": {"epoch": 4, "value": 1.0}}


def test_linear_probe_first_and_last_like_knn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monitor = FakeMonitor({0: 0.4, 2: 0.7})
    monitor.linear_probe_history = {0: 0.5, 2: 0.875}
    summary = PretrainingSummary(tmp_path, knn_monitor=monitor)
    engine = losses_engine([[1.0], [0.5]])
    summary.attach(engine)
    with caplog.at_level("INFO", logger="modan_monai.summary"):
        engine.run([0], max_epochs=2)
    data = json.loads((tmp_path / "summary.json").read_text())
    probe = data["linear_probe"]
    assert probe["first"] == {"epoch": 0, "accuracy": 0.5} and probe["last"] == {"epoch": 2, "accuracy": 0.875}
    assert probe["per_epoch"] == {"0": 0.5, "2": 0.875} and probe["split"] == "val" and probe["c"] == 1.0
    assert data["terms"] == {}  # a loss without named terms
    assert "linear probe:       0.500 (epoch 0) -> 0.875 (epoch 2)  ['val', logistic regression]" in caplog.text
    monitor.linear_probe = False
    monitor.linear_probe_history = {}
    assert summary.summary()["linear_probe"] is None
    assert PretrainingSummary(tmp_path).summary()["linear_probe"] is None
