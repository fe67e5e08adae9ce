"""``GlobalBatchNorm`` and ``convert_global_batchnorm``, in one process and under a two-process gloo group.

Checked in one process: :class:`~modan_monai.networks.blocks.GlobalBatchNorm` equals ``torch.nn.BatchNorm{1,2,3}d``
(training and eval outputs, gradients, running statistics, ``num_batches_tracked``, ``momentum=None``);
:func:`~modan_monai.networks.blocks.convert_global_batchnorm` replaces every batch norm of a small ResNet-like
network in place, keeping the very parameter and buffer tensors and the state dict keys.

Checked under a real two-rank gloo group (both ranks started once for the module): with each rank holding half
of a batch, the outputs, input gradients (DDP convention: each rank's loss is the mean over its half, so its input
gradient is ``world_size`` times the one-process one), rank-averaged weight and bias gradients and running
statistics equal one ``BatchNorm2d`` over the whole batch; and :class:`~modan_monai.utils.RandomStates` gathers
both ranks' states under ``"ranks"`` and restores each rank's own.
"""

from __future__ import annotations

import copy
import io
import random
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from modan_monai.networks.blocks import GlobalBatchNorm, convert_global_batchnorm

WORLD_SIZE = 2
BATCH = 6  # global batch; each rank holds BATCH // WORLD_SIZE rows
CHANNELS = 3
MOMENTA = (0.1, None)
STEPS = 2


# ---------------------------------------------------------------------------------------------- one process


def _reference_class(dims: int) -> type[nn.modules.batchnorm._BatchNorm]:
    return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]


