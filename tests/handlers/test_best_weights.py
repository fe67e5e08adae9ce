"""KeepBestWeights: a copy of the best epoch's weights, not a reference to the live ones; its file and state."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from modan_monai.handlers import KeepBestWeights


def run_epochs(net: torch.nn.Module, keep: KeepBestWeights, metrics: list[float]) -> list[dict]:
    """An ignite engine whose epoch e sets the weights to e and reports ``metrics[e - 1]``; returns snapshots."""
    snapshots: list[dict] = []
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _update(e: Engine) -> None:
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(e.state.epoch))
        snapshots.append({k: v.clone() for k, v in net.state_dict().items()})
        e.state.metrics["val_auc"] = metrics[e.state.epoch - 1]

    keep.attach(engine)  # after _update: sees this epoch's metric
    engine.run([0], max_epochs=len(metrics))
    return snapshots


@pytest.mark.parametrize(
    "metrics, mode, best_epoch",
    [
        ([0.6, 0.9, 0.7], "max", 2),
        ([0.6, 0.9, math.nan, 0.9], "max", 2),  # NaN never wins, ties keep the first
        ([0.5, 0.4, 0.45], "min", 2),
        ([0.1, 0.2, 0.3], "max", 3),
    ],
)
def test_keeps_a_copy_of_the_best_epoch(metrics: list[float], mode: str, best_epoch: int) -> None:
    net = torch.nn.Linear(3, 2)
    keep = KeepBestWeights(net, metric_name="val_auc", mode=mode)
    snapshots = run_epochs(net, keep, metrics)
    assert keep.best_epoch == best_epoch and keep.best_metric == metrics[best_epoch - 1]
    for k, v in keep.best_state.items():
        np.testing.assert_allclose(v.numpy(), snapshots[best_epoch - 1][k].numpy())
    if best_epoch != len(metrics):  # the kept weights are not the final (live) ones
        assert not torch.equal(keep.best_state["weight"], net.weight.detach())
    assert keep.restore()
    np.testing.assert_allclose(net.weight.detach().numpy(), snapshots[best_epoch - 1]["weight"].numpy())


def test_errors_and_empty_restore() -> None:
    net = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="mode"):
        KeepBestWeights(net, mode="median")
    keep = KeepBestWeights(net, metric_name="val_auc")
    assert keep.restore() is False
    with pytest.raises(KeyError, match="val_auc"):
        keep(SimpleNamespace(state=SimpleNamespace(metrics={"loss": 1.0}, epoch=1)))


def test_save_path_holds_the_best_state_and_state_dict_round_trips(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "models" / "model.pt"
    keep = KeepBestWeights(net, metric_name="val_auc", save_path=path)
    snapshots = run_epochs(net, keep, [0.5, 0.8, 0.6])
    on_disk = torch.load(path, weights_only=True)
    for k, v in snapshots[1].items():  # epoch 2 was the best: the file holds its weights, not the final ones
        torch.testing.assert_close(on_disk[k], v)
    assert not list(path.parent.glob(".*.tmp"))  # written to a temporary file, then renamed
    resumed = KeepBestWeights(torch.nn.Linear(3, 2), metric_name="val_auc")
    resumed.load_state_dict(keep.state_dict())
    assert (resumed.best_epoch, resumed.best_metric) == (2, 0.8)
    resumed(SimpleNamespace(state=SimpleNamespace(metrics={"val_auc": 0.7}, epoch=4)))  # below the earlier best
    assert resumed.best_epoch == 2
    with pytest.raises(KeyError, match=r"missing \['best_metric'\]"):
        resumed.load_state_dict({"best_state": None, "best_epoch": None})
