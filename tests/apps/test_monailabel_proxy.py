"""The app's DICOMweb proxy (``/proxy/dicom/qido|wado/...``, where OHIF reads studies) against a stand-in DICOMweb
server on 127.0.0.1: it forwards reads to the configured server only, with the server's credentials, and passes
on neither the browser's headers nor the server's error text; hostile paths never reach any server; with a local
folder datastore the proxy stays closed.

The app runs in this process (uvicorn on a free port, MONAI Label's settings set by the test, no app instance:
the proxy needs none). Needs monailabel (see ``test_monailabel_server.py``).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("monailabel") is None:
    if os.environ.get("MODAN_REQUIRE_MONAILABEL") == "1":
        raise ImportError("monailabel is not installed but MODAN_REQUIRE_MONAILABEL=1: run "
                          "python scripts/install_monailabel.py")
    pytest.skip("monailabel not installed (python scripts/install_monailabel.py)", allow_module_level=True)

import requests  # noqa: E402

from modan_monai.apps.monailabel.lib.bundle import ServingError  # noqa: E402
from modan_monai.apps.monailabel.lib.proxy import DicomWebUpstream, upstream_url  # noqa: E402
from modan_monai.apps.monailabel.process import free_port  # noqa: E402

USER, PASSWORD = "pacs-user", "pacs-secret-7f3a"
STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
SECRET = "ORTHANC-INTERNAL /var/lib/orthanc Traceback (most recent call last)"


class Recorder(ThreadingHTTPServer):
    """A stand-in DICOMweb server on 127.0.0.1 that records every request it gets."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.seen: list[dict[str, Any]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "pacs-session=internal")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        path = self.path.split("?")[0]
        if self.headers.get("Authorization") != expected:
            self._answer(401, SECRET.encode(), "text/plain", {"WWW-Authenticate": 'Basic realm="Orthanc"'})
        elif path == "/dicom-web/studies":
            retrieve = f"{self.server.url}/dicom-web/studies/{STUDY}"
            body = json.dumps([{"0020000D": {"vr": "UI", "Value": [STUDY]},
                                "00081190": {"vr": "UR", "Value": [retrieve]}}]).encode()
            self._answer(200, body, "application/dicom+json")
        elif path == f"/dicom-web/studies/{STUDY}/series/{SERIES}/metadata":
            bulk = f"{self.server.url}/dicom-web/studies/{STUDY}/series/{SERIES}/instances/1.2/bulk/7fe00010"
            self._answer(200, json.dumps([{"7FE00010": {"vr": "OW", "BulkDataURI": bulk}}]).encode(),
                         "application/dicom+json")
        elif path == f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/1.2/frames/1":
            self._answer(200, b"--b\r\n\r\nPIXELS\r\n--b--", 'multipart/related; type="application/octet-stream"; '
                                                             "boundary=b")
        elif path == "/dicom-web/studies/5.5":
            self._answer(500, SECRET.encode(), "text/plain")
        elif path == "/dicom-web/studies/3.3":
            self._answer(302, b"", "text/plain", {"Location": "http://elsewhere.test/"})
        else:
            self._answer(404, SECRET.encode(), "text/plain")

    do_HEAD = do_GET  # noqa: N815


def _serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def pacs() -> Iterator[Recorder]:
    server = Recorder()
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def bystander() -> Iterator[Recorder]:
    """Another server on 127.0.0.1 that no request may reach."""
    server = Recorder()
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """The app's ASGI app (server.py) on a free port of 127.0.0.1, without lifespan (no app instance)."""
    import uvicorn

    from modan_monai.apps.monailabel.server import app

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def studies(monkeypatch: pytest.MonkeyPatch, pacs: Recorder) -> Recorder:
    """The app serves ``pacs`` as its DICOMweb datastore (MONAI Label's settings, as ``--studies`` and the
    credential variables set them)."""
    from monailabel.config import settings

    monkeypatch.setattr(settings, "MONAI_LABEL_STUDIES", pacs.url + "/dicom-web")
    monkeypatch.setattr(settings, "MONAI_LABEL_DICOMWEB_USERNAME", USER)
    monkeypatch.setattr(settings, "MONAI_LABEL_DICOMWEB_PASSWORD", PASSWORD)
    monkeypatch.setattr(settings, "MONAI_LABEL_DICOMWEB_PROXY_TIMEOUT", 5.0)
    pacs.seen.clear()
    return pacs


