"""The ``cache`` id (:func:`modan_monai.data.cached_dataset`): memory, disk (PersistentDataset) and none.

The disk cache decodes nothing on a second run over the same rows and settings (reader calls counted), builds an
entry again for an edited image or other transform settings (never stale data), and refuses a folder it cannot
write, naming the config id; the pretraining bundle trains with ``--cache disk``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, Dataset
from monai.transforms import Compose
from PIL import Image

from modan_monai.data import cached_dataset, ensure_demo_corpus
from modan_monai.data import readers
from modan_monai.transforms import SimCLRViewsd, load_preprocess_transforms

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.fixture
def rows(tmp_path: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(4):
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(path)
        out.append({"image": str(path), "modality": "XR", "anatomy": "chest", "source": str(path)})
    return out


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths the PNG reader decodes, in order."""
    calls: list[str] = []
    original = readers.PILImageReader.read

    def counting(self, data, **kwargs):
        calls.append(str(data))
        return original(self, data, **kwargs)

    monkeypatch.setattr(readers.PILImageReader, "read", counting)
    return calls


def pipeline(size: int = 16) -> Compose:
    return Compose(load_preprocess_transforms(keys="image", image_size=size) + [
        SimCLRViewsd(keys="image", spatial_size=[size, size], num_views=2)
    ])


def test_second_disk_run_decodes_nothing(tmp_path: Path, rows: list[dict], reads: list[str]) -> None:
    first = cached_dataset(rows, pipeline(), cache="disk", cache_dir=tmp_path / "cache")
    a = [first[i] for i in range(len(rows))]
    assert len(reads) == len(rows)
    second = cached_dataset(rows, pipeline(), cache="disk", cache_dir=tmp_path / "cache")
    b = [second[i] for i in range(len(rows))]
    assert len(reads) == len(rows)  # nothing decoded again
    for x, y in zip(a, b):
        assert type(x["views"]) is type(y["views"]) and x["views"].shape == y["views"].shape == (2, 1, 16, 16)
    settings = list((tmp_path / "cache").glob("*/settings.json"))
    assert len(settings) == 1 and "LoadManifestImaged" in settings[0].read_text()
    # the cached part (before the random views) is identical
    plain = Compose(load_preprocess_transforms(keys="image", image_size=16))
    cached = cached_dataset(rows, plain, cache="disk", cache_dir=tmp_path / "cache")
    assert torch.equal(torch.as_tensor(cached[0]["image"]), torch.as_tensor(plain(dict(rows[0]))["image"]))


def test_edited_image_or_other_settings_rebuild(tmp_path: Path, rows: list[dict], reads: list[str]) -> None:
    dataset = cached_dataset(rows, pipeline(), cache="disk", cache_dir=tmp_path / "cache")
    _ = [dataset[i] for i in range(len(rows))]
    reads.clear()
    Image.fromarray(np.zeros((40, 48), dtype=np.uint8)).save(rows[0]["image"])
    os.utime(rows[0]["image"], ns=(1, 1))  # a new modification time even on a coarse clock
    again = cached_dataset(rows, pipeline(), cache="disk", cache_dir=tmp_path / "cache")
    image = again[0]["views"]
    assert reads == [rows[0]["image"]] and float(torch.as_tensor(image).abs().max()) == 0.0
    _ = [again[i] for i in range(1, len(rows))]
    assert reads == [rows[0]["image"]]
    other = cached_dataset(rows, pipeline(size=24), cache="disk", cache_dir=tmp_path / "cache")
    assert other[1]["views"].shape[-1] == 24 and len(reads) == 2
    assert len(list((tmp_path / "cache").glob("*/settings.json"))) == 2


def test_modes_and_bad_settings(tmp_path: Path, rows: list[dict]) -> None:
    assert isinstance(cached_dataset(rows, pipeline(), cache="memory", progress=False), CacheDataset)
    none = cached_dataset(rows, pipeline(), cache="none")
    assert type(none) is Dataset and none[0]["views"].shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="config id 'cache' must be one of"):
        cached_dataset(rows, pipeline(), cache="ram")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="config id 'cache_dir' is .*a_file/cache.* cannot be written"):
        cached_dataset(rows, pipeline(), cache="disk", cache_dir=blocker / "cache")


def test_pretrain_bundle_trains_with_disk_cache(tmp_path: Path) -> None:
    manifest = ensure_demo_corpus(tmp_path / "demo", size=32, per_pair=4)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--logging_file",
           "configs/logging.conf", "--output_dir", str(tmp_path / "out"), "--dataset_dir", str(tmp_path / "demo"),
           "--manifest", manifest, "--epochs", "1", "--image_size", "32", "--batch_size", "8", "--knn_interval", "0",
           "--cache", "disk", "--cache_dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, cwd=BUNDLES / "pretrain", capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    entries = list((tmp_path / "cache").glob("*/*.pt"))
    assert len(entries) > 8 and (tmp_path / "out" / "encoder.pt").is_file()
