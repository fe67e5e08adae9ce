"""``Trainer``: MONAI's SupervisedTrainer with named loss terms in the engine output and a non-finite stop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.data import DataLoader
from monai.handlers import StatsHandler, TensorBoardStatsHandler
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from modan_monai.engines import PrepareViewGroups, Trainer


class GroupNet(nn.Module):
    """Pools every view group (B, V, C, H, W) of its own spatial size to (B, V, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, groups: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.scale * v.mean(dim=(-2, -1)) for k, v in groups.items()}


def group_loss(pred: dict[str, torch.Tensor], target: None) -> dict[str, torch.Tensor]:
    """Two named terms: the squared distance of the group means, and the teacher view's magnitude."""
    match = (pred["teacher"].mean(1) - pred["locals"].mean(1)).pow(2).mean()
    size = pred["teacher"].pow(2).mean()
    return {"loss": match + 0.1 * size, "match": match, "size": size}


def group_data(n: int = 8, bad: int | None = None) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        teacher = torch.rand(1, 1, 16, 16, generator=gen)
        if i == bad:
            teacher[0, 0, 3, 3] = float("nan")
        rows.append({"teacher": teacher, "locals": torch.rand(4, 1, 6, 6, generator=gen), "source": f"img{i}.png"})
    return rows


def make_trainer(data: list[dict], net: nn.Module, handlers: list | None = None) -> Trainer:
    return Trainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(data, batch_size=4, shuffle=False),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=group_loss,
        prepare_batch=PrepareViewGroups(views_key=["teacher", "locals"], target_key=None),
        train_handlers=handlers,
        decollate=False,
    )


def test_view_groups_and_named_terms_reach_monai_handlers(tmp_path: Path, capsys, tensorboard_tags) -> None:
    writer = SummaryWriter(log_dir=str(tmp_path))
    terms = lambda out: {f"loss_terms/{k}": v for k, v in out["loss_terms"].items()}  # noqa: E731
    handlers = [
        StatsHandler(name="trainer_stats", output_transform=lambda out: out["loss_terms"], iteration_log=True),
        TensorBoardStatsHandler(summary_writer=writer, output_transform=terms),
    ]
    net = GroupNet()
    trainer = make_trainer(group_data(), net, handlers)
    trainer.run()
    writer.close()
    out = trainer.state.output
    assert set(out["loss_terms"]) == {"loss", "match", "size"}
    torch.testing.assert_close(out["loss_terms"]["loss"], out["loss"].detach())
    assert not out["loss_terms"]["match"].requires_grad
    printed = capsys.readouterr()
    assert "match: " in printed.out + printed.err and "size: " in printed.out + printed.err
    assert {"loss_terms/loss", "loss_terms/match", "loss_terms/size"} <= set(tensorboard_tags(tmp_path)["scalars"])
    assert net.scale.item() != 1.0  # the optimiser stepped on the total


def test_tensor_loss_gives_a_single_loss_term() -> None:
    net = nn.Linear(2, 1)
    data = [{"image": torch.ones(2), "label": torch.zeros(1)}] * 4
    trainer = Trainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(data, batch_size=2), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=nn.MSELoss(), decollate=False,
    )
    trainer.run()
    assert list(trainer.state.output["loss_terms"]) == ["loss"]


def test_non_finite_term_stops_before_the_step_naming_term_iteration_and_files() -> None:
    net = GroupNet()
    trainer = make_trainer(group_data(bad=5), net)  # image 5 sits in the second batch of 4
    with pytest.raises(FloatingPointError) as err:
        trainer.run()
    message = str(err.value)
    assert "'match'" in message and "iteration 2" in message and "epoch 1" in message
    assert "img4.png; img5.png; img6.png; img7.png" in message and "img0.png" not in message
    assert torch.isfinite(net.scale).all()  # no optimiser step on the NaN loss


def test_mapping_without_total_is_refused() -> None:
    net = GroupNet()
    trainer = make_trainer(group_data(), net)
    trainer.terms_loss_function = lambda pred, target: {"match": pred["teacher"].mean()}
    with pytest.raises(KeyError, match="without a 'loss' total"):
        trainer.run()


def test_an_empty_training_loader_is_an_error_naming_sizes() -> None:
    net = GroupNet()
    trainer = Trainer(
        device="cpu", max_epochs=1, network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        train_data_loader=DataLoader(group_data(3), batch_size=4, drop_last=True), loss_function=group_loss,
        prepare_batch=PrepareViewGroups(views_key=["teacher", "locals"], target_key=None), decollate=False,
    )
    with pytest.raises(ValueError, match=r"yields no batch: 3 items, batch_size 4, drop_last True"):
        trainer.run()