def get(url: str, method: str = "GET", **kwargs: Any) -> requests.Response:
    """``url`` sent as written (no client-side normalisation of ``..`` / ``//``)."""
    session = requests.Session()
    prepared = session.prepare_request(requests.Request(method, url, **kwargs))
    prepared.url = url
    return session.send(prepared, timeout=30, allow_redirects=False)


def test_reads_go_to_the_configured_server_with_its_credentials(app_url: str, studies: Recorder) -> None:
    response = get(f"{app_url}/proxy/dicom/qido/studies?limit=25&includefield=00081030",
                   headers={"Authorization": "Basic YnJvd3Nlcjp4", "Cookie": "viewer=1", "X-Custom": "z",
                            "Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    assert "set-cookie" not in response.headers
    (seen,) = studies.seen
    assert seen["path"] == "/dicom-web/studies?limit=25&includefield=00081030"
    assert seen["headers"]["Authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert seen["headers"]["Accept"] == "application/dicom+json"
    assert "Cookie" not in seen["headers"] and "X-Custom" not in seen["headers"]
    # the server's own URL is rewritten to the proxy's: the browser fetches everything through the app
    study = response.json()[0]
    assert study["00081190"]["Value"] == [f"/proxy/dicom/wado/studies/{STUDY}"]
    assert studies.url not in response.text
    # metadata (asked through QIDO too, as some OHIF versions do), its bulk data URI, and a frame
    for service in ("wado", "qido"):
        response = get(f"{app_url}/proxy/dicom/{service}/studies/{STUDY}/series/{SERIES}/metadata")
        assert response.status_code == 200, response.text
        bulk = response.json()[0]["7FE00010"]["BulkDataURI"]
        assert bulk == f"/proxy/dicom/wado/studies/{STUDY}/series/{SERIES}/instances/1.2/bulk/7fe00010"
    response = get(f"{app_url}/proxy/dicom/wado/studies/{STUDY}/series/{SERIES}/instances/1.2/frames/1")
    assert response.status_code == 200 and b"PIXELS" in response.content
    assert response.headers["content-type"].startswith("multipart/related")


def hostile_paths(bystander: Recorder) -> list[tuple[str, str]]:
    """``(method, path)`` pairs that try to leave the configured server or to write through the proxy."""
    other = bystander.url.split("://")[1]
    return [
        ("GET", "/proxy/dicom/qido/../../tools/shutdown"),
        ("GET", "/proxy/dicom/qido/%2e%2e/%2e%2e/tools/shutdown"),
        ("GET", "/proxy/dicom/qido/studies/..%2f..%2ftools"),
        ("GET", "/proxy/dicom/qido/studies%2f..%2f..%2fpatients"),
        ("GET", f"/proxy/dicom/wado/http:%2f%2f{other}/x"),
        ("GET", f"/proxy/dicom/wado/http://{other}/x"),
        ("GET", f"/proxy/dicom/wado//{other}/x"),
        ("GET", f"/proxy/dicom/wado/%2f%2f{other}/x"),
        ("GET", f"/proxy/dicom/wado/@{other}/x"),
        ("GET", "/proxy/dicom/wado/studies%5c..%5ctools"),
        ("GET", "/proxy/dicom/wado/studies%00"),
        ("GET", "/proxy/dicom/wado/studies/%0d%0aHost:%20evil"),
        ("GET", "/proxy/dicom/wado/.well-known/x"),
        ("GET", "/proxy/dicom/qido/studies?a%2fb=1"),
        ("GET", "/proxy/dicom/qido/studies?limit=1%0d%0aHost:%20evil"),
        ("GET", "/proxy/dicom/stow/studies"),
        ("GET", "/proxy/dicom/studies"),
        ("GET", "/proxy/dicom/tools/shutdown"),
        ("GET", "/proxy/other/studies"),
        ("POST", "/proxy/dicom/stow/studies"),
        ("POST", "/proxy/dicom/wado/studies"),
        ("PUT", "/proxy/dicom/wado/studies"),
        ("DELETE", f"/proxy/dicom/wado/studies/{STUDY}"),
    ]


def test_hostile_paths_reach_no_server(app_url: str, studies: Recorder, bystander: Recorder) -> None:
    assert get(f"{app_url}/proxy/dicom/qido/studies").status_code == 200  # the proxy is open
    studies.seen.clear()
    failures = []
    for method, path in hostile_paths(bystander):
        response = get(app_url + path, method, data=b"x" if method in ("POST", "PUT") else None)
        if not 400 <= response.status_code < 500:
            failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        elif "detail" not in response.json():
            failures.append(f"{method} {path}: no detail in {response.text[:200]}")
    assert not failures, "\n".join(failures)
    assert studies.seen == [] and bystander.seen == []


@pytest.mark.parametrize(
    "path, status, says",
    [
        ("studies/9.9", 404, "is not on the DICOMweb server"),
        ("studies/5.5", 502, "failed (500)"),
        ("studies/3.3", 502, "redirect (302)"),
    ],
)
def test_server_errors_are_answered_without_their_text(app_url: str, studies: Recorder, path: str, status: int,
                                                       says: str) -> None:
    response = get(f"{app_url}/proxy/dicom/wado/{path}")
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert says in detail
    assert "ORTHANC-INTERNAL" not in response.text and "Traceback" not in response.text
    assert "elsewhere.test" not in response.text and "set-cookie" not in response.headers
    if status == 502:
        assert f"{studies.url}/dicom-web" in detail  # the server named as configured
    assert len(studies.seen) == 1  # the redirect was not followed


def test_refused_credentials_and_an_unreachable_server_are_502s(app_url: str, studies: Recorder,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from monailabel.config import settings

    monkeypatch.setattr(settings, "MONAI_LABEL_DICOMWEB_PASSWORD", "wrong")
    response = get(f"{app_url}/proxy/dicom/qido/studies")
    assert response.status_code == 502, response.text
    assert "refused the app's credentials" in response.json()["detail"]
    assert "wrong" not in response.text and "ORTHANC-INTERNAL" not in response.text
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    monkeypatch.setattr(settings, "MONAI_LABEL_STUDIES", closed)
    response = get(f"{app_url}/proxy/dicom/qido/studies")
    assert response.status_code == 502, response.text
    assert response.json()["detail"].startswith(f"the DICOMweb server {closed} did not answer")


def test_closed_for_a_local_folder(app_url: str, studies: Recorder, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from monailabel.config import settings

    assert get(f"{app_url}/proxy/dicom/qido/studies").status_code == 200
    monkeypatch.setattr(settings, "MONAI_LABEL_STUDIES", str(tmp_path))
    response = get(f"{app_url}/proxy/dicom/qido/studies")
    assert response.status_code == 404 and "local folder" in response.json()["detail"]
    assert len(studies.seen) == 1


def test_upstream_url_keeps_to_the_server_and_its_prefixes() -> None:
    upstream = DicomWebUpstream("https://u:p@pacs.example.org:8443/dicom-web/", qido_prefix="rs", wado_prefix="wado")
    assert upstream.name == "https://pacs.example.org:8443/dicom-web"
    assert (upstream_url(upstream, "qido", "studies", "PatientID=ANON-0001&limit=5")
            == "https://u:p@pacs.example.org:8443/dicom-web/rs/studies?PatientID=ANON-0001&limit=5")
    assert (upstream_url(upstream, "qido", f"studies/{STUDY}/metadata")
            == f"https://u:p@pacs.example.org:8443/dicom-web/wado/studies/{STUDY}/metadata")
    assert (upstream_url(upstream, "wado", f"studies/{STUDY}/series/{SERIES}/instances/1.2/frames/1,2")
            == f"https://u:p@pacs.example.org:8443/dicom-web/wado/studies/{STUDY}/series/{SERIES}/instances/1.2/"
               "frames/1,2")
    for service, path in [("stow", "studies"), ("qido", ""), ("qido", "a/../b"), ("qido", "studies/"),
                          ("wado", "x" * 200), ("wado", "/".join(["s"] * 11)), ("wado", "a:b")]:
        with pytest.raises(ServingError) as err:
            upstream_url(upstream, service, path)
        assert err.value.status == 404
    for bad in ("ftp://pacs/dicom-web", "http:///dicom-web", "http://pacs/dicom-web?x=1", "/srv/studies"):
        with pytest.raises(ValueError, match="--studies"):
            DicomWebUpstream(bad)
