"""The MONAI Label app against a real server on 127.0.0.1 (random-weight models built from network_def).

Needs monailabel installed the documented way (``python scripts/install_monailabel.py``); without it the module
skips, unless ``MODAN_REQUIRE_MONAILABEL=1`` (set by ``.ci/run``), where it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

if importlib.util.find_spec("monailabel") is None:
    if os.environ.get("MODAN_REQUIRE_MONAILABEL") == "1":
        raise ImportError("monailabel is not installed but MODAN_REQUIRE_MONAILABEL=1: run "
                          "python scripts/install_monailabel.py")
    pytest.skip("monailabel not installed (python scripts/install_monailabel.py)", allow_module_level=True)

import requests  # noqa: E402 (installed with monailabel's dependencies)
from requests_toolbelt.multipart.decoder import MultipartDecoder  # noqa: E402

from modan_monai.apps.monailabel.lib.bundle import repository_bundle, write_initial_weights  # noqa: E402
from modan_monai.apps.monailabel.process import LocalServer  # noqa: E402

# a rotated, anisotropic, shifted affine: the masks must come back with it
AFFINE = np.array([[0.0, -0.8, 0.0, 30.0], [0.7, 0.0, 0.0, -20.0], [0.0, 0.0, 2.5, 5.0], [0.0, 0.0, 0.0, 1.0]])
PNG_SIZE = (56, 48)  # PIL (width, height)
VOLUME = (40, 36, 3)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("monailabel")
    studies = root / "studies"
    studies.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, PNG_SIZE[::-1], dtype=np.uint8)).save(studies / f"img{i}.png")
    nib.save(nib.Nifti1Image(rng.normal(0, 100, VOLUME).astype(np.float32), AFFINE), str(studies / "vol.nii.gz"))
    models = {name: write_initial_weights(repository_bundle(name), root / f"{name}.pt", {"image_size": 64})
              for name in ("segment", "classify")}
    conf = {"segment_model": models["segment"], "classify_model": models["classify"],
            "segment_config": json.dumps({"image_size": 64}), "classify_config": json.dumps({"image_size": 64})}
    saved = os.environ.get("MODAN_MONAI_DEMO_DIR")
    os.environ["MODAN_MONAI_DEMO_DIR"] = str(root / "demo")  # the server must never write a demo corpus
    try:
        with LocalServer(studies, conf, log_file=root / "server.log") as running:
            running.root, running.models = root, models
            yield running
    finally:
        if saved is None:
            os.environ.pop("MODAN_MONAI_DEMO_DIR")
        else:
            os.environ["MODAN_MONAI_DEMO_DIR"] = saved


def infer(server: LocalServer, model: str, output: str, params: dict | None = None, **kwargs) -> requests.Response:
    return requests.post(f"{server.url}/infer/{model}", params={"output": output, **kwargs},
                         data={"params": json.dumps(params or {})}, timeout=120)


def image_and_params(response: requests.Response, out: Path) -> dict:
    parts = MultipartDecoder.from_response(response).parts
    params = {}
    for part in parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        if 'name="params"' in disposition:
            params = json.loads(part.content)
        else:
            out.write_bytes(part.content)
    return params


def test_info_lists_both_tasks(server: LocalServer) -> None:
    info = requests.get(server.url + "/info/", timeout=30).json()
    assert info["models"]["segment"]["type"] == "segmentation"
    assert info["models"]["segment"]["labels"] == {"heart": 1, "left_lung": 2, "right_lung": 3}
    assert info["models"]["classify"]["type"] == "classification"
    assert info["models"]["classify"]["labels"] == {"negative": 0, "positive": 1}
    assert "segment" in info["trainers"] and "random" in info["strategies"]
    assert not any("sam" in name for name in info["models"])


def test_png_mask_has_the_image_size(server: LocalServer) -> None:
    response = infer(server, "segment", "image", image="img0")
    assert response.status_code == 200, response.text
    out = server.root / "mask.png"
    out.write_bytes(response.content)
    mask = Image.open(out)
    assert mask.size == PNG_SIZE
    assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1, 2, 3}


def test_nifti_masks_keep_the_affine(server: LocalServer) -> None:
    response = infer(server, "segment", "all", image="vol")
    assert response.status_code == 200, response.text
    params = image_and_params(response, server.root / "vol_mask.nii.gz")
    mask = nib.load(str(server.root / "vol_mask.nii.gz"))
    assert mask.shape == VOLUME
    np.testing.assert_allclose(mask.affine, AFFINE, atol=1e-5)
    assert params["label_names"] == {"heart": 1, "left_lung": 2, "right_lung": 3}
    # one slice: a one-slice volume where that slice lies
    response = infer(server, "segment", "image", {"slice": 2}, image="vol")
    assert response.status_code == 200, response.text
    (server.root / "slice.nii.gz").write_bytes(response.content)
    one = nib.load(str(server.root / "slice.nii.gz"))
    assert one.shape == (*VOLUME[:2], 1)
    expected = AFFINE.copy()
    expected[:3, 3] += 2 * AFFINE[:3, 2]  # the origin of slice 2
    np.testing.assert_allclose(one.affine, expected, atol=1e-5)


def test_classify_returns_probabilities(server: LocalServer) -> None:
    response = infer(server, "classify", "json", image="img1")
    assert response.status_code == 200, response.text
    result = response.json()
    probs = result["probabilities"]
    assert set(probs) == {"negative", "positive"}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert result["label"] == max(probs, key=probs.get) and result["score"] == pytest.approx(max(probs.values()))


def test_bad_requests_are_named_and_the_server_keeps_serving(server: LocalServer) -> None:
    bad = server.root / "broken.png"
    bad.write_bytes(b"not an image")
    with open(bad, "rb") as f:
        response = requests.post(f"{server.url}/infer/segment", params={"output": "json"},
                                 files={"file": ("broken.png", f)}, timeout=60)
    assert response.status_code == 422
    assert ".png" in response.json()["detail"] and "segment" in response.json()["detail"]

    response = infer(server, "nosuchmodel", "json", image="img0")
    assert response.status_code == 404 and "nosuchmodel" in response.json()["detail"]

    response = infer(server, "segment", "json", {"slice": 7}, image="vol")
    assert response.status_code == 422 and "slice 7" in response.json()["detail"]

    weights = server.models["classify"]
    moved = weights.with_name("classify.away")
    shutil.move(weights, moved)
    try:
        response = infer(server, "classify", "json", image="img0")
        assert response.status_code == 404
        detail = response.json()["detail"]
        assert "'classify'" in detail and weights.name in detail and str(weights.parent) not in detail
    finally:
        shutil.move(moved, weights)
    assert infer(server, "classify", "json", image="img0").status_code == 200


def test_no_cross_origin_access_by_default(server: LocalServer) -> None:
    response = requests.options(f"{server.url}/datastore/image", timeout=30, headers={
        "Origin": "http://any.test", "Access-Control-Request-Method": "DELETE"})
    assert "access-control-allow-origin" not in {k.lower() for k in response.headers}
    assert "access-control-allow-credentials" not in {k.lower() for k in response.headers}


def put_label(server: LocalServer, image: str, label: np.ndarray) -> None:
    path = server.root / f"label_{image}.png"
    Image.fromarray(label.T).save(path)  # (x, y) -> PIL rows
    with open(path, "rb") as f:
        response = requests.put(f"{server.url}/datastore/label", params={"image": image, "tag": "final"},
                                files={"label": (path.name, f)}, timeout=60)
    assert response.status_code == 200, response.text


def structures_label(shift: int) -> np.ndarray:
    label = np.zeros(PNG_SIZE, np.uint8)  # (x, y)
    label[5 + shift:20 + shift, 5:30] = 1
    label[25:50, 10:40] = 2
    label[10:45, 20:25] = 3  # overlaps both: the map holds one value per pixel
    return label


def test_training_round_updates_the_served_model(server: LocalServer) -> None:
    bad = structures_label(0)
    bad[0:4, 0:4] = 7
    put_label(server, "img0", bad)
    put_label(server, "img1", structures_label(2))
    response = requests.post(f"{server.url}/train/segment", params={"run_sync": "true"}, json={"epochs": "many"},
                             timeout=60)
    assert response.status_code == 422 and "epochs='many'" in response.json()["detail"]
    response = requests.post(f"{server.url}/train/segment", params={"run_sync": "true"}, json={"epochs": 1},
                             timeout=300)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "[7]" in detail and "img0" in detail

    put_label(server, "img0", structures_label(0))  # the documented minimum: 2 labelled images
    before = infer(server, "segment", "all", image="img2")
    before_params = image_and_params(before, server.root / "before.png")
    weights = server.models["segment"]
    old_bytes = weights.read_bytes()
    response = requests.post(f"{server.url}/train/segment", params={"run_sync": "true"}, json={"epochs": 1},
                             timeout=300)
    assert response.status_code == 200, response.text
    result = response.json()
    # the default batch_size 4 is clamped to the one training image the split gives
    assert result["train_images"] == 1 and result["val_images"] == 1 and result["batch_size"] == 1
    assert result["model"] == "segment" and str(server.root) not in response.text
    assert 0.0 <= result["val_mean_dice"] <= 1.0
    assert weights.read_bytes() != old_bytes
    after = infer(server, "segment", "all", image="img2")
    after_params = image_and_params(after, server.root / "after.png")
    assert after_params["model_mtime_ns"] == weights.stat().st_mtime_ns != before_params["model_mtime_ns"]
    assert not (server.root / "demo").exists()


def test_training_manifest_from_volume_and_png_label_maps(tmp_path: Path) -> None:
    from modan_monai.apps.monailabel.lib.bundle import ServingError
    from modan_monai.apps.monailabel.lib.train_segment import write_training_manifest
    from modan_monai.data import manifest_to_datalist, read_manifest
    from modan_monai.data.segmentation import segmentation_transforms

    rng = np.random.default_rng(0)
    vol, vol_label = tmp_path / "v.nii.gz", tmp_path / "v_label.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(size=VOLUME).astype(np.float32), AFFINE), str(vol))
    label = np.zeros(VOLUME, np.uint8)
    label[5:15, 5:15, 1] = 1
    label[20:30, 10:20, :] = 2
    nib.save(nib.Nifti1Image(label, AFFINE), str(vol_label))
    png, png_label = tmp_path / "p.png", tmp_path / "p_label.png"
    Image.fromarray(rng.integers(0, 255, PNG_SIZE[::-1], dtype=np.uint8)).save(png)
    Image.fromarray(structures_label(0).T).save(png_label)
    pairs = [{"image": str(vol), "label": str(vol_label)}, {"image": str(png), "label": str(png_label)}]
    manifest = write_training_manifest(pairs, ["heart", "left_lung", "right_lung"], tmp_path / "round")
    rows = manifest_to_datalist(read_manifest(manifest))
    assert len(rows) == VOLUME[2] + 1 and {r["split"] for r in rows} == {"train", "val"}
    load = segmentation_transforms(["heart", "left_lung", "right_lung"], image_size=32)
    volume_rows = sorted((r for r in rows if str(r["image"]).endswith(".nii.gz")), key=lambda r: r["index"])
    masks = load(volume_rows[1])["label"]
    assert masks.shape == (3, 32, 32) and masks[0].sum() > 0 and masks[1].sum() > 0 and masks[2].sum() == 0
    assert load(volume_rows[0])["label"][0].sum() == 0

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(png_label)  # another size than its image
    with pytest.raises(ServingError, match="has size"):
        write_training_manifest(pairs, ["heart", "left_lung", "right_lung"], tmp_path / "round2")
    with pytest.raises(ServingError, match="at least 2 images"):
        write_training_manifest(pairs[:1], ["heart"], tmp_path / "round3")
