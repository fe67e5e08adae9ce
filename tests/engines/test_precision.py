"""Mixed precision and memory layout: ``modan_monai.engines.precision`` and ``Trainer(precision=, channels_last=)``.

Checked: :func:`autocast_dtype` for every accepted value and the error naming the ``amp`` id;
:class:`PrecisionInferer` with bf16 on the CPU (float32 outputs close to the float32 run, nested dict / tuple /
list outputs, integer and float64 tensors left as they are), fp16 on the CPU (one warning), and
``channels_last`` (inputs reach the network in that layout, outputs equal the default layout within 1e-5);
:func:`memory_format`; and a :class:`~modan_monai.engines.Trainer` with ``precision="bf16"`` on the CPU, whose
network runs in bf16 while the loss function gets float32 predictions outside autocast, the loss in
``engine.state.output["loss"]`` is a finite float32 and decreases over the epochs; ``channels_last=True`` trains
as the default layout does; fp16 on CUDA goes to MONAI's own ``amp`` path.
"""

from __future__ import annotations

import copy
import logging
import warnings

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.inferers import SimpleInferer
from torch import nn

from modan_monai.engines import PrecisionInferer, Trainer, autocast_dtype, memory_format
from modan_monai.engines.precision import to_channels_last, to_float32


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), (False, None), ("off", None), ("OFF", None), ("fp32", None), ("bf16", torch.bfloat16),
     ("BF16", torch.bfloat16), ("fp16", torch.float16)],
)
def test_autocast_dtype(value, expected) -> None:
    assert autocast_dtype(value) is expected


@pytest.mark.parametrize("value", ["int8", "fp64", "half", ""])
def test_autocast_dtype_bad_value_names_the_config_id(value: str) -> None:
    with pytest.raises(ValueError, match="'amp'"):
        autocast_dtype(value)
    with pytest.raises(ValueError, match="'precision'"):
        autocast_dtype(value, key="precision")
    with pytest.raises(ValueError, match="'amp'"):
        PrecisionInferer(amp=value)


def test_memory_format() -> None:
    assert memory_format(True) is torch.channels_last
    assert memory_format(False) is torch.preserve_format


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()


