"""The online k-NN monitor: vote against a plain reference, schedule, random states, checkpoint state, errors."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.transforms import Compose, Lambdad, RandGaussianNoised
from torch import nn

from modan_monai.handlers import KNNMonitor, knn_predict
from modan_monai.handlers.knn import _preserve_random_state


def reference_knn(query: np.ndarray, bank: np.ndarray, labels: np.ndarray, num_classes: int, k: int, t: float) -> list:
    """Plain loop: cosine similarity, k largest, sum of exp(sim / t) per label, argmax (smallest index on ties)."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    predictions = []
    for q in query:
        q = q / np.linalg.norm(q)
        sims = [(float(q @ b), i) for i, b in enumerate(bank)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for sim, i in sims[: min(k, len(bank))]:
            votes[labels[i]] += np.exp(sim / t)
        predictions.append(int(np.argmax(votes)))
    return predictions


@pytest.mark.parametrize("k, temperature, chunk", [(1, 0.07, 1024), (5, 0.07, 3), (20, 0.5, 7), (200, 0.1, 1024)])
def test_knn_predict_matches_reference(k: int, temperature: float, chunk: int) -> None:
    rng = np.random.default_rng(k)
    centres = rng.normal(size=(4, 16))
    bank_labels = rng.integers(0, 4, 60)
    query_labels = rng.integers(0, 4, 25)
    bank = centres[bank_labels] + rng.normal(scale=1.2, size=(60, 16))
    query = centres[query_labels] + rng.normal(scale=1.2, size=(25, 16))
    got = knn_predict(torch.tensor(query), torch.tensor(bank), torch.tensor(bank_labels), 4, k, temperature, chunk)
    assert got.tolist() == reference_knn(query, bank, bank_labels, 4, k, temperature)


def test_knn_predict_errors() -> None:
    bank, labels = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="same D"):
        knn_predict(torch.randn(2, 4), bank, labels, 2)
    with pytest.raises(ValueError, match="bank_labels"):
        knn_predict(torch.randn(2, 3), bank, labels[:3], 2)
    with pytest.raises(ValueError, match="empty"):
        knn_predict(torch.randn(2, 3), bank[:0], labels[:0], 2)
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(torch.randn(2, 3), bank, labels, 2, k=0)
    with pytest.raises(ValueError, match="temperature"):
        knn_predict(torch.randn(2, 3), bank, labels, 2, temperature=0.0)


class PoolEncoder(nn.Module):
    """A tiny encoder with BatchNorm and dropout: (B, 1, H, W) -> (B, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.relu(self.bn(self.conv(x)))).mean(dim=(2, 3))


def make_rows(classes: Mapping[str, list[int]], per_class: int = 6, size: int = 8) -> list[dict[str, Any]]:
    """Rows whose image is a per-class constant plus noise (classes separable by intensity)."""
    rng = np.random.default_rng(0)
    rows = []
    for split, labels in classes.items():
        for c in labels:
            for i in range(per_class):
                image = np.full((1, size, size), float(c), np.float32) + rng.normal(scale=0.1, size=(1, size, size))
                rows.append({"split": split, "image": image.astype(np.float32), "class": c, "source": f"{split}-{c}-{i}"})
    return rows


def identity(row: Mapping[str, Any]) -> dict[str, Any]:
    return dict(row)


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    return make_rows({"train": [0, 1, 2], "val": [0, 1, 2]})


def test_accuracy_equals_reference_on_encoder_features(rows: list[dict[str, Any]]) -> None:
    """The monitor's value is the reference vote on the eval-mode features of bank and queries."""
    torch.manual_seed(0)
    encoder = PoolEncoder()
    with torch.no_grad():  # give BatchNorm running statistics, so "auto" uses them as they are
        encoder.train()(torch.as_tensor(np.stack([r["image"] for r in rows])))
    monitor = KNNMonitor(encoder, rows, identity, k=4, temperature=0.1)
    accuracy = monitor.evaluate()
    bank = [r for r in rows if r["split"] == "train"]
    query = [r for r in rows if r["split"] == "val"]
    encoder.eval()
    with torch.no_grad():
        features = {n: encoder(torch.as_tensor(np.stack([r["image"] for r in part]))).numpy() for n, part in
                    (("bank", bank), ("query", query))}
    predicted = reference_knn(features["query"], features["bank"], np.array([r["class"] for r in bank]), 3, 4, 0.1)
    expected = np.mean(np.array(predicted) == np.array([r["class"] for r in query]))
    assert accuracy == pytest.approx(expected)
    assert monitor.majority_rate == pytest.approx(1 / 3)


def test_bn_statistics_recomputed_only_before_training(rows: list[dict[str, Any]]) -> None:
    """"auto": an encoder whose BatchNorm never saw a batch is judged with statistics of the bank, on a copy."""
    torch.manual_seed(0)
    encoder = PoolEncoder()
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    auto = KNNMonitor(encoder, rows, identity, k=4).evaluate()
    recompute = KNNMonitor(encoder, rows, identity, k=4, bn_stats="recompute").evaluate()
    running = KNNMonitor(encoder, rows, identity, k=4, bn_stats="running").evaluate()
    assert auto == recompute
    for key, value in encoder.state_dict().items():  # the encoder itself is untouched
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert 0.0 <= running <= 1.0
    with pytest.raises(ValueError, match="bn_stats"):
        KNNMonitor(encoder, rows, identity, bn_stats="precise")


