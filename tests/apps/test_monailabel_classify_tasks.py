"""The MONAI Label classify task on multi-class and multi-label models trained by the classify bundle (issue 21).

Tiny models (1 epoch, 32 px, synthetic images) trained through the bundle (``run_classify_bundle``) are served
without a ``classify_config`` override: the multi-label one by a real server on 127.0.0.1, the multi-class one and
a model saved without ``label_type`` by the app in process. Needs monailabel as ``test_monailabel_server.py`` does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

if importlib.util.find_spec("monailabel") is None:
    if os.environ.get("MODAN_REQUIRE_MONAILABEL") == "1":
        raise ImportError("monailabel is not installed but MODAN_REQUIRE_MONAILABEL=1: run "
                          "python scripts/install_monailabel.py")
    pytest.skip("monailabel not installed (python scripts/install_monailabel.py)", allow_module_level=True)

import requests  # noqa: E402 (installed with monailabel's dependencies)
from test_monailabel_server import infer  # noqa: E402 (this folder's server helpers)

from modan_monai.apps.monailabel.lib.bundle import repository_bundle  # noqa: E402
from modan_monai.apps.monailabel.process import LocalServer  # noqa: E402
from modan_monai.data import load_datalist  # noqa: E402
from modan_monai.evaluation.training import predict_proba, run_classify_bundle, task_labels  # noqa: E402
from modan_monai.networks import attach_model_settings, read_model_settings  # noqa: E402

MULTICLASS = {"benign": "left", "malignant": "right", "normal": "centre"}
MULTILABEL = {"Mass": "left", "Edema": "right", "Edema|Mass": "left right", "No Finding": ""}
IMAGES = 4  # served per model: img0..img3
METADATA = repository_bundle("classify") / "configs" / "metadata.json"


def _train(root: Path, rows_of: Callable[..., list[dict]], task: str, patterns: dict[str, str]) -> dict:
    """Train a ``task`` model on 5 images per class (4 train, 1 val; one batch); its model.pt, a studies folder of
    4 of the images (``img<k>.png``) and the probabilities the model gives them."""
    rows = rows_of(root, patterns, per_class=5)
    for row in rows:
        row["finding"] = row["case_id"].rsplit("_", 1)[0].replace("+", "|")
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    column = "Finding Labels" if task == "multilabel" else "finding"
    if task == "multilabel":
        pd.read_csv(manifest).rename(columns={"finding": column}).to_csv(manifest, index=False)
    labelled = task_labels(load_datalist(manifest), task, column)
    run = run_classify_bundle([d for d in labelled.datalist if d["split"] == "train"],
                              [d for d in labelled.datalist if d["split"] == "val"], root / "models", task=task,
                              class_names=labelled.class_names, epochs=1, batch_size=16, image_size=32,
                              save_models=True, overrides={"manifest": str(manifest)})
    studies = root / "studies"
    studies.mkdir()
    served = labelled.datalist[::len(labelled.datalist) // IMAGES][:IMAGES]
    for k, row in enumerate(served):
        shutil.copy(row["image"], studies / f"img{k}.png")
    # what the served model must answer: predict_proba's own activation on the trained network
    expected = predict_proba(run.network, [{"image": str(studies / f"img{k}.png")} for k in range(IMAGES)],
                             image_size=32, task=task)
    return {"model": root / "models" / "model.pt", "studies": studies, "class_names": labelled.class_names,
            "expected": expected}


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory: pytest.TempPathFactory, classify_task_rows: Callable) -> dict:
    return _train(tmp_path_factory.mktemp("multiclass"), classify_task_rows, "multiclass", MULTICLASS)


@pytest.fixture(scope="module")
def multilabel_server(tmp_path_factory: pytest.TempPathFactory, classify_task_rows: Callable):
    root = tmp_path_factory.mktemp("multilabel")
    trained = _train(root, classify_task_rows, "multilabel", MULTILABEL)
    with LocalServer(trained["studies"], {"models": "classify", "classify_model": trained["model"]},
                     log_file=root / "server.log") as running:
        running.trained = trained
        yield running


def in_process_app(tmp_path: Path, model: Path, studies: Path, monkeypatch: pytest.MonkeyPatch):
    """The app as the server builds it (``--conf models classify --conf classify_model <model>``), in process."""
    from modan_monai.apps.monailabel.main import ModanMonaiApp, settings  # imports monailabel (after compat.apply)

    monkeypatch.setattr(settings, "MONAI_LABEL_DATASTORE_AUTO_RELOAD", False)  # no watcher thread outliving the test
    return ModanMonaiApp(str(tmp_path / "app"), str(studies), {"models": "classify", "classify_model": str(model)})


def test_multilabel_model_info_and_probabilities_per_label(multilabel_server: LocalServer) -> None:
    trained = multilabel_server.trained
    names = trained["class_names"]
    assert names == ["Edema", "Mass"]
    info = requests.get(multilabel_server.url + "/info/", timeout=30).json()["models"]["classify"]
    assert info["type"] == "classification" and info["labels"] == {"Edema": 0, "Mass": 1}
    assert info["label_type"] == "multilabel" and info["config"]["threshold"] == 0.5
    meta = json.loads(METADATA.read_text())["label_types"]
    assert info["output"] == meta["multilabel"] and meta["multilabel"]["activation"] == "sigmoid"

    for k in range(IMAGES):
        response = infer(multilabel_server, "classify", "json", image=f"img{k}")
        assert response.status_code == 200, response.text
        result = response.json()
        probs = result["probabilities"]
        assert list(probs) == names and result["label_type"] == "multilabel"
        np.testing.assert_allclose([probs[n] for n in names], trained["expected"][k], rtol=1e-4, atol=1e-5)
        assert "label" not in result and "score" not in result  # no single class: labels are not exclusive
        assert result["threshold"] == 0.5 and result["labels"] == [n for n in names if probs[n] >= 0.5]
        assert [p["score"] for p in result["prediction"]] == [probs[n] for n in names]
    for threshold in (0, 0.25, "0.75", 1):  # on the last image
        response = infer(multilabel_server, "classify", "json", {"threshold": threshold}, image=f"img{IMAGES - 1}")
        assert response.status_code == 200, response.text
        assert response.json()["threshold"] == float(threshold)
        assert response.json()["labels"] == [n for n in names if probs[n] >= float(threshold)]
    assert requests.get(multilabel_server.url + "/info/", timeout=30).status_code == 200


@pytest.mark.parametrize("threshold", [1.5, -0.1, "high", True, None, [0.5]])
def test_multilabel_threshold_is_a_number_in_0_1(multilabel_server: LocalServer, threshold: object) -> None:
    response = infer(multilabel_server, "classify", "json", {"threshold": threshold}, image="img0")
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "parameter threshold=" in detail and "is not a number in [0, 1]" in detail and "'classify'" in detail
    assert "Traceback" not in response.text and str(multilabel_server.trained["studies"]) not in response.text


def test_multiclass_model_is_served_with_its_class_names(
    tmp_path: Path, multiclass: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3-class model trained with task multiclass: served with its 3 names and a softmax, no classify_config."""
    from fastapi import HTTPException

    app = in_process_app(tmp_path, multiclass["model"], multiclass["studies"], monkeypatch)
    info = app.info()["models"]["classify"]
    assert info["labels"] == {"benign": 0, "malignant": 1, "normal": 2} and info["label_type"] == "multiclass"
    assert info["output"]["activation"] == "softmax" and "threshold" not in info["config"]
    for k in range(IMAGES):
        result = app.infer({"model": "classify", "image": f"img{k}"})["params"]
        probs = result["probabilities"]
        assert list(probs) == ["benign", "malignant", "normal"] and result["label_type"] == "multiclass"
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(list(probs.values()), multiclass["expected"][k], rtol=1e-4, atol=1e-5)
        assert result["label"] == max(probs, key=probs.get) and result["score"] == pytest.approx(max(probs.values()))
    with pytest.raises(HTTPException) as err:
        app.infer({"model": "classify", "image": "img0", "threshold": 0.5})
    assert err.value.status_code == 422
    assert "parameter threshold=0.5 applies to multi-label models; this one is multiclass" in err.value.detail


