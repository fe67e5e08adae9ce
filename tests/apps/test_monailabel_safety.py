"""The MONAI Label app as an attacker or a careless client would use it, against one real server on 127.0.0.1.

Hostile ids, tags and model names go to every endpoint that takes one, with a sentinel folder beside the
datastore (and links from the datastore into it): each gets a 4xx and nothing outside the datastore is created,
changed, read or deleted. Also: ``/infer`` answers a missing and a refused id alike, a foreign origin gets no CORS
grant, malformed parameters get a 4xx naming the parameter, no answer holds the datastore's absolute path, and
uploads leave no temporary file behind. :func:`hostile_requests_beyond_ids` lists further attacks (a request setting
``bundle_path``, a foreign page's form ``POST``, uploads of other file types, writes through hard links, MONAI
Label options that used to end in a 500), each with what must hold afterwards.

Needs monailabel installed (``python scripts/install_monailabel.py``); see ``test_monailabel_server.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if importlib.util.find_spec("monailabel") is None:
    if os.environ.get("MODAN_REQUIRE_MONAILABEL") == "1":
        raise ImportError("monailabel is not installed but MODAN_REQUIRE_MONAILABEL=1: run "
                          "python scripts/install_monailabel.py")
    pytest.skip("monailabel not installed (python scripts/install_monailabel.py)", allow_module_level=True)

import requests  # noqa: E402

import modan_monai  # noqa: E402
from modan_monai.apps.monailabel.lib.bundle import repository_bundle, write_initial_weights  # noqa: E402
from modan_monai.apps.monailabel.process import LocalServer  # noqa: E402

VIEWER = "http://viewer.test:3000"
SIZE = (40, 36)  # PIL (width, height)


def png_bytes(seed: int) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, SIZE[::-1], dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: a link's target, a folder, or a file's content hash."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        try:
            if path.is_symlink():
                out[key] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[key] = "dir"
            else:
                out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:  # removed while listed (a request folder going away)
            out[key] = "gone"
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("monailabel_safety")
    studies, sentinel, tmp = root / "studies", root / "sentinel", root / "tmp"
    for folder in (studies / "labels" / "final", sentinel, tmp):
        folder.mkdir(parents=True)
    for i in range(2):
        (studies / f"img{i}.png").write_bytes(png_bytes(i))
    (sentinel / "secret.png").write_bytes(png_bytes(7))
    (sentinel / "target.png").write_bytes(png_bytes(8))
    (sentinel / "notes.txt").write_text("SENTINEL-MARKER do not serve\n")
    (studies / "link.png").symlink_to(sentinel / "secret.png")  # an image link leading out
    (studies / "labels" / "final" / "img1.png").symlink_to(sentinel / "target.png")  # a label link leading out
    (sentinel / "hard.png").write_bytes(png_bytes(9))
    os.link(sentinel / "hard.png", studies / "hard.png")  # an image whose other name lies outside
    (studies / "img2.png").write_bytes(png_bytes(2))
    (sentinel / "hard_label.png").write_bytes(png_bytes(10))
    os.link(sentinel / "hard_label.png", studies / "labels" / "final" / "img2.png")  # a label's, too
    (sentinel / "sitecustomize.py").write_text(f"open({str(root / 'PWNED')!r}, 'w').write('ran')\n")
    weights = write_initial_weights(repository_bundle("segment"), root / "segment.pt", {"image_size": 32})
    conf = {"models": "segment", "segment_model": weights, "segment_config": json.dumps({"image_size": 32}),
            "cors_origins": VIEWER}
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "MODAN_MONAI_DEMO_DIR")}
    os.environ["TMPDIR"] = str(tmp)  # the server's temporary files land here
    os.environ["MODAN_MONAI_DEMO_DIR"] = str(root / "demo")
    try:
        with LocalServer(studies, conf, log_file=root / "server.log") as running:
            running.root, running.sentinel, running.tmp = root, sentinel, tmp
            running.responses = []
            yield running
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def call(server: LocalServer, method: str, path: str, **kwargs) -> requests.Response:
    response = requests.request(method, server.url + path, timeout=120, **kwargs)
    server.responses.append(response)
    return response


def detail(response: requests.Response) -> str:
    try:
        return json.dumps(response.json().get("detail"))
    except ValueError:
        return response.text


def hostile_ids(server: LocalServer) -> list[str]:
    secret = str(server.sentinel / "secret")
    return [
        "../sentinel/secret",
        secret,
        secret + ".png",
        "..%2fsentinel%2fsecret",  # sent as %252f: the server sees %2f
        "%2e%2e",
        "..\\sentinel\\secret",
        "img0\x00../x",
        "a" * 3000,
        "link",
        "..",
    ]


def hostile_requests(server: LocalServer, bad: str) -> list[tuple[str, str, dict]]:
    """(method, path, requests kwargs) for every endpoint that takes an id, a tag or a name, with ``bad`` in it."""
    upload = {"file": ("x.png", png_bytes(3))}
    label = {"label": ("x.png", png_bytes(4))}
    out = [
        ("PUT", "/datastore/image", {"params": {"image": bad}, "files": upload}),
        ("PUT", "/datastore/", {"params": {"image": bad}, "files": upload}),
        ("DELETE", "/datastore/image", {"params": {"id": bad}}),
        ("DELETE", "/datastore/", {"params": {"id": bad}}),
        ("GET", "/datastore/image", {"params": {"image": bad}}),
        ("HEAD", "/datastore/image", {"params": {"image": bad}}),
        ("GET", "/datastore/image/info", {"params": {"image": bad}}),
        ("PUT", "/datastore/image/info", {"params": {"image": bad}, "data": {"info": "{}"}}),
        ("PUT", "/datastore/label", {"params": {"image": bad, "tag": "final"}, "files": label}),
        *([("PUT", "/datastore/label", {"params": {"image": "img0", "tag": bad}, "files": label})]
          if bad != "link" else []),  # 'link' is a fine tag: only the image named so leads out
        ("DELETE", "/datastore/label", {"params": {"id": bad, "tag": "final"}}),
        *([("DELETE", "/datastore/label", {"params": {"id": "img0", "tag": bad}})] if bad != "link" else []),
        ("GET", "/datastore/label", {"params": {"label": bad, "tag": "final"}}),
        ("HEAD", "/datastore/label", {"params": {"image": bad, "tag": "final"}}),
        ("GET", "/datastore/label/info", {"params": {"label": bad, "tag": "final"}}),
        ("PUT", "/datastore/label/info", {"params": {"label": bad, "tag": "final"}, "data": {"info": "{}"}}),
        ("POST", "/infer/segment", {"params": {"image": bad, "output": "json"}}),
        ("POST", "/infer/segment", {"params": {"session_id": bad, "output": "json"}}),
        ("POST", "/infer/segment", {"params": {"image": "img0", "output": "json"},
                                    "data": {"params": json.dumps({"image": bad})}}),
        ("POST", "/batch/infer/segment", {"params": {"run_sync": "true"}, "json": {"images": [bad]}}),
        ("GET", f"/proxy/dicom/{bad}", {}),
    ]
    # a name that fits in one path segment (the client itself resolves a '..' segment)
    if "/" not in bad and "%2f" not in bad and "\x00" not in bad and bad != "..":
        out.append(("GET", f"/session/{bad}", {}))
        out += [
            ("POST", f"/infer/{bad}", {"params": {"image": "img0", "output": "json"}}),
            ("POST", f"/train/{bad}", {"params": {"run_sync": "true"}, "json": {}}),
            ("POST", f"/batch/infer/{bad}", {"params": {"run_sync": "true"}, "json": {}}),
            ("POST", f"/activelearning/{bad}", {"json": {}}),
            ("POST", f"/scoring/{bad}", {"params": {"run_sync": "true"}, "json": {}}),
            ("GET", f"/model/{bad}", {}),
            ("DELETE", f"/model/{bad}", {}),
            ("POST", f"/infer/wsi/{bad}", {"params": {"image": "img0"}}),
            ("GET", f"/model/info/{bad}", {}),
        ]
    return out


def test_hostile_ids_tags_and_names_stay_inside_the_datastore(server: LocalServer) -> None:
    before, root_before = snapshot(server.sentinel), sorted(p.name for p in server.root.iterdir())
    secret_bytes = (server.sentinel / "secret.png").read_bytes()
    failures = []
    for bad in hostile_ids(server):
        for method, path, kwargs in hostile_requests(server, bad):
            # a literal %2f in an id is sent as %252f (requests quotes '%'), so the server sees '%2f'
            response = call(server, method, path, **kwargs)
            if not 400 <= response.status_code < 500:
                failures.append(f"{method} {path} {bad[:40]!r}: {response.status_code} {response.text[:200]}")
            if secret_bytes in response.content or b"SENTINEL-MARKER" in response.content:
                failures.append(f"{method} {path} {bad[:40]!r}: the answer holds a sentinel file")
    # the server decodes %2f in a query value: the id arrives as '../sentinel/secret'
    for raw in ("/datastore/image?image=..%2fsentinel%2fsecret", "/datastore/image?image=%2e%2e%2fsentinel%2fsecret"):
        response = call(server, "GET", raw)
        if not 400 <= response.status_code < 500:
            failures.append(f"GET {raw}: {response.status_code}")
    assert not failures, "\n".join(failures)
    assert snapshot(server.sentinel) == before
    assert sorted(p.name for p in server.root.iterdir()) == root_before
    assert (server.root / "studies" / "link.png").is_symlink()
    # the datastore still serves what it holds
    assert call(server, "GET", "/datastore/image", params={"image": "img0"}).status_code == 200


def hostile_requests_beyond_ids(server: LocalServer) -> list[tuple[str, str, dict, str]]:
    """(method, path, requests kwargs, what the detail names): requests that are not about an id or a tag."""
    evil = {"Origin": "http://evil.test"}
    png = png_bytes(11)
    path = str(server.sentinel)
    infer = ("POST", "/infer/segment")
    return [
        # MONAI Label puts bundle_path on the PYTHONPATH of the process it starts: sentinel/sitecustomize.py would run
        ("POST", "/train/segment", {"json": {"bundle_path": path}}, "bundle_path"),
        ("POST", "/train/", {"json": {"segment": {"bundle_path": path}}}, "bundle_path"),
        ("POST", "/batch/infer/segment", {"json": {"bundle_path": path, "images": ["img0"]}}, "bundle_path"),
        ("POST", "/scoring/dice", {"json": {"bundle_path": path}}, "bundle_path"),
        # a foreign web page's form POST needs no preflight: it would save a label / start a round
        (*infer, {"params": {"image": "img0", "output": "json"}, "headers": evil,
                  "data": {"params": json.dumps({"save_label": True, "label_tag": "csrf"})}}, "Origin"),
        (*infer, {"params": {"image": "img0", "output": "json"}, "headers": {"Origin": "null"},
                  "data": {"params": json.dumps({"save_label": True, "label_tag": "csrf"})}}, "Origin"),
        ("PUT", "/datastore/image", {"params": {"image": "csrf"}, "files": {"file": ("x.png", png)},
                                     "headers": evil}, "Origin"),
        # DNS rebinding: a page at evil.test whose name now points here is same-origin to the browser
        ("GET", "/datastore/image", {"params": {"image": "img0"}, "headers": {"Host": "evil.test"}}, "header Host"),
        ("PUT", "/datastore/label", {"params": {"image": "img0", "tag": "csrf"}, "files": {"label": ("l.png", png)},
                                     "headers": {"Host": f"evil.test:{server.port}",
                                                 "Origin": f"http://evil.test:{server.port}"}}, "header Host"),
        # other file types: a page served from this origin, the datastore's own index
        ("PUT", "/datastore/image", {"params": {"image": "page"}, "files": {"file": ("p.html", b"<script>")}},
         "parameter file"),
        ("PUT", "/datastore/image", {"params": {"image": "datastore_v2"}, "files": {"file": ("d.json", b"{}")}},
         "parameter file"),
        ("PUT", "/datastore/label", {"params": {"image": "img0", "tag": "final"},
                                     "files": {"label": ("p.html", b"<script>")}}, "parameter label"),
        # writes through a hard link would change the sentinel
        ("PUT", "/datastore/image", {"params": {"image": "hard"}, "files": {"file": ("x.png", png)}}, "hard link"),
        ("PUT", "/datastore/label", {"params": {"image": "img2", "tag": "final"},
                                     "files": {"label": ("x.png", png)}}, "hard link"),
        # malformed input that ended in a 500
        ("POST", "/infer/segment", {"params": {"output": "json"}, "files": {"file": ("x." + "b" * 300, png)}},
         "parameter file"),
        *[(*infer, {"params": {"image": "img0", "output": "json"}, "data": {"params": json.dumps(options)}}, key)
          for options, key in [({"result_extension": "/../../x.png"}, "result_extension"),
                               ({"result_extension": ".py"}, "result_extension"),
                               ({"logging": "LOUD"}, "logging"), ({"device": "gpu9"}, "device"),
                               ({"skip_writer": True}, "skip_writer"),
                               ({"result_write_to_file": False}, "result_write_to_file"),
                               ({"result_compress": "x"}, "result_compress"), ({"logging": None}, "logging")]],
        (*infer, {"params": {"image": "img0", "output": "json"}, "files": {"label": ("s.bin", b"xx")}},
         "parameter label"),
        ("POST", "/train/", {"json": {"segment": "fast"}}, "parameter segment"),
        ("POST", "/batch/infer/segment", {"params": {"run_sync": "true"}, "json": {"images": "some"}},
         "parameter images"),
        ("POST", "/batch/infer/segment", {"params": {"run_sync": "true"}, "json": {"images": ["img0"], "gpus": True}},
         "parameter gpus"),
        ("POST", "/batch/infer/segment", {"params": {"run_sync": "true"}, "json": {"images": ["img0"], "device": 7}},
         "device"),
        ("POST", "/batch/infer/segment", {"params": {"run_sync": "true"}, "json": {"model": ["segment"]}},
         "parameter model"),
        ("HEAD", "/datastore/image", {"params": {"image": "img0", "check_sum": "CRC32:0"}}, ""),
        ("GET", "/ohif/%2e%2e", {}, "'..'"),
        ("GET", "/logs/", {"params": {"text": "true"}}, "server log"),
    ]


def test_hostile_requests_beyond_ids(server: LocalServer) -> None:
    before = snapshot(server.sentinel)
    failures = []
    for method, path, kwargs, named in hostile_requests_beyond_ids(server):
        response = call(server, method, path, **kwargs)
        if not 400 <= response.status_code < 500 or named not in (detail(response) if method != "HEAD" else ""):
            failures.append(f"{method} {path} {kwargs}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)
    time.sleep(1.0)  # a training process started by a refused request would have run sitecustomize by now
    assert snapshot(server.sentinel) == before
    assert not (server.root / "PWNED").exists()
    studies = server.root / "studies"
    assert not (studies / "labels" / "csrf").exists() and not (studies / "csrf.png").exists()
    assert not (studies / "page.html").exists() and not (studies / "labels" / "final" / "img0.html").exists()
    assert call(server, "GET", "/datastore/image", params={"image": "datastore_v2"}).status_code == 404
    # the server's own origin and a listed one may still write, called by an IP address or localhost
    own = {"Origin": server.url.replace("127.0.0.1", "localhost"), "Host": f"localhost:{server.port}"}
    response = call(server, "PUT", "/datastore/label", params={"image": "img0", "tag": "own"}, headers=own,
                    files={"label": ("l.png", png_bytes(12))})
    assert response.status_code == 200, response.text
    response = call(server, "DELETE", "/datastore/label", params={"id": "img0", "tag": "own"},
                    headers={"Origin": VIEWER})
    assert response.status_code == 200, response.text
    # batch inference works on a server without GPUs (MONAI Label's divides by their number)
    response = call(server, "POST", "/batch/infer/segment", params={"run_sync": "true"},
                    json={"images": ["img0"], "label_tag": "batch"})
    assert response.status_code == 200, response.text
    assert (studies / "labels" / "batch" / "img0.png").is_file()


def test_background_task_status_holds_no_traceback(server: LocalServer) -> None:
    response = call(server, "POST", "/train/segment", json={"epochs": 1})  # fails: one image has a final label
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = call(server, "GET", "/train/")
        if status.json().get("status") not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(1.0)
    task = status.json()
    assert task["status"] == "ERROR", task
    assert "training needs at least 2 images with a final label" in task["details"][-1]
    assert "Traceback" not in status.text and 'File \\"' not in status.text, status.text


def test_bad_names_are_refused_naming_the_parameter(server: LocalServer) -> None:
    for method, path, kwargs, parameter in [
        ("PUT", "/datastore/image", {"params": {"image": "../x"}, "files": {"file": ("x.png", png_bytes(5))}}, "image"),
        ("PUT", "/datastore/label", {"params": {"image": "img0", "tag": "../../x"},
                                     "files": {"label": ("x.png", png_bytes(5))}}, "tag"),
        ("DELETE", "/datastore/image", {"params": {"id": "../sentinel/secret"}}, "id"),
        ("GET", "/datastore/label", {"params": {"label": "img0", "tag": "/etc"}}, "label"),
        ("POST", "/infer/a%00b", {"params": {"image": "img0"}}, "model"),
        ("POST", "/infer/segment", {"params": {"session_id": "s1"}}, "session_id"),
        ("DELETE", "/model/segment", {}, "model"),
        ("PUT", "/model/segment", {"files": {"file": ("m.pt", b"x")}}, "model"),
    ]:
        response = call(server, method, path, **kwargs)
        assert 400 <= response.status_code < 500, (path, response.text)
        assert f"parameter {parameter}" in detail(response), (path, response.text)


def test_infer_answers_missing_and_refused_ids_alike(server: LocalServer) -> None:
    ids = ["nosuch", "../sentinel/secret", str(server.sentinel / "secret.png"), "link", "../studies/img0"]
    answers = []
    for image in ids:
        response = call(server, "POST", "/infer/segment", params={"image": image, "output": "json"})
        text = detail(response)
        assert image in text, text
        answers.append((response.status_code, text.replace(image, "<id>")))
    assert len(set(answers)) == 1, answers
    assert answers[0][0] == 404 and "parameter image" in answers[0][1]


def test_cross_origin_access_only_for_listed_origins(server: LocalServer) -> None:
    preflight = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type"}
    foreign = call(server, "OPTIONS", "/datastore/image", headers={"Origin": "http://evil.test", **preflight})
    assert "access-control-allow-origin" not in {k.lower() for k in foreign.headers}
    simple = call(server, "GET", "/info/", headers={"Origin": "http://evil.test"})
    assert simple.status_code == 200 and "access-control-allow-origin" not in {k.lower() for k in simple.headers}
    listed = call(server, "OPTIONS", "/datastore/image", headers={"Origin": VIEWER, **preflight})
    assert listed.status_code == 200 and listed.headers.get("access-control-allow-origin") == VIEWER


def test_malformed_parameters_are_4xx_naming_the_parameter(server: LocalServer) -> None:
    infer = "/infer/segment"
    cases = [
        ("POST", infer, {"params": {"image": "img0"}, "data": {"params": "[1, 2]"}}, "params"),
        ("POST", infer, {"params": {"image": "img0"}, "data": {"params": '{"slice": NaN}'}}, "params"),
        ("POST", infer, {"params": {"image": "img0"}, "data": {"params": '{"slice": 1e999}'}}, "params"),
        ("POST", infer, {"params": {"image": "img0"}, "data": {"params": "{not json"}}, "params"),
        ("POST", infer, {"params": {"output": "json"}}, "image"),
        ("PUT", "/datastore/image/info", {"params": {"image": "img0"}, "data": {"info": '"text"'}}, "info"),
        ("PUT", "/datastore/image", {"params": {"image": "img9"}, "data": {"params": "[]"},
                                     "files": {"file": ("x.png", png_bytes(6))}}, "params"),
        ("POST", "/train/segment", {"params": {"run_sync": "true"}, "json": [1, 2]}, "body"),
        ("POST", "/train/segment", {"params": {"run_sync": "true"}, "json": {"learning_rate": -1}}, "learning_rate"),
        ("POST", "/train/segment", {"params": {"run_sync": "true"}, "json": {"batch_size": 0}}, "batch_size"),
        ("POST", "/train/segment", {"params": {"run_sync": "true"}, "json": {"epochs": 2.5}}, "epochs"),
        ("POST", "/train/segment", {"params": {"run_sync": "true"}, "data": '{"val_fraction": NaN}',
                                    "headers": {"Content-Type": "application/json"}}, "val_fraction"),
        ("POST", "/train/segment", {"params": {"run_sync": "true"}, "json": {"seed": -3}}, "seed"),
    ]
    for method, path, kwargs, parameter in cases:
        response = call(server, method, path, **kwargs)
        assert 400 <= response.status_code < 500, (kwargs, response.status_code, response.text)
        assert parameter in detail(response), (kwargs, response.text)
    assert not (server.root / "studies" / "img9.png").exists()


def settled(folder: Path, timeout: float = 10.0) -> dict[str, str]:
    """The snapshot of the server's temporary folder once no request folder is left (each goes right after its
    answer is sent)."""
    deadline = time.monotonic() + timeout
    while any(p.name.startswith("modan_monai_request_") for p in folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return snapshot(folder)


def test_uploads_leave_no_temporary_file(server: LocalServer) -> None:
    before = settled(server.tmp)
    ok = call(server, "POST", "/infer/segment", params={"output": "image"}, files={"file": ("up.png", png_bytes(9))})
    broken = call(server, "POST", "/infer/segment", params={"output": "json"},
                  files={"file": ("broken.png", b"not a png")})
    bad_id = call(server, "PUT", "/datastore/image", params={"image": "../up"}, files={"file": ("up.png", b"x")})
    no_image = call(server, "PUT", "/datastore/label", params={"image": "nosuch", "tag": "final"},
                    files={"label": ("l.png", png_bytes(2))})
    assert settled(server.tmp) == before
    assert ok.status_code == 200, ok.text
    assert broken.status_code == 422 and "upload.png" in detail(broken)
    assert bad_id.status_code == 400 and no_image.status_code == 404


def test_no_answer_holds_a_server_path(server: LocalServer) -> None:
    for method, path, kwargs in [
        ("GET", "/info/", {}),
        ("GET", "/datastore/", {"params": {"output": "all"}}),
        ("GET", "/datastore/", {"params": {"output": "train"}}),
        ("GET", "/datastore/image/info", {"params": {"image": "img0"}}),
        ("POST", "/activelearning/random", {"json": {}}),
        ("POST", "/infer/segment", {"params": {"image": "img0", "output": "json"}}),
        ("POST", "/infer/segment", {"params": {"image": "img0", "output": "json"}, "data": {"params": '{"slice": 3}'}}),
        ("GET", "/train/", {}),
    ]:
        assert call(server, method, path, **kwargs).status_code < 500
    studies = server.root / "studies"
    package = Path(modan_monai.__file__).parent
    paths = {str(studies), os.path.realpath(studies), str(server.tmp), str(package), os.path.realpath(package)}
    leaks = [(r.request.method, r.url, r.text[:300]) for r in server.responses
             if any(p in r.text for p in paths) and not r.headers.get("content-type", "").startswith("image/")]
    assert not leaks, leaks
