"""The app's safety checks without a server: plain names, JSON params, training params, the confined datastore,
per-request upload folders and the CORS origins."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modan_monai.apps.monailabel.lib import uploads
from modan_monai.apps.monailabel.lib.bundle import ServingError
from modan_monai.apps.monailabel.lib.safety import (
    MAX_NAME_LENGTH,
    check_infer_options,
    inside,
    json_object,
    name_problem,
    no_server_keys,
    plain_name,
    upload_suffix,
)

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


def test_no_request_sets_a_server_key() -> None:
    no_server_keys({"epochs": 1, "segment": {"seed": 2}, "images": ["a"]}, "body")
    for value in [{"bundle_path": "/x"}, {"segment": {"bundle_path": "."}}, [{"a": [{"bundle_path": ""}]}]]:
        with pytest.raises(ServingError, match="parameter body: 'bundle_path' is set by the server") as err:
            no_server_keys(value, "body")
        assert err.value.status == 400


def test_upload_names() -> None:
    assert upload_suffix("../../scan.nii.gz", "file") == ".nii.gz" and upload_suffix(None, "file") == ""
    for name, match in [("x." + "b" * 40, "suffix longer than 32"), ("x.p\x00ng", "control character")]:
        with pytest.raises(ServingError, match=f"parameter label: .*{match}") as err:
            upload_suffix(name, "label")
        assert err.value.status == 422


def test_inference_options() -> None:
    check_infer_options({"result_extension": ".nii.gz", "logging": "warning", "device": "cuda:1", "timeout": 30,
                         "save_label": False, "skip_writer": False, "result_write_to_file": True}, cuda_devices=2)
    for options, match in [
        ({"result_extension": "/../x.png"}, "result_extension='/../x.png'"),
        ({"result_extension": ".html"}, "result_extension"),
        ({"logging": "LOUD"}, "logging='LOUD'"),
        ({"logging": 10}, "logging=10"),
        ({"logging": None}, "logging=None"),
        ({"result_compress": "x"}, "result_compress='x'"),
        ({"result_write_to_file": None}, "result_write_to_file=None"),
        ({"device": "gpu"}, "device='gpu'"),
        ({"device": "cuda:2"}, "device='cuda:2'"),
        ({"timeout": "x"}, "timeout='x'"),
        ({"timeout": float("inf")}, "timeout=inf"),
        ({"save_label": "false"}, "save_label='false'"),
        ({"skip_writer": True}, "skip_writer=True"),
        ({"result_write_to_file": False}, "result_write_to_file=False"),
    ]:
        with pytest.raises(ServingError, match=f"parameter params: {match}") as err:
            check_infer_options(options, cuda_devices=2)
        assert err.value.status == 422


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
    page = tmp_path / "page.html"
    page.write_text("<script>")
    with pytest.raises(ServingError, match=r"parameter file: an uploaded \.html file; the datastore takes") as err:
        store.add_image("page", str(page), {})
    assert err.value.status == 415
    with pytest.raises(ServingError, match=r"parameter label: an uploaded \.html file"):
        store.save_label("img0", str(page), "final", {})
    linked = _png(outside / "linked.png", 5)
    os.link(linked, studies / "hard.png")
    with pytest.raises(ServingError, match=r"parameter image: the file of 'hard' has other names \(hard links\)"):
        store.add_image("hard", str(upload), {})
    assert linked.read_bytes() == _png(tmp_path / "again5.png", 5).read_bytes()
    os.unlink(studies / "hard.png")
    assert sorted(p.name for p in outside.iterdir()) == ["linked.png", "secret.png"]
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
    # a folder's path inside another path is that other path's part, not the folder
    assert scrub("/data/home/ann/x.png", replacements) == "/data/home/ann/x.png"


@needs_monailabel
def test_task_status_details_without_tracebacks() -> None:
    from modan_monai.apps.monailabel.server import drop_tracebacks

    details = ["[12:00] INFO round starts", "Traceback (most recent call last):", '  File "<app>/x.py", line 3, in f',
               "    raise ValueError('bad')", "    ^^^^^^^^^^^^^^^^^^^^^", "ValueError: bad", "",
               "The above exception was the direct cause of the following exception:", "HTTPException: 422: bad"]
    status = [{"id": "t1", "details": details, "request": {"details": "kept"}}]
    assert drop_tracebacks(status) == [{"id": "t1", "details": ["[12:00] INFO round starts", "ValueError: bad",
                                                                "HTTPException: 422: bad"],
                                        "request": {"details": "kept"}}]


@needs_monailabel
def test_random_next_sample_when_every_weight_is_zero() -> None:
    from modan_monai.apps.monailabel.main import Random

    class Store:
        def get_unlabeled_images(self, label_tag: object = None, labels: object = None) -> list[str]:
            return ["a", "b"]

        def get_image_info(self, image: str) -> dict:  # served "now" (here: in the future): weight <= 0
            return {"strategy": {"random": {"ts": int(time.time()) + 100}}}

    assert Random()({"strategy": "random"}, Store())["id"] in ("a", "b")


@needs_monailabel
def test_foreign_host() -> None:
    from modan_monai.apps.monailabel.server import foreign_host

    def scope(host: str) -> dict:
        return {"headers": [(b"host", host.encode())]}

    for host in ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "10.1.2.3", "labelserver:8000", ""]:
        assert foreign_host(scope(host), ["LabelServer"]) is None, host
    for host in ["evil.test:8000", "evil.test", "localhost.evil.test"]:
        assert foreign_host(scope(host), ["labelserver"]) == host


@needs_monailabel
def test_foreign_origin() -> None:
    from modan_monai.apps.monailabel.server import foreign_origin

    def scope(origin: str | None, host: bytes = b"127.0.0.1:8000") -> dict:
        headers = [(b"host", host)] + ([(b"origin", origin.encode())] if origin is not None else [])
        return {"scheme": "http", "headers": headers}

    listed = ["http://viewer:3000"]
    assert foreign_origin(scope(None), listed) is None
    assert foreign_origin(scope("http://127.0.0.1:8000"), listed) is None
    assert foreign_origin(scope("https://127.0.0.1:8000"), listed) is None  # behind a TLS proxy
    assert foreign_origin(scope("http://viewer:3000"), listed) is None
    assert foreign_origin(scope("http://evil.test"), listed) == "http://evil.test"
    assert foreign_origin(scope("null"), listed) == "null"
    assert foreign_origin(scope("null", host=b""), listed) == "null"
    assert foreign_origin(scope("http://127.0.0.1:9999"), listed) == "http://127.0.0.1:9999"
    assert foreign_origin(scope("http://evil.test"), ["*"]) is None