@pytest.mark.parametrize("class_names, label_type", [(None, "multiclass"), (["benign", "malignant"], "binary")])
def test_model_without_label_type_is_softmax_as_before(
    tmp_path: Path, multiclass: dict, class_names: list[str] | None, label_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings without ``label_type`` (a model saved before the task id): 2 class names binary, else multiclass;
    both a softmax whose arg max is the label."""
    state = torch.load(multiclass["model"], weights_only=True)
    settings = {k: v for k, v in read_model_settings(multiclass["model"]).items() if k != "label_type"}
    if class_names is not None:  # a 2-class head: the first two classes' rows of the trained one
        state = {k: v[:2] if k.startswith("classifier.") else v for k, v in state.items()}
        settings["class_names"] = class_names
    old = tmp_path / "old.pt"
    torch.save(attach_model_settings(state, settings), old)
    assert "label_type" not in read_model_settings(old)

    app = in_process_app(tmp_path, old, multiclass["studies"], monkeypatch)
    info = app.info()["models"]["classify"]
    names = class_names or multiclass["class_names"]
    assert info["label_type"] == label_type and info["labels"] == {n: i for i, n in enumerate(names)}
    result = app.infer({"model": "classify", "image": "img1"})["params"]
    probs = result["probabilities"]
    assert list(probs) == names and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert result["label_type"] == label_type and result["label"] == max(probs, key=probs.get)
