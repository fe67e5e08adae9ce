"""User-given names never make a script write outside its output folder (``modan_monai.utils.safe_file_name``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modan_monai.data import make_demo_corpus
from modan_monai.evaluation.segmentation_grid import SegmentationRun
from modan_monai.utils import safe_file_name

HOSTILE = "../../x"


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_safe_file_name_is_one_plain_name() -> None:
    assert safe_file_name("modan_v2.1") == "modan_v2.1"
    names = [safe_file_name(n) for n in (HOSTILE, "/etc/x", "a\\b", "..", "", "a\x00b", "a" * 300, "x", "x/")]
    assert all("/" not in n and "\\" not in n and not n.startswith(".") and 0 < len(n) <= 120 for n in names)
    assert len(set(names)) == len(names)  # two names never share a file


def test_embed_script_keeps_a_hostile_encoder_name_inside_out(tmp_path: Path, load_script: Callable) -> None:
    manifest = make_demo_corpus(tmp_path / "demo", size=32, per_pair=4)
    out = tmp_path / "a" / "b" / "out"
    before = _tree(tmp_path)
    rc = load_script("embed").main(["--manifest", str(manifest), "--encoder", f"{HOSTILE}=scratch", "--out", str(out),
                                    "--image-size", "32"])
    assert rc == 0
    created = _tree(tmp_path) - before
    assert created and all(p == out or out in p.parents or p in out.parents for p in created), sorted(created)
    stem = safe_file_name(HOSTILE, fallback="encoder")
    assert np.load(out / f"{stem}_features.npy").shape[0] == 28 and (out / f"{stem}_umap.png").is_file()


def test_zero_shot_script_keeps_a_hostile_init_name_inside_out(tmp_path: Path, load_script: Callable) -> None:
    rng = np.random.default_rng(0)
    boxes = {"right_lung": (8, 6, 44, 26), "left_lung": (8, 38, 44, 58), "heart": (30, 26, 50, 44),
             "right_clavicle": (8, 10, 12, 30), "left_clavicle": (8, 34, 12, 54)}
    rows = []
    for i in range(3):
        path = tmp_path / f"case{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64)).astype(np.uint8)).save(path)
        row = {"path": str(path), "modality": "XR", "anatomy": "chest", "split": "test", "dataset": "s",
               "case_id": f"case{i}"}
        for name, (t, l, b, r) in boxes.items():
            mask = np.zeros((64, 64), np.uint8)
            mask[t + i:b, l:r - i] = 255
            Image.fromarray(mask).save(tmp_path / f"case{i}_{name}.png")
            row[f"mask_{name}"] = str(tmp_path / f"case{i}_{name}.png")
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "a" / "b" / "out"
    before = _tree(tmp_path)
    rc = load_script("zero_shot").main(["--manifest", str(tmp_path / "m.csv"), "--init", f"{HOSTILE}=scratch",
                                        "--analyses", "hierarchy", "--image-size", "16", "--load-size", "64",
                                        "--out", str(out)])
    assert rc == 0
    created = _tree(tmp_path) - before
    assert all(p == out or out in p.parents or p in out.parents for p in created), sorted(created)
    assert (out / f"hierarchy_{safe_file_name(HOSTILE, fallback='encoder')}.png").is_file()


@pytest.mark.parametrize("init", [HOSTILE, "/abs/olute", "a\\..\\b"])
def test_segmentation_run_folder_stays_one_level_under_out(tmp_path: Path, init: str) -> None:
    run = SegmentationRun(init, "scratch", "resnet18", 3, 0)
    folder = (tmp_path / run.name).resolve()
    assert folder.parent.parent == tmp_path.resolve() and folder.name == "n3_s0"
