"""RandomStates, preserved_rng_state and RunSettings."""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, MapTransform, OneOf, RandFlipd, RandGaussianNoised, RandomizableTransform

from modan_monai.transforms import MultiViewd, RandResizedCropd, SimCLRViewsd
from modan_monai.utils import RandomStates, RunSettings, preserved_rng_state, random_state_objects


class DrawsFromOwnGenerators(RandomizableTransform, MapTransform):
    """A transform with a numpy Generator and a torch Generator besides its ``R``."""

    def __init__(self) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, "x")
        self.rng = np.random.default_rng(5)
        self.gen = torch.Generator().manual_seed(7)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        d["x"] = d["x"] + float(self.rng.random()) + torch.rand(1, generator=self.gen) + float(self.R.rand())
        return d


def make_loader(**kwargs: Any) -> DataLoader:
    transform = Compose([
        RandFlipd("x", prob=0.5),
        OneOf([RandGaussianNoised("x", prob=1.0), RandGaussianNoised("x", prob=1.0, std=0.5)]),
        MultiViewd("x", RandResizedCropd("x", 4), views_key="v"),
        SimCLRViewsd("x", spatial_size=4, views_key="w"),
        DrawsFromOwnGenerators(),
    ])
    data = [{"x": torch.full((1, 6, 6), float(i))} for i in range(6)]
    return DataLoader(Dataset(data, transform), batch_size=2, shuffle=True, **kwargs)


def epoch(loader: DataLoader) -> list[torch.Tensor]:
    return [batch[k].clone() for batch in loader for k in ("x", "v", "w")] + [torch.tensor(np.random.rand()), torch.tensor(random.random())]


def test_state_dict_round_trip_through_weights_only_load() -> None:
    torch.manual_seed(0)
    loader = make_loader(generator=torch.Generator().manual_seed(3))
    states = RandomStates(dataloader=loader)
    buffer = io.BytesIO()
    torch.save(states.state_dict(), buffer)
    first = epoch(loader)
    buffer.seek(0)
    states.load_state_dict(torch.load(buffer, weights_only=True))
    second = epoch(loader)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, epoch(loader)))  # without the restore: other draws
    paths = [path for path, _ in states.objects()]
    assert "dataloader.generator" in paths
    assert any(p.endswith(".rng") for p in paths) and any(p.endswith(".gen") for p in paths)
    # SimCLRViewsd's cropper shares its R: found once
    simclr = loader.dataset.transform.transforms[3]
    assert sum(obj is simclr.R for _, obj in states.objects()) == 1


def test_mismatched_transforms_and_persistent_workers_are_refused() -> None:
    saved = RandomStates(dataloader=make_loader()).state_dict()
    other = DataLoader(Dataset([{"x": torch.zeros(1, 6, 6)}], RandFlipd("x", prob=0.5)), batch_size=1)
    with pytest.raises(ValueError, match="do not match this run's transforms.*not saved .*saved but not found"):
        RandomStates(dataloader=other).load_state_dict(saved)
    with pytest.raises(ValueError, match="persistent_workers=False"):
        RandomStates(dataloader=make_loader(num_workers=1, persistent_workers=True))


def test_dataset_rows_and_caches_are_not_walked() -> None:
    class Holder(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.data = [{"rng": np.random.RandomState(0)}]  # rows: not a transform
            self.transform = RandFlipd("x", prob=0.5)

        def __len__(self) -> int:
            return 1

    paths = [p for p, _ in random_state_objects([("dataset", Holder())])]
    assert paths == ["dataset.transform.R"]


def test_preserved_rng_state_restores_everything_even_on_error() -> None:
    loader = make_loader()
    noise = loader.dataset.transform.transforms[1].transforms[0]
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(), noise.R.get_state()[1].copy())
    with pytest.raises(RuntimeError), preserved_rng_state(loader):
        epoch(loader)
        DataLoader(Dataset([0]), num_workers=0)  # resets the global torch generator to its initial seed
        raise RuntimeError("evaluation failed")
    after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate(), noise.R.get_state()[1])
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2] == after[2] and np.array_equal(before[3], after[3])


def test_run_settings() -> None:
    saved = RunSettings({"init": "scratch", "structures": ("heart",), "manifest": None}).state_dict()
    RunSettings({"init": "scratch", "structures": ["heart"], "manifest": None}).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"few_shot \(not set\) there, 3 here; structures \['heart'\] there, "):
        RunSettings({"init": "scratch", "structures": ["lungs"], "manifest": None, "few_shot": 3}).load_state_dict(saved)
    with pytest.raises(ValueError, match="run setting net is a Linear, not a plain value"):
        RunSettings({"net": torch.nn.Linear(1, 1)})


def test_run_settings_added_defaults_let_an_earlier_checkpoint_resume() -> None:
    earlier = RunSettings({"init": "scratch"}).state_dict()  # written before the `task` setting existed
    RunSettings({"init": "scratch", "task": "binary"}, added_defaults={"task": "binary"}).load_state_dict(earlier)
    with pytest.raises(ValueError, match="task 'binary' there, 'multiclass' here"):
        RunSettings({"init": "scratch", "task": "multiclass"}, added_defaults={"task": "binary"}).load_state_dict(earlier)
    with pytest.raises(ValueError, match=r"task \(not set\) there, 'binary' here"):
        RunSettings({"init": "scratch", "task": "binary"}).load_state_dict(earlier)