@pytest.mark.parametrize("spatial_dims, shape", [(1, (5, 3)), (1, (5, 3, 7)), (2, (4, 3, 5, 5)), (3, (3, 3, 2, 3, 4))])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("affine", [True, False])
def test_single_process_equals_torch_batchnorm(
    spatial_dims: int, shape: tuple[int, ...], momentum: float | None, affine: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    ref = _reference_class(spatial_dims)(CHANNELS, momentum=momentum, affine=affine)
    bn = GlobalBatchNorm(CHANNELS, momentum=momentum, affine=affine)
    if affine:
        with torch.no_grad():
            for module in (ref, bn):
                module.weight.copy_(torch.linspace(0.5, 1.5, CHANNELS))
                module.bias.copy_(torch.linspace(-0.2, 0.3, CHANNELS))
    for _ in range(3):
        x = (torch.randn(shape, generator=gen) * 2 + 1).requires_grad_(True)
        x_ref = x.detach().clone().requires_grad_(True)
        weights = torch.randn(shape, generator=gen)
        out, out_ref = bn(x), ref(x_ref)
        np.testing.assert_allclose(out.detach().numpy(), out_ref.detach().numpy(), rtol=1e-6, atol=1e-6)
        (out * weights).sum().backward()
        (out_ref * weights).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), x_ref.grad.numpy(), rtol=1e-5, atol=1e-6)
        if affine:
            np.testing.assert_allclose(bn.weight.grad.numpy(), ref.weight.grad.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(bn.bias.grad.numpy(), ref.bias.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_mean.numpy(), ref.running_mean.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn.running_var.numpy(), ref.running_var.numpy(), rtol=1e-6, atol=1e-7)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    bn.eval()
    ref.eval()
    x = torch.randn(shape, generator=gen)
    np.testing.assert_allclose(bn(x).detach().numpy(), ref(x).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_input_below_two_dimensions_raises() -> None:
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        GlobalBatchNorm(3)(torch.zeros(3))


class Block(nn.Module):
    """A residual block with a projection shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=None)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


class TinyResNet(nn.Module):
    """Stem, two residual blocks and a head with a 1-d batch norm (and one without affine or running stats)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.layers = nn.ModuleList([Block(4, 4), Block(4, 6)])
        self.head = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5, affine=False, track_running_stats=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean((2, 3)))


def _batch_norms(module: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def test_convert_replaces_every_batchnorm_in_place_keeping_tensors() -> None:
    torch.manual_seed(0)
    net = TinyResNet()
    net.layers[1].bn1.eval()  # a frozen one stays in eval mode
    original = copy.deepcopy(net)
    before = _batch_norms(net)
    params = {n: p for n, p in net.named_parameters()}
    buffers = {n: b for n, b in net.named_buffers()}
    keys = list(net.state_dict())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)  # built before the conversion

    assert convert_global_batchnorm(net) is net
    after = _batch_norms(net)
    assert list(after) == list(before) and len(after) == 8
    for name, module in after.items():
        old = before[name]
        assert type(module) is GlobalBatchNorm, name
        assert (module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats) == (
            old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats)
        assert module.training == old.training
    assert list(net.state_dict()) == keys
    assert all(p is params[n] for n, p in net.named_parameters()) and len(params) == len(list(net.parameters()))
    assert all(b is buffers[n] for n, b in net.named_buffers()) and len(buffers) == len(list(net.buffers()))
    assert net.head[1].running_mean is None and net.head[1].weight is None

    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for model in (net, original):
        model.zero_grad()
        model(x).pow(2).mean().backward()
    np.testing.assert_allclose(net(x).detach().numpy(), original(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    for (name, a), (_, b) in zip(net.state_dict().items(), original.state_dict().items()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    optimizer.step()  # the optimiser still steps the converted network's parameters
    assert not torch.equal(net.stem[1].weight, original.stem[1].weight)

    again = convert_global_batchnorm(net)  # nothing left to convert
    assert again is net and all(m is after[n] for n, m in _batch_norms(net).items())


def test_convert_a_bare_batchnorm_returns_it_converted() -> None:
    bn = nn.BatchNorm3d(2, momentum=0.3)
    converted = convert_global_batchnorm(bn)
    assert isinstance(converted, GlobalBatchNorm) and converted.momentum == 0.3
    assert converted.weight is bn.weight and converted.running_var is bn.running_var
    assert convert_global_batchnorm(converted) is converted


# ------------------------------------------------------------------------------------------ two processes


def _bn_data() -> dict[str, Any]:
    """The global batches, loss weights, affine parameters and eval batch both ranks and the reference use."""
    gen = torch.Generator().manual_seed(123)
    shape = (BATCH, CHANNELS, 3, 4)
    return {
        "x": [torch.randn(shape, generator=gen) * (1 + step) + step for step in range(STEPS)],
        "g": [torch.randn(shape, generator=gen) for _ in range(STEPS)],
        "weight": torch.rand(CHANNELS, generator=gen) + 0.5,
        "bias": torch.randn(CHANNELS, generator=gen),
        "eval": torch.randn(shape, generator=gen),
    }


def _run_batchnorm(bn: nn.Module, rows: slice, all_reduce_mean: Any) -> dict[str, Any]:
    """Train ``bn`` for ``STEPS`` steps on ``rows`` of the global batches, then one eval forward."""
    data = _bn_data()
    with torch.no_grad():
        bn.weight.copy_(data["weight"])
        bn.bias.copy_(data["bias"])
    record: dict[str, Any] = {"out": [], "x_grad": [], "weight_grad": [], "bias_grad": []}
    bn.train()
    for step in range(STEPS):
        x = data["x"][step][rows].clone().requires_grad_(True)
        out = bn(x)
        bn.zero_grad()
        (out * data["g"][step][rows]).mean().backward()  # each rank: the mean over its rows, as under DDP
        record["out"].append(out.detach().clone())
        record["x_grad"].append(x.grad.clone())
        record["weight_grad"].append(all_reduce_mean(bn.weight.grad.clone()))
        record["bias_grad"].append(all_reduce_mean(bn.bias.grad.clone()))
    record.update(running_mean=bn.running_mean.clone(), running_var=bn.running_var.clone(),
                  num_batches_tracked=int(bn.num_batches_tracked))
    bn.eval()
    record["eval"] = bn(data["eval"][rows]).detach().clone()
    return record


def _random_states_on_rank(rank: int) -> dict[str, Any]:
    from monai.transforms import RandGaussianNoise

    from modan_monai.utils import RandomStates

    torch.manual_seed(100 + rank)
    np.random.seed(100 + rank)
    random.seed(100 + rank)
    transform = RandGaussianNoise(prob=1.0).set_random_state(seed=10 + rank)
    states = RandomStates(dataset=transform)

    def draws() -> list[float]:
        return [*torch.rand(2).tolist(), float(np.random.rand()), random.random(), float(transform.R.rand())]

    saved = states.state_dict()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    first = draws()
    draws()  # move every generator on
    buffer.seek(0)
    states.load_state_dict(torch.load(buffer, weights_only=True))
    return {"saved": saved, "first": first, "restored": draws()}


def _two_rank_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:

        def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
            torch.distributed.all_reduce(t)
            return t / world_size

        half = BATCH // world_size
        rows = slice(rank * half, (rank + 1) * half)
        results: dict[str, Any] = {
            "bn": {m: _run_batchnorm(GlobalBatchNorm(CHANNELS, momentum=m), rows, all_reduce_mean) for m in MOMENTA},
            "random_states": _random_states_on_rank(rank),
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Both ranks' results, from one start of two gloo processes for the whole module."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out_dir = tmp_path_factory.mktemp("two_ranks")
    # fork where there is one: the children inherit the imports (spawn re-imports torch, MONAI and the package in
    # each child); they run one thread each, as DataLoader workers do
    method = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else "spawn"
    torch.multiprocessing.start_processes(
        _two_rank_worker, args=(WORLD_SIZE, _free_port(), str(out_dir)), nprocs=WORLD_SIZE, start_method=method
    )
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5, err_msg=what)


@pytest.mark.parametrize("momentum", MOMENTA)
def test_two_ranks_equal_one_batchnorm_over_the_global_batch(two_rank_results, momentum: float | None) -> None:
    ref = _run_batchnorm(nn.BatchNorm2d(CHANNELS, momentum=momentum), slice(None), lambda t: t)
    half = BATCH // WORLD_SIZE
    for rank, results in enumerate(two_rank_results):
        got = results["bn"][momentum]
        rows = slice(rank * half, (rank + 1) * half)
        for step in range(STEPS):
            _close(got["out"][step], ref["out"][step][rows], f"rank {rank} step {step} output")
            # rank loss = mean over its half: its input gradient is world_size x the global-mean one
            _close(got["x_grad"][step], WORLD_SIZE * ref["x_grad"][step][rows], f"rank {rank} step {step} x grad")
            _close(got["weight_grad"][step], ref["weight_grad"][step], f"rank {rank} step {step} weight grad")
            _close(got["bias_grad"][step], ref["bias_grad"][step], f"rank {rank} step {step} bias grad")
        _close(got["running_mean"], ref["running_mean"], f"rank {rank} running_mean")
        _close(got["running_var"], ref["running_var"], f"rank {rank} running_var")
        assert got["num_batches_tracked"] == ref["num_batches_tracked"] == STEPS
        _close(got["eval"], ref["eval"][rows], f"rank {rank} eval output")


def _flat_state(state: Any) -> list[Any]:
    """A nested state as a flat list of plain values (tensors as lists), for comparisons."""
    if isinstance(state, dict):
        return [item for key in sorted(state) for item in (key, *_flat_state(state[key]))]
    if isinstance(state, (list, tuple)):
        return [item for value in state for item in _flat_state(value)]
    if isinstance(state, (torch.Tensor, np.ndarray)):
        return [np.asarray(state).tolist()]
    return [state]


def test_random_states_gather_every_rank_and_restore_each_ranks_own(two_rank_results) -> None:
    saved = [r["random_states"]["saved"] for r in two_rank_results]
    for rank_saved in saved:
        assert len(rank_saved["ranks"]) == WORLD_SIZE
        # every rank gathers the same list; the top-level entries are rank 0's
        assert _flat_state(rank_saved["ranks"]) == _flat_state(saved[0]["ranks"])
        assert _flat_state({k: rank_saved[k] for k in ("global", "objects")}) == _flat_state(rank_saved["ranks"][0])
    ranks = saved[0]["ranks"]
    assert _flat_state(ranks[0]["global"]) != _flat_state(ranks[1]["global"])
    assert _flat_state(ranks[0]["objects"]) != _flat_state(ranks[1]["objects"])
    assert list(ranks[0]["objects"]) == list(ranks[1]["objects"])
    first = [r["random_states"]["first"] for r in two_rank_results]
    assert all(a != b for a, b in zip(first[0], first[1]))  # differently seeded ranks draw differently
    for results in two_rank_results:
        assert results["random_states"]["restored"] == results["random_states"]["first"]
