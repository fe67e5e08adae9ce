"""Epistemic active learning (``/scoring/epistemic``, the ``epistemic`` strategy) and batch inference over the
datastore, against a real server on 127.0.0.1 serving random-weight 32 px segment and classify models; and the
passes themselves (test-time augmentation flipped back, Monte-Carlo dropout) without a server.

Needs monailabel (see ``test_monailabel_server.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

if importlib.util.find_spec("monailabel") is None:
    if os.environ.get("MODAN_REQUIRE_MONAILABEL") == "1":
        raise ImportError("monailabel is not installed but MODAN_REQUIRE_MONAILABEL=1: run "
                          "python scripts/install_monailabel.py")
    pytest.skip("monailabel not installed (python scripts/install_monailabel.py)", allow_module_level=True)

import requests  # noqa: E402

from modan_monai.apps.monailabel.lib.bundle import repository_bundle, write_initial_weights  # noqa: E402
from modan_monai.apps.monailabel.process import LocalServer  # noqa: E402

SIZE = (40, 36)  # PIL (width, height)
IMAGES = [f"img{i}" for i in range(4)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("active_learning")
    studies = root / "studies"
    studies.mkdir()
    rng = np.random.default_rng(0)
    for i, name in enumerate(IMAGES):
        pixels = rng.integers(0, 40 + 60 * i, SIZE[::-1]).astype(np.uint8)  # from flat to noisy
        Image.fromarray(pixels).save(studies / f"{name}.png")
    conf = {}
    for name in ("segment", "classify"):
        conf[f"{name}_model"] = write_initial_weights(repository_bundle(name), root / f"{name}.pt", {"image_size": 32})
        conf[f"{name}_config"] = json.dumps({"image_size": 32})
    with LocalServer(studies, conf, log_file=root / "server.log") as running:
        running.root, running.studies = root, studies
        yield running


def post(server: LocalServer, path: str, body: dict | None = None) -> requests.Response:
    return requests.post(f"{server.url}{path}", params={"run_sync": "true"}, json=body or {}, timeout=300)


def info(server: LocalServer, image: str) -> dict:
    response = requests.get(f"{server.url}/datastore/image/info", params={"image": image}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_scoring_fills_the_epistemic_strategy(server: LocalServer) -> None:
    described = requests.get(f"{server.url}/info/", timeout=30).json()
    assert "epistemic" in described["strategies"] and "epistemic" in described["scoring"]
    assert {"random", "first"} <= set(described["strategies"])

    response = requests.post(f"{server.url}/activelearning/epistemic", json={"model": "segment"}, timeout=60)
    assert response.status_code == 409 and "/scoring/epistemic" in response.json()["detail"]

    response = post(server, "/scoring/epistemic", {"model": "segment", "simulation_size": 3})
    assert response.status_code == 200, response.text
    summary = response.json()["segment"]
    assert summary["method"] == "tta"  # the served networks have no dropout
    assert summary["executed"] == summary["total"] == len(IMAGES) and summary["failed"] == {}
    scores = {image: info(server, image)["epistemic_segment"] for image in IMAGES}
    assert all(s >= 0 for s in scores.values()) and len(set(scores.values())) == len(IMAGES)
    assert {info(server, image)["epistemic_segment_method"] for image in IMAGES} == {"tta"}

    again = post(server, "/scoring/epistemic", {"model": "segment", "simulation_size": 3}).json()["segment"]
    assert again["skipped"] == len(IMAGES) and again["executed"] == 0  # same weights: nothing rescored

    response = requests.post(f"{server.url}/activelearning/epistemic", json={"model": "segment"}, timeout=60)
    assert response.status_code == 200, response.text
    best = max(scores, key=scores.get)
    assert response.json()["id"] == best and response.json()["epistemic_segment"] == pytest.approx(scores[best])

    # once labelled, the image leaves the candidates: the next highest score comes next
    label = server.root / "label.png"
    Image.fromarray(np.zeros(SIZE[::-1], np.uint8)).save(label)
    with open(label, "rb") as f:
        saved = requests.put(f"{server.url}/datastore/label", params={"image": best, "tag": "final"},
                             files={"label": ("label.png", f)}, timeout=60)
    assert saved.status_code == 200, saved.text
    response = requests.post(f"{server.url}/activelearning/epistemic", json={"model": "segment"}, timeout=60)
    rest = {k: v for k, v in scores.items() if k != best}
    assert response.json()["id"] == max(rest, key=rest.get)


def test_classify_scores_the_images_without_a_class(server: LocalServer) -> None:
    response = requests.put(f"{server.url}/datastore/image/info", params={"image": "img0"},
                            data={"info": json.dumps({"class": "positive"})}, timeout=30)
    assert response.status_code == 200, response.text
    response = post(server, "/scoring/epistemic", {"model": "classify", "simulation_size": 4, "max_samples": 2})
    assert response.status_code == 200, response.text
    summary = response.json()["classify"]
    assert summary["total"] == len(IMAGES) - 1 and summary["executed"] == 2 and summary["skipped"] == 1
    scored = [image for image in IMAGES if "epistemic_classify" in info(server, image)]
    assert scored == ["img1", "img2"]  # img0 has a class; max_samples 2 of img1, img2, img3
    response = requests.post(f"{server.url}/activelearning/epistemic", json={"model": "classify"}, timeout=60)
    assert response.json()["id"] in scored

    # MONAI Label's background task (a process of its own): the server sees the scores it stores
    response = requests.post(f"{server.url}/scoring/epistemic", json={"model": "classify"}, timeout=60)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = requests.get(f"{server.url}/scoring/", timeout=30).json()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(1.0)
    assert status["status"] == "DONE", status
    deadline = time.monotonic() + 30
    while "epistemic_classify" not in info(server, "img3") and time.monotonic() < deadline:
        time.sleep(0.5)  # the datastore reloads its file when it changes
    assert info(server, "img3")["epistemic_classify"] >= 0
    assert "epistemic_classify" not in info(server, "img0")


@pytest.mark.parametrize(
    "body, status, named",
    [
        ({"simulation_size": 1000}, 422, "simulation_size"),
        ({"simulation_size": "5; ls"}, 422, "simulation_size"),
        ({"simulation_size": 1}, 422, "simulation_size"),
        ({"simulation_size": "inf"}, 422, "simulation_size"),
        ({"max_samples": -1}, 422, "max_samples"),
        ({"model": "nosuch"}, 422, "model"),
        ({"model": "../segment"}, 400, "model"),
    ],
)
def test_hostile_scoring_requests_are_named(server: LocalServer, body: dict, status: int, named: str) -> None:
    response = post(server, "/scoring/epistemic", body)
    assert response.status_code == status and f"parameter {named}" in response.json()["detail"]
    response = post(server, "/scoring/nosuch")
    assert response.status_code == 404 and "nosuch" in response.json()["detail"]


def test_batch_inference_over_the_datastore(server: LocalServer) -> None:
    response = post(server, "/batch/infer/classify", {"images": "all", "label_tag": "batch"})
    assert response.status_code == 200, response.text
    results = response.json()
    assert sorted(results) == IMAGES
    for image in IMAGES:
        stored = info(server, image)["classify_prediction"]
        probabilities = results[image]["params"]["probabilities"]
        assert stored["probabilities"] == pytest.approx(probabilities) and stored["tag"] == "batch"
        assert stored["label"] == max(probabilities, key=probabilities.get)
    response = post(server, "/batch/infer/segment", {"images": "unlabeled", "label_tag": "batch"})
    assert response.status_code == 200, response.text
    unlabelled = requests.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=30).json()
    for image in response.json():
        mask = Image.open(server.studies / "labels" / "batch" / f"{image}.png")
        assert mask.size == SIZE
    assert len(response.json()) == unlabelled["total"] - unlabelled["completed"]


def test_tta_passes_are_flipped_back_and_dropout_passes_differ() -> None:
    from modan_monai.apps.monailabel.lib.epistemic import has_dropout, pass_outputs, variance_score

    image = torch.arange(1.0, 1.0 + 6 * 8).reshape(1, 6, 8)
    identity = torch.nn.Conv2d(1, 1, 1, bias=False)
    identity.weight.data.fill_(1.0)
    outputs = pass_outputs(image, identity, lambda x, net: net(x), lambda p: p, 4, spatial_output=True,
                           dropout=False)
    assert outputs.shape == (4, 1, 6, 8) and not has_dropout(identity)
    for k in range(4):  # each pass: the image (flipped back) with a small intensity change
        corr = np.corrcoef(outputs[k].flatten().numpy(), image.flatten().numpy())[0, 1]
        assert corr == pytest.approx(1.0, abs=1e-6)
    assert variance_score(outputs) > 0

    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(48, 3)).eval()
    assert has_dropout(network)
    outputs = pass_outputs(image, network, lambda x, net: net(x), lambda p: torch.softmax(p, 0), 5,
                           spatial_output=False, dropout=True)
    assert outputs.shape == (5, 3) and variance_score(outputs) > 0
    assert not network.training and not network[1].training  # the served network is left in eval mode
    with torch.no_grad():
        np.testing.assert_allclose(network(image[None]).numpy(), network(image[None]).numpy())
