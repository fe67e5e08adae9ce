"""``/train/classify``: the classify model fine-tuned on the classes annotators stored in the images' info.

A real server on 127.0.0.1 serving a random-weight 32 px classify model over six 32 px PNGs; one 1-epoch round.
Needs monailabel (see ``test_monailabel_server.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

if importlib.util.find_spec("monailabel") is None:
    if os.environ.get("MODAN_REQUIRE_MONAILABEL") == "1":
        raise ImportError("monailabel is not installed but MODAN_REQUIRE_MONAILABEL=1: run "
                          "python scripts/install_monailabel.py")
    pytest.skip("monailabel not installed (python scripts/install_monailabel.py)", allow_module_level=True)

import requests  # noqa: E402

from modan_monai.apps.monailabel.lib.bundle import ServingError, repository_bundle, write_initial_weights  # noqa: E402
from modan_monai.apps.monailabel.process import LocalServer  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("train_classify")
    studies = root / "studies"
    studies.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 60, (SIZE, SIZE), dtype=np.uint8)
        if i % 2:
            pixels[:, SIZE // 2:] += 150  # the "positive" images: a bright right half
        Image.fromarray(pixels).save(studies / f"img{i}.png")
    model = write_initial_weights(repository_bundle("classify"), root / "classify.pt", {"image_size": SIZE})
    conf = {"models": "classify", "classify_model": model, "classify_config": json.dumps({"image_size": SIZE})}
    with LocalServer(studies, conf, log_file=root / "server.log") as running:
        running.root, running.model = root, model
        yield running


def set_class(server: LocalServer, image: str, value) -> None:
    response = requests.put(f"{server.url}/datastore/image/info", params={"image": image},
                            data={"info": json.dumps({"class": value})}, timeout=30)
    assert response.status_code == 200, response.text


def train(server: LocalServer, **params) -> requests.Response:
    return requests.post(f"{server.url}/train/classify", params={"run_sync": "true"}, json=params, timeout=300)


def test_bad_classes_are_refused_naming_the_image_or_the_class(server: LocalServer) -> None:
    assert "classify" in requests.get(f"{server.url}/info/", timeout=30).json()["trainers"]
    response = train(server, epochs=1)  # nothing labelled yet
    assert response.status_code == 422
    assert "0 of 'negative', 0 of 'positive'" in response.json()["detail"]

    set_class(server, "img0", "negative")
    set_class(server, "img2", "negative")
    response = train(server, epochs=1)  # one class only
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "0 of 'positive'" in detail and "'negative'" not in detail.split("datastore has")[1].split("(")[0]

    set_class(server, "img1", "maybe")
    response = train(server, epochs=1)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "img1" in detail and "'maybe'" in detail and "['negative', 'positive']" in detail

    response = train(server, epochs="many")
    assert response.status_code == 422 and "model 'classify'" in response.json()["detail"]
    assert "epochs='many'" in response.json()["detail"]


def test_round_replaces_the_served_weights(server: LocalServer) -> None:
    for image, value in (("img0", "negative"), ("img2", "negative"), ("img1", "positive"), ("img3", "positive")):
        set_class(server, image, value)
    before = requests.post(f"{server.url}/infer/classify", params={"image": "img4", "output": "json"}, timeout=60)
    assert before.status_code == 200, before.text
    old_bytes = server.model.read_bytes()
    response = train(server, epochs=1, seed=3)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model"] == "classify" and result["best_epoch"] == 1 and 0.0 <= result["val_auc"] <= 1.0
    # one image of each class validates, the default batch_size 4 is clamped to the 2 training images
    assert result["train_images"] == 2 and result["val_images"] == 2 and result["batch_size"] == 2
    assert str(server.root) not in response.text
    assert server.model.read_bytes() != old_bytes
    manifest = pd.read_csv(next((server.root / "studies" / ".modan_monai" / "train_classify").glob(
        f"{result['round']}/manifest.csv")))
    assert sorted(manifest["case_id"]) == ["img0", "img1", "img2", "img3"]  # img4, img5 have no class
    assert manifest.groupby("split")["label"].apply(sorted).to_dict() == {"train": [0, 1], "val": [0, 1]}
    after = requests.post(f"{server.url}/infer/classify", params={"image": "img4", "output": "json"}, timeout=60)
    assert after.json()["model_mtime_ns"] == server.model.stat().st_mtime_ns != before.json()["model_mtime_ns"]
    assert set(after.json()["probabilities"]) == {"negative", "positive"}


def test_class_manifest_splits_each_class(tmp_path: Path) -> None:
    from modan_monai.apps.monailabel.lib.train_classify import write_class_manifest

    items = {f"i{k}": (str(tmp_path / f"i{k}.png"), name) for k, name in enumerate(["a"] * 4 + ["b"] * 2 + ["c"] * 3)}
    frame = pd.read_csv(write_class_manifest(items, ["a", "b", "c"], tmp_path / "r", task="multiclass",
                                             val_fraction=0.5, seed=1))
    assert frame.query("split == 'val'")["label"].value_counts().to_dict() == {"a": 2, "b": 1, "c": 2}
    assert frame.query("split == 'train'")["label"].value_counts().to_dict() == {"a": 2, "b": 1, "c": 1}
    binary = pd.read_csv(write_class_manifest({k: v for k, v in items.items() if v[1] != "c"}, ["a", "b"],
                                              tmp_path / "r2", task="binary"))
    assert sorted(binary["label"]) == [0, 0, 0, 0, 1, 1]
    with pytest.raises(ServingError, match=r"1 of 'b'"):
        write_class_manifest({k: v for k, v in items.items() if k != "i4"}, ["a", "b", "c"], tmp_path / "r3")