class NestedOutputs(nn.Module):
    """Returns a dict holding a float map, a tuple (features, integer tensor, float64 tensor) and a list."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> dict:
        y = self.conv(x)
        feats = self.fc(y.mean((2, 3)))
        return {"map": y, "pair": (feats, torch.arange(3), torch.ones(2, dtype=torch.float64)),
                "list": [feats * 2, "name"]}


def test_bf16_on_cpu_returns_float32_close_to_float32() -> None:
    net = conv_net()
    x = torch.randn(4, 2, 10, 10, generator=torch.Generator().manual_seed(1))
    seen: list[torch.dtype] = []
    net[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.no_grad():
        reference = SimpleInferer()(x, net)
        out = PrecisionInferer(amp="bf16")(x, net)
    assert seen == [torch.float32, torch.bfloat16]  # the convolution ran in bf16 under autocast
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), reference.numpy(), rtol=5e-2, atol=5e-2)
    assert not torch.equal(out, reference)


def test_nested_outputs_come_back_float32_and_keep_their_structure() -> None:
    torch.manual_seed(0)
    net = NestedOutputs()
    x = torch.randn(2, 2, 6, 6)
    reference = net(x)
    out = PrecisionInferer(amp="bf16")(x, net)
    assert set(out) == {"map", "pair", "list"}
    assert isinstance(out["pair"], tuple) and isinstance(out["list"], list)
    assert out["map"].dtype == out["pair"][0].dtype == out["list"][0].dtype == torch.float32
    assert out["pair"][1].dtype == torch.int64 and torch.equal(out["pair"][1], torch.arange(3))
    assert out["pair"][2].dtype == torch.float64
    assert out["list"][1] == "name"
    for got, ref in ((out["map"], reference["map"]), (out["pair"][0], reference["pair"][0])):
        np.testing.assert_allclose(got.detach().numpy(), ref.detach().numpy(), rtol=5e-2, atol=5e-2)
    out["map"].sum().backward()  # the float32 outputs still carry the graph
    assert net.conv.weight.grad is not None


def test_to_float32_and_to_channels_last_helpers() -> None:
    data = {"a": torch.ones(2, dtype=torch.bfloat16), "b": [torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4, 5)]}
    assert to_float32(data)["a"].dtype == torch.float32
    assert to_float32(data)["b"][0] is data["b"][0]
    moved = to_channels_last(data)
    assert moved["b"][0].is_contiguous(memory_format=torch.channels_last)
    assert moved["b"][1] is data["b"][1] and moved["a"] is data["a"]  # only 4-D tensors


def test_fp16_on_cpu_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    net = conv_net()
    inferer = PrecisionInferer(amp="fp16")
    x = torch.randn(2, 2, 8, 8)
    with caplog.at_level(logging.WARNING, logger="modan_monai.engines.precision"), torch.no_grad():
        outs = [inferer(x, net) for _ in range(2)]
    assert [r.levelno for r in caplog.records].count(logging.WARNING) == 1
    assert "bf16" in caplog.records[0].getMessage()
    assert all(o.dtype == torch.float32 for o in outs)


def test_no_amp_is_the_wrapped_inferer() -> None:
    net = conv_net()
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(PrecisionInferer(amp=None)(x, net), SimpleInferer()(x, net))


@pytest.mark.parametrize("amp", [None, "bf16"])
def test_channels_last_equals_default_layout(amp: str | None) -> None:
    net = conv_net()
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    assert net_cl[0].weight.is_contiguous(memory_format=torch.channels_last)
    layouts: list[bool] = []
    net_cl[0].register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(3, 2, 9, 9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        default = PrecisionInferer(amp=amp)(x, net)
        out = PrecisionInferer(amp=amp, channels_last=True)(x, net_cl)
    assert layouts == [True]
    tol = 1e-5 if amp is None else 2e-2  # bf16 rounds differently in the two layouts
    np.testing.assert_allclose(out.numpy(), default.numpy(), rtol=tol, atol=tol)


class TinyClassifier(nn.Module):
    """Two convolutions, global pooling and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def tiny_dataset() -> list[dict]:
    """Eight 8x8 images: label 1 for the positive ones, 0 for the negative ones."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(8):
        label = i % 2
        image = torch.rand(1, 8, 8, generator=gen) * 0.5 + (2.0 * label - 1.0)
        rows.append({"image": image, "label": torch.tensor(label)})
    return rows


class RecordingLoss:
    """Cross entropy that records the dtype of the predictions and whether autocast was on."""

    def __init__(self) -> None:
        self.pred_dtypes: list[torch.dtype] = []
        self.autocast: list[bool] = []

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.pred_dtypes.append(pred.dtype)
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return nn.functional.cross_entropy(pred, target)


def run_trainer(epochs: int = 6, **kwargs) -> tuple[Trainer, list[tuple[int, float, torch.dtype]], RecordingLoss]:
    net = TinyClassifier()
    if kwargs.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    loss = RecordingLoss()
    trainer = Trainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=DataLoader(tiny_dataset(), batch_size=4, shuffle=False),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.3),
        loss_function=loss,
        decollate=False,
        **kwargs,
    )
    losses: list[tuple[int, float, torch.dtype]] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine: Trainer) -> None:
        value = engine.state.output["loss"]
        losses.append((engine.state.epoch, float(value.detach()), value.dtype))

    trainer.run()
    return trainer, losses, loss


def test_bf16_trainer_on_cpu_trains_with_float32_loss() -> None:
    trainer, losses, loss = run_trainer(precision="bf16")
    assert isinstance(trainer.inferer, PrecisionInferer) and trainer.inferer.dtype is torch.bfloat16
    assert len(losses) == 12
    assert all(dtype == torch.float32 for _, _, dtype in losses)
    assert all(np.isfinite(value) for _, value, _ in losses)
    assert loss.pred_dtypes == [torch.float32] * 12  # the loss function gets float32 predictions ...
    assert loss.autocast == [False] * 12  # ... and runs outside autocast
    epoch_means = [np.mean([v for epoch, v, _ in losses if epoch == e]) for e in range(1, 7)]
    assert epoch_means[-1] < 0.5 * epoch_means[0], epoch_means
    assert min(epoch_means[3:]) < min(epoch_means[:3]), epoch_means
    assert trainer.state.output["loss_terms"]["loss"].dtype == torch.float32


def test_bf16_trainer_network_runs_in_bf16() -> None:
    dtypes: list[torch.dtype] = []
    original = TinyClassifier.forward

    def forward(self, x):
        out = original(self, x)
        dtypes.append(out.dtype)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TinyClassifier, "forward", forward)
        run_trainer(epochs=1, precision="bf16")
    assert dtypes == [torch.bfloat16, torch.bfloat16]


def test_channels_last_trainer_trains_as_the_default_layout() -> None:
    _, default, _ = run_trainer(epochs=2)
    trainer, channels_last, _ = run_trainer(epochs=2, channels_last=True)
    assert isinstance(trainer.inferer, PrecisionInferer) and trainer.inferer.channels_last
    np.testing.assert_allclose([v for _, v, _ in channels_last], [v for _, v, _ in default], rtol=1e-5, atol=1e-6)


def test_fp32_trainer_keeps_the_plain_inferer_path() -> None:
    trainer, losses, loss = run_trainer(epochs=1, precision=None)
    assert isinstance(trainer.inferer, SimpleInferer)
    assert loss.pred_dtypes == [torch.float32, torch.float32]


def test_bad_trainer_precision_raises() -> None:
    net = TinyClassifier()
    with pytest.raises(ValueError, match="'amp'"):
        Trainer(device=torch.device("cpu"), max_epochs=1, network=net, loss_function=RecordingLoss(),
                train_data_loader=DataLoader(tiny_dataset(), batch_size=4),
                optimizer=torch.optim.SGD(net.parameters(), lr=0.1), precision="fp8")


def test_fp16_on_cuda_uses_monai_amp() -> None:
    net = TinyClassifier()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the gradient scaler warns where CUDA is not available
        trainer = Trainer(device=torch.device("cuda"), max_epochs=1, network=net, loss_function=RecordingLoss(),
                          train_data_loader=DataLoader(tiny_dataset(), batch_size=4),
                          optimizer=torch.optim.SGD(net.parameters(), lr=0.1), precision="fp16", amp=False)
    assert trainer.amp is True and trainer.amp_kwargs["dtype"] is torch.float16
    assert not isinstance(trainer.inferer, PrecisionInferer)
