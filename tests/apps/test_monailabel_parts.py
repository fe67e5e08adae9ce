"""The app's parts that need no server: compat fixes, request rows, served bundles, weights loading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from modan_monai.apps.monailabel import write_app_dir
from modan_monai.apps.monailabel.lib.bundle import (
    ServedBundle,
    ServingError,
    parse_overrides,
    repository_bundle,
    write_initial_weights,
)
from modan_monai.apps.monailabel.lib.request import request_rows
from modan_monai.networks import load_model_weights


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_pydicom_alias_only_when_missing() -> None:
    out = run_python(
        "import importlib.util, sys\n"
        "missing = importlib.util.find_spec('pydicom._storage_sopclass_uids') is None\n"
        "from modan_monai.apps.monailabel import compat\n"
        "fixes = compat.apply()\n"
        "assert compat.apply() == fixes  # idempotent\n"
        "from pydicom._storage_sopclass_uids import SegmentationStorage\n"
        "import pydicom.uid\n"
        "assert SegmentationStorage == pydicom.uid.SegmentationStorage\n"
        "assert ('pydicom_storage_uids' in fixes) == missing, fixes\n"
        "print('ok')\n"
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_nothing_is_done_when_the_problems_are_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    from modan_monai.apps.monailabel import compat

    monkeypatch.setitem(sys.modules, "pydicom._storage_sopclass_uids", object())
    assert compat._fix_pydicom_storage_uids() is False
    monkeypatch.setattr(compat.importlib.util, "find_spec", lambda name: None)
    assert compat._fix_torchvision_ops() is False


def test_app_dir_holds_the_app(tmp_path: Path) -> None:
    folder = write_app_dir(tmp_path / "app")
    assert "ModanMonaiApp" in (folder / "main.py").read_text()
    assert write_app_dir(folder) == folder


def test_request_rows(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(png)
    vol = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), np.eye(4)), str(vol))
    flat = tmp_path / "f.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 1), np.float32), np.eye(4)), str(flat))
    four = tmp_path / "t.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 2), np.float32), np.eye(4)), str(four))

    rows, whole = request_rows({"image": str(png)}, "XR")
    assert not whole and rows == [{"image": str(png), "filename": str(png), "modality": "XR"}]
    rows, whole = request_rows({"image": str(vol), "modality": "CT"})
    assert whole and [r["index"] for r in rows] == [0, 1, 2, 3] and rows[0]["modality"] == "CT"
    rows, whole = request_rows({"image": str(vol), "slice": "2"})
    assert not whole and rows[0]["index"] == 2
    rows, whole = request_rows({"image": str(flat)})
    assert not whole and rows[0]["index"] == 0
    for request, match in [
        ({"image": str(vol), "slice": 4}, "slice 4 is out of range, the volume has 4 slices"),
        ({"image": str(vol), "slice": "x"}, "not an integer"),
        ({"image": str(png), "slice": 1}, "applies to NIfTI volumes"),
        ({"image": str(four)}, "4D NIfTI"),
        ({"image": str(tmp_path / "none.png")}, "file not found"),
        ({}, "no image"),
    ]:
        with pytest.raises(ServingError, match=match) as err:
            request_rows(request)
        assert err.value.status == 422


def test_served_bundle_weights_and_overrides(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['no_such_id'\]"):
        ServedBundle("segment", repository_bundle("segment"), overrides={"no_such_id": 1})
    served = ServedBundle("classify", repository_bundle("classify"), model_path=tmp_path / "model.pt")
    with pytest.raises(ServingError, match="'classify' has no weights file") as err:
        served.network(torch.device("cpu"))
    assert err.value.status == 404
    write_initial_weights(repository_bundle("classify"), tmp_path / "model.pt")
    first = served.network(torch.device("cpu"))
    assert served.network(torch.device("cpu")) is first  # cached while the file is unchanged
    assert served.weights_info()["model_mtime_ns"] == (tmp_path / "model.pt").stat().st_mtime_ns
    assert parse_overrides('{"image_size": 64}', "k") == {"image_size": 64}
    with pytest.raises(ValueError, match="--conf k"):
        parse_overrides("[1]", "k")


def test_load_model_weights_is_strict(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 3))
    torch.save({"model": net.state_dict()}, tmp_path / "wrapped.pt")
    load_model_weights(torch.nn.Sequential(torch.nn.Linear(2, 3)), tmp_path / "wrapped.pt")
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 4)).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt does not fit.*0.weight"):
        load_model_weights(net, tmp_path / "other.pt")
    bad = net.state_dict()
    bad["0.bias"] = torch.full((3,), float("nan"))
    torch.save(bad, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="non-finite"):
        load_model_weights(net, tmp_path / "nan.pt")


def test_served_labels_match_metadata_channel_def() -> None:
    segment = ServedBundle("segment", repository_bundle("segment"))
    channel_def = segment.metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert segment.get("label_names") == {name: int(c) + 1 for c, name in channel_def.items()}
    classify = ServedBundle("classify", repository_bundle("classify"))
    channel_def = classify.metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert classify.get("class_names") == [channel_def[str(i)] for i in range(len(channel_def))]


def test_served_model_gives_its_trained_settings_and_refuses_contradicting_ones(tmp_path: Path) -> None:
    """A classify model trained at 32 px with its own class names is served at 32 px with those names; an override
    contradicting them stops the server's start, and a file replaced by one trained otherwise is not served."""
    from modan_monai.networks import attach_model_settings, model_settings

    bundle = repository_bundle("classify")
    network = ServedBundle("classify", bundle, model_path=tmp_path / "none.pt",
                           overrides={"image_size": 32, "class_names": ["benign", "malignant"]}).get("network_def")
    settings = model_settings(network, task="classification", image_size=32, class_names=["benign", "malignant"])
    path = tmp_path / "model.pt"
    torch.save(attach_model_settings(network.state_dict(), settings), path)

    served = ServedBundle("classify", bundle, model_path=path)
    assert served.get("image_size") == 32 and served.get("class_names") == ["benign", "malignant"]
    assert served.network(torch.device("cpu")) is not None
    with pytest.raises(ValueError, match=r"image_size is 64 here \(--conf classify_config 'image_size'\) but 32"):
        ServedBundle("classify", bundle, model_path=path, overrides={"image_size": 64})

    # the served file replaced by a model trained at 64 px: refused, naming both sizes but not the server path
    other = dict(settings, image_size=64)
    torch.save(attach_model_settings(network.state_dict(), other), path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(ServingError, match=r"image_size is 32 here .* but 64 in training") as err:
        served.network(torch.device("cpu"))
    assert str(tmp_path) not in err.value.message
