"""The app's safety checks without a server: plain names, JSON params, training params, the confined datastore,
per-request upload folders and the CORS origins."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modan_monai.apps.monailabel.lib import uploads
from modan_monai.apps.monailabel.lib.bundle import ServingError
from modan_monai.apps.monailabel.lib.safety import MAX_NAME_LENGTH, inside, json_object, name_problem, plain_name

HAS_MONAILABEL = importlib.util.find_spec("monailabel") is not None
needs_monailabel = pytest.mark.skipif(
    not HAS_MONAILABEL and os.environ.get("MODAN_REQUIRE_MONAILABEL") != "1",
    reason="monailabel not installed (python scripts/install_monailabel.py)",
)


@pytest.mark.parametrize("value", ["img0", "case_001.v2", "ct-17", "final", "a" * MAX_NAME_LENGTH, "étude"])
def test_plain_names_pass(value: str) -> None:
    assert name_problem(value) is None and plain_name(value, "image") == value


@pytest.mark.parametrize(
    "value, problem",
    [
        ("../x", "separator"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("%2e%2e", "'..'"),
        ("%252e%252e%252fx", "separator"),
        ("%2fetc", "separator"),
        ("a\\b", "separator"),
        ("/etc/passwd", "separator"),
        ("C:x", "absolute"),
        ("img\x00", "control"),
        ("img%00", "control"),
        ("a\nb", "control"),
        ("a" * (MAX_NAME_LENGTH + 1), "longer"),
        ("", "empty"),
        (".", "not a name"),
        (3, "not a string"),
    ],
)
def test_other_values_are_refused_naming_the_parameter(value: object, problem: str) -> None:
    assert problem in name_problem(value)
    with pytest.raises(ServingError, match=f"parameter tag: .*{problem}") as err:
        plain_name(value, "tag")
    assert err.value.status == 400


def test_inside(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "out.txt").write_text("x")
    (tmp_path / "root" / "link").symlink_to(tmp_path / "out.txt")
    assert inside(tmp_path / "root" / "a.png", tmp_path / "root")
    assert not inside(tmp_path / "root" / "link", tmp_path / "root")
    assert not inside(tmp_path / "root" / ".." / "out.txt", tmp_path / "root")
    assert not inside(tmp_path / "root", tmp_path / "root")
    assert not inside("a\x00b", tmp_path)


@pytest.mark.parametrize("text", ["[1]", '"x"', '{"a": NaN}', '{"a": -Infinity}', '{"a": [1e999]}', "{x", "null"])
def test_json_params_must_be_objects_of_finite_numbers(text: str) -> None:
    with pytest.raises(ServingError, match="parameter params") as err:
        json_object(text, "params")
    assert err.value.status == 422


def test_json_params_pass() -> None:
    assert json_object('{"slice": 2, "w": [0.5, -1e3]}', "params") == {"slice": 2, "w": [0.5, -1e3]}
    assert json_object("", "params") == {}
    with pytest.raises(ServingError, match="parameter info: empty"):
        json_object("", "info", empty_ok=False)


def test_training_parameters_are_checked() -> None:
    if not HAS_MONAILABEL and os.environ.get("MODAN_REQUIRE_MONAILABEL") != "1":
        pytest.skip("monailabel not installed (train_segment imports it)")
    from modan_monai.apps.monailabel.lib.train_segment import TRAIN_DEFAULTS, train_params

    assert train_params({}) == TRAIN_DEFAULTS
    assert train_params({"epochs": "3", "batch_size": 2.0, "learning_rate": "1e-3"})["epochs"] == 3
    for request, match in [
        ({"epochs": "many"}, "epochs='many' is not an int"),
        ({"epochs": 2.5}, "epochs=2.5 is not an int"),
        ({"epochs": True}, "epochs=True"),
        ({"epochs": 0}, r"epochs=0 is out of range \[1,"),
        ({"batch_size": -4}, "batch_size=-4 is out of range"),
        ({"learning_rate": float("nan")}, "learning_rate=nan is not a finite number"),
        ({"learning_rate": 0}, r"learning_rate=0 is out of range \(0,"),
        ({"val_fraction": 1.0}, r"val_fraction=1.0 is out of range \(0, 1\)"),
        ({"seed": [1]}, "seed=\\[1\\] is not an int"),
    ]:
        with pytest.raises(ServingError, match=match) as err:
            train_params(request)
        assert err.value.status == 422


def test_request_folder_holds_and_removes_uploads() -> None:
    uploads.install()
    outside = tempfile.gettempdir()
    with pytest.raises(RuntimeError):
        with uploads.request_folder() as folder:
            name = tempfile.NamedTemporaryFile(suffix=".png").name  # what MONAI Label's endpoints do
            Path(name).write_bytes(b"upload")
            assert Path(name).parent == Path(folder) and uploads.is_request_upload(name)
            assert not uploads.is_request_upload(os.path.join(outside, "x.png"))
            raise RuntimeError("the request fails")
    assert not Path(folder).exists() and tempfile.gettempdir() == outside
    assert not uploads.is_request_upload(name) and uploads.current_folder() is None


def _png(path: Path, seed: int) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (12, 10), dtype=np.uint8)).save(path)
    return path


@needs_monailabel
def test_confined_datastore(tmp_path: Path) -> None:
    from modan_monai.apps.monailabel import compat

    compat.apply()
    from modan_monai.apps.monailabel.lib.datastore import ConfinedDatastore

    studies, outside = tmp_path / "studies", tmp_path / "outside"
    (studies / "labels" / "final").mkdir(parents=True)
    outside.mkdir()
    _png(studies / "img0.png", 0)
    _png(studies / "img1.png", 1)
    secret = _png(outside / "secret.png", 2)
    (studies / "link.png").symlink_to(secret)
    (studies / "labels" / "final" / "img1.png").symlink_to(secret)
    _png(studies / "labels" / "final" / "img0.png", 3)
    store = ConfinedDatastore(str(studies), extensions=["*.png"], auto_reload=False)

    assert sorted(store.list_images()) == ["img0", "img1"]  # the link leading out is not listed
    assert store.get_image_uri("img0") == str((studies / "img0.png").resolve())
    assert store.get_image_info("img0")["path"] == "img0.png"
    assert [Path(p["image"]).name for p in store.datalist()] == ["img0.png"]
    answers = set()
    for bad in ["nosuch", "link", "../outside/secret", str(secret), "%2e%2e"]:
        with pytest.raises(ServingError) as err:
            store.get_image_uri(bad)
        answers.add((err.value.status, err.value.message.replace(repr(bad), "<id>")))
    assert answers == {(404, "parameter image: no image <id> in the datastore")}
    with pytest.raises(ServingError, match="parameter label: no label 'img1'"):
        store.get_label_uri("img1", "final")
    with pytest.raises(ServingError, match="parameter id: no image 'link'"):
        store.remove_image("link")
    upload = _png(tmp_path / "upload.png", 4)
    with pytest.raises(ServingError, match="parameter image: 'link' leads outside") as err:
        store.add_image("link", str(upload), {})
    assert err.value.status == 403
    with pytest.raises(ServingError, match="parameter image: '../x'"):
        store.add_image("../x", str(upload), {})
    with pytest.raises(ServingError, match="parameter tag: '../../x'"):
        store.save_label("img0", str(upload), "../../x", {})
    with pytest.raises(ServingError, match="parameter image: 'img1' leads outside"):
        store.save_label("img1", str(upload), "final", {})
    assert secret.read_bytes() == _png(tmp_path / "again.png", 2).read_bytes()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]
    assert store.save_label("img0", str(upload), "reviewed", {}) == "img0"
    assert store.get_label_uri("img0", "reviewed").startswith(str(studies.resolve()))


@needs_monailabel
def test_cors_origins() -> None:
    from modan_monai.apps.monailabel.server import cors_origins

    assert cors_origins("") == [] and cors_origins(None, []) == []
    assert cors_origins("http://a:3000, https://b.org/", ["http://c"]) == ["http://a:3000", "https://b.org",
                                                                           "http://c"]
    for bad in ["a.org", "ftp://a", "http://a/path"]:
        with pytest.raises(ValueError, match="--conf cors_origins"):
            cors_origins(bad)


@needs_monailabel
def test_answers_name_no_server_folder() -> None:
    from modan_monai.apps.monailabel.server import scrub

    replacements = [("/srv/studies/", ""), ("/srv/studies", "<datastore>"), ("/home/ann", "~")]
    text = '{"path": "/srv/studies/labels/final/img0.png", "root": "/srv/studies", "log": "/home/ann/x /home/anna"}'
    assert scrub(text, replacements) == ('{"path": "labels/final/img0.png", "root": "<datastore>", '
                                         '"log": "~/x /home/anna"}')