def run_engine(monitor: KNNMonitor, max_epochs: int, state: Mapping[str, Any] | None = None, start_epoch: int = 0) -> Engine:
    """An engine of 2 iterations per epoch that trains nothing; optionally 'resumed' at ``start_epoch``."""
    engine = Engine(lambda e, b: {"loss": torch.tensor(1.0)})
    if state is not None:
        monitor.load_state_dict(state)

    if start_epoch:
        @engine.on(Events.STARTED)
        def _resume(e: Engine) -> None:  # what ResumeFromCheckpoint does before the monitor's STARTED handler
            e.state.epoch, e.state.iteration = start_epoch, start_epoch * 2

    monitor.attach(engine)
    engine.run([0, 1], max_epochs=max_epochs)
    return engine


class Writer:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        pass


def test_schedule_epoch_zero_interval_last_and_tensorboard(rows: list[dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
    writer = Writer()
    monitor = KNNMonitor(PoolEncoder(), rows, identity, k=3, interval=2, summary_writer=writer)
    with caplog.at_level("INFO", logger="modan_monai.knn"):
        run_engine(monitor, max_epochs=5)
    assert sorted(monitor.history) == [0, 2, 4, 5]
    assert [(tag, step) for tag, _, step in writer.scalars] == [
        (tag, e) for e in (0, 2, 4, 5) for tag in ("knn/accuracy", "linear_probe/accuracy")
    ]
    assert sorted(monitor.linear_probe_history) == [0, 2, 4, 5]
    assert "linear-probe accuracy epoch 0" in caplog.text
    assert "k-NN accuracy epoch 0" in caplog.text and "(before training)" in caplog.text
    assert "'val' images" in caplog.text


def test_state_dict_round_trip_and_resume_keeps_epoch_zero(rows: list[dict[str, Any]]) -> None:
    first = KNNMonitor(PoolEncoder(), rows, identity, k=3, interval=2)
    run_engine(first, max_epochs=2)
    state = first.state_dict()
    assert sorted(state["history"]) == [0, 2]

    resumed = KNNMonitor(PoolEncoder(), rows, identity, k=3, interval=2)
    calls: list[int] = []
    original = resumed.measure
    resumed.measure = lambda **kw: calls.append(1) or original(**kw)  # type: ignore[method-assign]
    run_engine(resumed, max_epochs=4, state=state, start_epoch=2)
    assert resumed.history[0] == first.history[0] and resumed.history[2] == first.history[2]
    assert sorted(resumed.history) == [0, 2, 4] and len(calls) == 1  # epoch 4 only: epoch 0 is not recomputed
    again = KNNMonitor(PoolEncoder(), rows, identity)
    again.load_state_dict(resumed.state_dict())
    assert again.history == resumed.history and again.majority_rate == resumed.majority_rate


def test_random_states_and_train_flags_unchanged(rows: list[dict[str, Any]]) -> None:
    """A monitor call leaves Python, NumPy, torch and MONAI transform random states and the modes as they were."""
    encoder = PoolEncoder().train()
    encoder.drop.eval()  # a mixed state (e.g. a frozen part) must come back as it was
    train_transform = RandGaussianNoised(keys="image", prob=1.0)
    train_transform.set_random_state(seed=3)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone(),
              train_transform.R.get_state()[1].copy())
    monitor = KNNMonitor(encoder, rows, Compose([Lambdad(keys="image", func=lambda x: x * 1.0)]), k=3)
    for bn_stats in ("recompute", "running"):
        monitor.bn_stats = bn_stats
        monitor.evaluate()
    after = (random.getstate(), np.random.get_state()[1], torch.get_rng_state(), train_transform.R.get_state()[1])
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert torch.equal(before[2], after[2])
    np.testing.assert_array_equal(before[3], after[3])
    assert encoder.training and encoder.bn.training and not encoder.drop.training


def test_random_state_guard_restores_after_draws() -> None:
    transform = RandGaussianNoised(keys="image", prob=1.0)

    def seed_all() -> None:
        random.seed(5), np.random.seed(5), torch.manual_seed(5), transform.set_random_state(seed=0)

    def draw() -> tuple[float, ...]:
        return random.random(), float(np.random.rand()), torch.rand(1).item(), float(transform.R.rand())

    seed_all()
    expected = draw()
    seed_all()
    with _preserve_random_state([transform]):
        draw(), torch.rand(3), transform.R.rand(4)
    assert draw() == expected


def test_errors_name_split_and_config_id(rows: list[dict[str, Any]]) -> None:
    train_only = [r for r in rows if r["split"] == "train"]
    with pytest.raises(ValueError, match=r"held-out split 'val' \(config id 'knn_split'\) has no rows.*\['train'\]"):
        KNNMonitor(PoolEncoder(), train_only, identity)
    with pytest.raises(ValueError, match=r"'test' \(config id 'my_split'\)"):
        KNNMonitor(PoolEncoder(), rows, identity, query_split="test", config_ids={"query_split": "my_split"})
    with pytest.raises(ValueError, match=r"also a bank split"):
        KNNMonitor(PoolEncoder(), rows, identity, query_split="train")
    with pytest.raises(ValueError, match=r"bank split\(s\) \['extra'\] \(config id 'splits'\)"):
        KNNMonitor(PoolEncoder(), rows, identity, bank_splits="extra")
    single = make_rows({"train": [0, 1], "val": [1]})
    with pytest.raises(ValueError, match=r"split 'val' \(config id 'knn_split'\) holds a single class \(b\)"):
        KNNMonitor(PoolEncoder(), single, identity, class_names=["a", "b"]).evaluate()
    with pytest.raises(ValueError, match="deterministic"):
        KNNMonitor(PoolEncoder(), rows, Compose([RandGaussianNoised(keys="image")]))
    with pytest.raises(ValueError, match="knn_interval"):
        KNNMonitor(PoolEncoder(), rows, identity, interval=-1)
    mixed = rows + [{"split": "val", "image": np.zeros((1, 4, 4), np.float32), "class": 0}]
    with pytest.raises(ValueError, match="different sizes"):
        KNNMonitor(PoolEncoder(), mixed, identity).evaluate()


def test_interval_zero_switches_off(rows: list[dict[str, Any]]) -> None:
    monitor = KNNMonitor(PoolEncoder(), [r for r in rows if r["split"] == "train"], identity, interval=0)
    run_engine(monitor, max_epochs=2)
    assert monitor.history == {}


def test_linear_probe_equals_reference_on_the_same_features(rows: list[dict[str, Any]]) -> None:
    """The probe is fitted on the eval-mode bank features the k-NN votes with, and read on the same queries."""
    from modan_monai.handlers import linear_probe_accuracy

    torch.manual_seed(0)
    encoder = PoolEncoder()
    with torch.no_grad():
        encoder.train()(torch.as_tensor(np.stack([r["image"] for r in rows])))
    values = KNNMonitor(encoder, rows, identity, k=4, temperature=0.1).measure()
    encoder.eval()
    with torch.no_grad():
        parts = {s: [r for r in rows if r["split"] == s] for s in ("train", "val")}
        features = {s: encoder(torch.as_tensor(np.stack([r["image"] for r in p]))) for s, p in parts.items()}
    labels = {s: torch.tensor([r["class"] for r in p]) for s, p in parts.items()}
    expected = linear_probe_accuracy(features["train"], labels["train"], features["val"], labels["val"])
    assert values["linear_probe"] == pytest.approx(expected)
    assert values["knn"] == KNNMonitor(encoder, rows, identity, k=4, temperature=0.1).evaluate()


def test_text_labels_give_the_values_of_integer_labels(rows: list[dict[str, Any]]) -> None:
    """A label column of text (or of numbers read as floats) names the same classes as their integer codes."""
    torch.manual_seed(0)
    encoder = PoolEncoder()
    as_int = KNNMonitor(encoder, rows, identity, k=4).measure()
    named = [{**r, "class": ["benign", "malignant", "normal"][r["class"]]} for r in rows]
    as_text = KNNMonitor(encoder, named, identity, k=4).measure()
    as_float = KNNMonitor(encoder, [{**r, "class": float(r["class"])} for r in rows], identity, k=4).measure()
    assert as_text == as_int == as_float
    single = [{**r, "class": "benign" if r["split"] == "val" else r["class"]} for r in named]
    with pytest.raises(ValueError, match=r"'val' \(config id 'knn_split'\) holds a single class \(\['benign'\]\)"):
        KNNMonitor(encoder, single, identity).measure()


def test_linear_probe_history_is_checkpointed_and_can_be_switched_off(rows: list[dict[str, Any]]) -> None:
    first = KNNMonitor(PoolEncoder(), rows, identity, k=3, interval=2)
    run_engine(first, max_epochs=2)
    state = first.state_dict()
    assert sorted(state["linear_probe_history"]) == [0, 2]
    resumed = KNNMonitor(PoolEncoder(), rows, identity, k=3, interval=2)
    run_engine(resumed, max_epochs=4, state=state, start_epoch=2)
    assert resumed.linear_probe_history[0] == first.linear_probe_history[0]
    assert sorted(resumed.linear_probe_history) == [0, 2, 4]
    writer = Writer()
    off = KNNMonitor(PoolEncoder(), rows, identity, k=3, linear_probe=False, summary_writer=writer)
    run_engine(off, max_epochs=1)
    assert off.linear_probe_history == {} and {tag for tag, _, _ in writer.scalars} == {"knn/accuracy"}
    with pytest.raises(ValueError, match="linear_probe_c"):
        KNNMonitor(PoolEncoder(), rows, identity, linear_probe_c=0.0)
