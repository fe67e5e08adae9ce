"""Segmentation data: structure masks (validation, merging), transforms, few-shot subsets, Dice tables."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modan_monai.data import manifest_to_datalist, read_manifest
from modan_monai.data.demo_segmentation import DEMO_SEGMENTATION_STRUCTURES, demo_segmentation_manifest
from modan_monai.data.segmentation import (
    LoadStructureMasksd,
    normalise_structures,
    segmentation_transforms,
    select_training_subset,
)
from modan_monai.evaluation.segmentation import dice_per_image, write_dice_csv
from modan_monai.transforms import LoadManifestImaged


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    manifest = demo_segmentation_manifest(tmp_path_factory.mktemp("seg"), size=32, n_images=10)
    return manifest_to_datalist(read_manifest(manifest))


def _loaded(row: dict) -> dict:
    return LoadManifestImaged(keys="image")(row)


def test_demo_manifest_layout(demo: list[dict]) -> None:
    assert len(demo) == 10 and {d["split"] for d in demo} == {"train", "val", "test"}
    for structure in DEMO_SEGMENTATION_STRUCTURES:
        assert all(Path(d[f"mask_{structure}"]).name == Path(d["image"]).name for d in demo)
    again = demo_segmentation_manifest(Path(demo[0]["manifest"]).parent, size=32, n_images=10)
    assert again == demo[0]["manifest"]


def test_masks_are_stacked_and_merged(demo: list[dict]) -> None:
    row = _loaded(demo[0])
    separate = LoadStructureMasksd(["heart", "left_lung", "right_lung"])(row)["label"]
    assert separate.shape == (3, 32, 32) and set(torch.unique(separate).tolist()) <= {0.0, 1.0}
    expected = np.array(Image.open(demo[0]["mask_heart"])) > 0
    np.testing.assert_array_equal(separate[0].numpy(), expected.T)  # MONAI (x, y) order, as the image
    np.testing.assert_allclose(separate.affine.numpy(), row["image"].affine.numpy())
    merged = LoadStructureMasksd({"lungs": ["left_lung", "right_lung"], "heart": "heart"})(row)["label"]
    torch.testing.assert_close(merged[0], torch.maximum(separate[1], separate[2]))
    torch.testing.assert_close(merged[1], separate[0])


def test_transforms_resize_image_and_masks(demo: list[dict]) -> None:
    out = segmentation_transforms(["heart", "left_lung"], image_size=16, augment=True)(demo[0])
    assert out["image"].shape == (1, 16, 16) and out["label"].shape == (2, 16, 16)
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("bad", ["size", "values"])
def test_bad_mask_names_image_and_mask(demo: list[dict], tmp_path: Path, bad: str) -> None:
    mask = tmp_path / f"{bad}.png"
    if bad == "size":
        Image.fromarray(np.zeros((20, 32), np.uint8)).save(mask)  # 20 rows, 32 columns
        match = r"has size 32x20 \(width x height\) but image .* has size 32x32 \(width x height\)"
    else:
        values = np.zeros((32, 32), np.uint8)
        values[:4] = 2
        Image.fromarray(values).save(mask)
        match = r"has values \[0\.0, 2\.0\], not the declared labels \{0, 1\} or \{0, 255\}"
    row = _loaded({**demo[0], "mask_heart": str(mask)})
    with pytest.raises(ValueError, match=match) as err:
        LoadStructureMasksd(["heart"])(row)
    assert str(mask) in str(err.value) and demo[0]["image"] in str(err.value)


def test_non_finite_mask_names_row_and_mask(demo: list[dict], tmp_path: Path) -> None:
    mask = tmp_path / "nan.tiff"
    values = np.zeros((32, 32), np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values).save(mask)
    row = _loaded({**demo[0], "mask_heart": str(mask)})
    with pytest.raises(ValueError, match=r"row 0: .*nan\.tiff: image has 1 non-finite pixel value"):
        LoadStructureMasksd(["heart"])(row)


def test_transforms_equal_the_chain_before_the_preset(demo: list[dict]) -> None:
    """segmentation_transforms on top of load_preprocess_transforms gives what its old hand-written chain gave."""
    from monai.transforms import Compose, EnsureTyped, Resized, SelectItemsd

    from modan_monai.transforms import NormalizeByModalityd

    keys = ["image", "label"]
    old = Compose([
        LoadManifestImaged(keys="image"),
        LoadStructureMasksd(["heart", "left_lung"], image_key="image", label_key="label"),
        NormalizeByModalityd(keys="image", vocabulary=None, ct_window=(-1000.0, 1000.0)),
        Resized(keys=keys, spatial_size=(16, 16), mode=["area", "nearest"]),
        EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
        SelectItemsd(keys=[*keys, "filename"], allow_missing_keys=True),
    ])
    new = segmentation_transforms(["heart", "left_lung"], image_size=16, keep_keys=["filename"])
    for row in demo[:4]:
        a, b = old(row), new(row)
        assert a.keys() == b.keys()
        for key in keys:
            assert torch.equal(a[key], b[key])


def test_missing_mask_column_is_named(demo: list[dict]) -> None:
    with pytest.raises(ValueError, match=r"column 'mask_clavicle' is missing or empty"):
        LoadStructureMasksd(["clavicle"])(_loaded(demo[0]))
    with pytest.raises(ValueError, match="repeated"):
        normalise_structures(["heart", "heart"])


def _rows(n_cases: int, per_case: int = 1) -> list[dict]:
    return [{"case_id": f"case{c:02d}", "image": f"c{c}_{i}.png"} for c in range(n_cases) for i in range(per_case)]


@pytest.mark.parametrize("n", [3, 6, 12, 24])
def test_few_shot_subsets_are_reproducible(n: int) -> None:
    rows = _rows(30)
    first = select_training_subset(rows, n=n, seed=7)
    assert first == select_training_subset(rows, n=n, seed=7)
    assert first == select_training_subset(list(reversed(rows)), n=n, seed=7)[::-1]  # order does not matter
    assert len(first) == n
    assert first != select_training_subset(rows, n=n, seed=8) or n == 30


def test_few_shot_subsets_are_nested_and_keep_cases_together() -> None:
    rows = _rows(30, per_case=2)
    sets = [{d["case_id"] for d in select_training_subset(rows, n=n, seed=3)} for n in (3, 6, 12, 24)]
    assert all(a < b for a, b in zip(sets, sets[1:]))
    picked = select_training_subset(rows, n=3, seed=3)
    assert len(picked) == 6 and all(sum(d["case_id"] == c for d in picked) == 2 for c in sets[0])
    assert len(select_training_subset(rows, fraction=0.1, seed=3)) == 6
    assert select_training_subset(rows) == rows


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n": 31}, "exceeds the 30 training cases"), ({"n": 0}, "positive integer"),
     ({"fraction": 1.5}, r"in \(0, 1\]"), ({"n": 3, "fraction": 0.5}, "not both")],
)
def test_subset_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select_training_subset(_rows(30), **kwargs)


def test_dice_per_image_and_csv(tmp_path: Path) -> None:
    pred = torch.zeros(2, 2, 4, 4)
    label = torch.zeros(2, 2, 4, 4)
    pred[0, 0, :2] = 1
    label[0, 0, :1] = 1  # |P| = 8, |G| = 4, overlap 4 -> 2*4/12
    pred[1, 1] = label[1, 1] = 1
    label[0, 1, 0, 0] = 1  # missed entirely -> 0
    dice = dice_per_image(pred, label)
    reference = torch.tensor([[8 / 12, 0.0], [float("nan"), 1.0]])
    torch.testing.assert_close(dice, reference, equal_nan=True)
    path = write_dice_csv(tmp_path / "d.csv", ["a.png", "b.png"], dice, ["heart", "lung"])
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["filename", "heart", "lung", "mean"]
    assert rows[2][0] == "b.png" and rows[2][1] == "nan" and float(rows[2][3]) == 1.0


def test_real_jsrt_masks_load_at_full_size(shared_datasets: Path) -> None:
    from data_manifests import jsrt

    root = shared_datasets / "jsrt_scr"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    frame = jsrt.build(root).head(1)
    frame["row"], frame["manifest"] = 0, "jsrt"
    row = manifest_to_datalist(frame)[0]
    spec = {"heart": ["heart"], "lungs": ["left_lung", "right_lung"], "clavicles": ["left_clavicle", "right_clavicle"]}
    label = LoadStructureMasksd(spec)(_loaded(row))["label"]
    assert label.shape == (3, 1024, 1024)
    lungs, clavicles = label[1].bool(), label[2].bool()
    assert lungs.any() and clavicles.any() and (lungs & clavicles).any()  # SCR structures overlap: multi-label
