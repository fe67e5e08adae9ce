"""MONAI Label's ASGI app with :mod:`modan_monai.apps.monailabel.compat` applied first, made safe to expose.

For ``monailabel start_server --uvicorn_app modan_monai.apps.monailabel.server:app ...`` (what
``python -m modan_monai.apps.monailabel start_server`` runs). On top of MONAI Label's app:

- **CORS**: no cross-origin access unless the operator lists origins with ``--conf cors_origins
  "http://viewer:3000,https://ohif.example.org"`` (or MONAI Label's ``MONAI_LABEL_CORS_ORIGINS`` setting):
  MONAI Label's default answers every origin's preflight with that origin and ``allow-credentials: true``.
  A request that changes something (any method but ``GET`` / ``HEAD`` / ``OPTIONS``) whose ``Origin`` header is
  neither the server's own origin nor listed is refused (403): a web page can send a form ``POST`` to another
  origin without asking first (no preflight), which would start a training round or overwrite labels.
- **Host**: a request whose ``Host`` header names the server by a DNS name not listed with ``--conf hosts
  "labelserver,labelserver.example.org"`` is refused (403); IP addresses and ``localhost`` need no listing. A
  page whose own DNS name is made to point at 127.0.0.1 (DNS rebinding) is same-origin with the server as far as
  the browser knows; only the ``Host`` it sends gives it away.
- **Requests**: JSON parameters (``params``, ``info``) must be objects of finite numbers, ``/infer`` needs an
  ``image`` id or a ``file``, and ``session_id`` is refused (the app keeps no sessions): each a 4xx naming the
  parameter. No request may set a key the server sets (``bundle_path``: MONAI Label puts it on the training and
  batch processes' ``PYTHONPATH``), an upload's file name must have a short suffix, and the all-models
  ``POST /train/`` / ``/scoring/`` take an object per model. Ids, tags and model names are checked where they
  meet the files
  (:class:`~modan_monai.apps.monailabel.lib.datastore.ConfinedDatastore`, the app's ``infer`` / ``train``).
- **Uploads**: every request gets its own temporary folder, deleted when it ends, success or failure
  (:mod:`~modan_monai.apps.monailabel.lib.uploads`).
- **Answers**: a refusal is ``{"detail": ...}`` with its status; an unexpected error is a 500 without its text or
  a traceback (the server log has both); JSON and text bodies name files relative to the datastore and the app's
  other folders by placeholder (``<app>``, ``<segment model>``, ``<tmp>`` ...), never by absolute path; the
  ``details`` of a background task's status (``GET /train/`` ...) keep its log lines without traceback lines.
- **DICOMweb proxy** (``/proxy/dicom/qido/...``, ``/proxy/dicom/wado/...``: where the bundled OHIF viewer reads
  studies): open only when the app serves a DICOMweb datastore (``--studies http(s)://...``), and then only reads
  of that server, with the server's credentials added here (:mod:`~modan_monai.apps.monailabel.lib.proxy`: no
  request chooses the target, the server's error text is not passed on); MONAI Label's own proxy routes are
  shadowed. With a local folder it answers 404.
- The server log (``/logs``: tracebacks, paths) answers 404, a path with a ``..`` segment answers 404, and the
  served weights cannot be uploaded or deleted over HTTP (``PUT`` / ``DELETE /model/<name>``: 403).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from modan_monai.apps.monailabel import compat

compat.apply()

from fastapi import Depends  # noqa: E402
from fastapi.middleware.cors import CORSMiddleware  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from fastapi.routing import APIRoute  # noqa: E402
from monailabel.app import app  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.endpoints.user.auth import RBAC, User  # noqa: E402
from monailabel.interfaces.exception import MONAILabelException  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.requests import Request  # noqa: E402

from modan_monai.apps.monailabel.lib import uploads  # noqa: E402
from modan_monai.apps.monailabel.lib.bundle import ServingError  # noqa: E402
from modan_monai.apps.monailabel.lib.proxy import SERVICES, DicomWebUpstream, forward  # noqa: E402
from modan_monai.apps.monailabel.lib.safety import (  # noqa: E402
    json_object,
    no_server_keys,
    plain_name,
    upload_suffix,
)

__all__ = ["GuardMiddleware", "app", "check_request", "cors_origins", "dicomweb_upstream", "drop_tracebacks",
           "foreign_host", "foreign_origin", "not_served", "path_replacements", "scrub"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

#: form / query parameters holding a JSON object
JSON_PARAMETERS = ("params", "info")
#: JSON body keys that replace the model / scoring method / strategy named in the path
NAME_KEYS = ("model", "method", "strategy")
#: path prefixes answered 404, and why
NOT_SERVED = {
    "/proxy/": "the DICOMweb proxy serves DICOMweb datastores; this app serves a local folder",
    "/logs": "the server log is read on the server (<app>/logs/app.log), not over HTTP",
}
#: where the bundled OHIF viewer reads studies (its app-config.js: ``qidoRoot`` / ``wadoRoot``)
PROXY_PREFIX = "/proxy/dicom"
#: the hash algorithms ``HEAD /datastore/image?check_sum=<algorithm>:<digest>`` knows
CHECKSUM_ALGORITHMS = ("SHA256", "SHA512", "MD5")
#: methods that only read (a page from any origin may send them; it cannot read the answer without CORS)
READ_METHODS = ("GET", "HEAD", "OPTIONS")
#: a line of a Python traceback (its header, a frame, the frame's code and markers, the chaining notes)
_TRACEBACK_LINE = re.compile(r"Traceback \(most recent call last\)|\s|The above exception|During handling of")


def cors_origins(conf_value: str | None, setting: list[Any] | None = None) -> list[str]:
    """The origins allowed cross-origin access: ``--conf cors_origins`` (comma-separated) and the setting.

    Raises:
        ValueError: an origin is not ``http(s)://host[:port]`` or ``*`` (naming ``--conf cors_origins``).
    """
    origins = [o.strip() for o in (conf_value or "").split(",") if o.strip()]
    origins += [str(o).rstrip("/") for o in setting or []]
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if origin != "*" and (scheme not in ("http", "https") or not rest or "/" in rest.rstrip("/")):
            raise ValueError(f"--conf cors_origins: {origin!r} is not an origin (http://host:port or https://host)")
    return [o.rstrip("/") for o in origins]


def dicomweb_upstream() -> DicomWebUpstream | None:
    """The DICOMweb server the app serves as its datastore (``--studies http(s)://...``, MONAI Label's DICOMweb
    credential and prefix settings), or ``None`` for a local folder."""
    studies = settings.MONAI_LABEL_STUDIES or ""
    if not studies.startswith(("http://", "https://")):
        return None
    return DicomWebUpstream(studies, settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD,
                            settings.MONAI_LABEL_QIDO_PREFIX, settings.MONAI_LABEL_WADO_PREFIX,
                            float(settings.MONAI_LABEL_DICOMWEB_PROXY_TIMEOUT))


def not_served(path: str) -> str | None:
    """Why ``path`` is answered 404 before any endpoint sees it (see :data:`NOT_SERVED`), or ``None``; the
    DICOMweb proxy's QIDO-RS and WADO-RS paths are served when the app serves a DICOMweb datastore (MONAI Label's
    other proxy paths, STOW-RS included, never)."""
    for prefix, why in NOT_SERVED.items():
        if path.startswith(prefix):
            if prefix != "/proxy/" or dicomweb_upstream() is None:
                return why
            if not any(path.startswith(f"{PROXY_PREFIX}/{service}/") for service in SERVICES):
                return (f"path: the DICOMweb proxy reads {[f'{PROXY_PREFIX}/{s}/...' for s in SERVICES]} "
                        "(QIDO-RS, WADO-RS) only")
    return None


def path_replacements() -> list[tuple[str, str]]:
    """``(absolute path, what answers say instead)`` for the server's folders, longest first."""
    pairs: list[tuple[str, str]] = []
    studies = settings.MONAI_LABEL_STUDIES
    if studies and not studies.startswith(("http://", "https://")):
        for root in {studies.rstrip(os.sep), os.path.realpath(studies)}:
            pairs += [(root + os.sep, ""), (root, "<datastore>")]
    named = {"<app>": settings.MONAI_LABEL_APP_DIR, "<tmp>": uploads.system_tempdir(),
             "<python>": sys.prefix, "<modan_monai>": str(Path(compat.__file__).resolve().parents[2]),
             "~": os.path.expanduser("~")}
    try:
        from monailabel.interfaces.utils.app import app_instance

        instance = app_instance()
        for name, served in getattr(instance, "served", {}).items():
            named[f"<{name} model>"] = str(served.model_path)
            named[f"<{name} bundle>"] = str(served.bundle_dir)
        named["<work_dir>"] = str(getattr(instance, "work_dir", ""))
    except Exception:  # noqa: BLE001 - before the app is loaded there is nothing more to name
        pass
    for label, path in named.items():
        if path and os.path.isabs(path) and path != os.sep:
            for p in {path.rstrip(os.sep), os.path.realpath(path)}:
                pairs.append((p, label))
    return sorted(set(pairs), key=lambda pair: -len(pair[0]))


def scrub(text: str, replacements: list[tuple[str, str]]) -> str:
    """``text`` with each absolute path of ``replacements`` replaced (see :func:`path_replacements`)."""
    for path, label in replacements:
        if path in text:
            # a path starts where no name character precedes it ('/root' is not replaced in '/tmp/x/root') and a
            # folder ends where none follows ('/root' is not replaced in '/rooted')
            end = "" if path.endswith(os.sep) else r"(?![\w.-])"
            text = re.sub(r"(?<![\w.-])" + re.escape(path) + end, lambda _: label, text)
    return text


def drop_tracebacks(value: Any) -> Any:
    """``value`` (parsed JSON) with the traceback lines taken out of every ``details`` list of strings (a background
    task's status keeps the task's last output lines: its log and, when it failed, the exception's last line)."""
    if isinstance(value, list):
        return [drop_tracebacks(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: drop_tracebacks(v) for k, v in value.items()}
    details = out.get("details")
    if isinstance(details, list) and all(isinstance(line, str) for line in details):
        out["details"] = [line for line in details if line and not _TRACEBACK_LINE.match(line)]
    return out


def foreign_origin(scope: Scope, allowed: list[str]) -> str | None:
    """The request's ``Origin`` when it is neither the server's own (its host and port are the ``Host`` header's,
    whichever scheme: a TLS proxy in front changes only that) nor in ``allowed``."""
    headers = dict(scope.get("headers") or [])
    if b"origin" not in headers:
        return None
    origin = headers[b"origin"].decode("latin-1").rstrip("/")
    host = headers.get(b"host", b"").decode("latin-1")
    own = bool(host) and origin.partition("://")[2] == host
    return None if own or origin in allowed or "*" in allowed else origin


def foreign_host(scope: Scope, hosts: list[str]) -> str | None:
    """The request's ``Host`` header when it names the server by a DNS name that is neither ``localhost`` nor in
    ``hosts`` (an IP address, or no header, is never foreign)."""
    host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
    name = host.rpartition("]")[0].lstrip("[") if host.startswith("[") else host.partition(":")[0]
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    return None if not host or name.lower() in ("localhost", *(h.lower() for h in hosts)) else host


async def _read_body(receive: Callable) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def check_request(scope: Scope, body: bytes, receive: Callable) -> None:
    """The request-level checks (see the module docstring).

    Raises:
        ServingError: a JSON parameter that is not an object of finite numbers (422), a key the server sets in a
            JSON parameter or body (400), a body's ``model`` / ``method`` / ``strategy`` that is not a plain name
            (400), an upload whose file name has a control character or a long suffix
            (422), a ``check_sum`` algorithm MONAI Label does not know (422), a ``session_id`` (400), an
            ``/infer`` request with neither ``image`` nor ``file`` or with a ``label`` (422), a non-object model
            entry of ``POST /train/`` / ``/scoring/`` (422), a ``PUT`` / ``DELETE`` of ``/model/`` (403); each
            naming the parameter.
    """
    path = scope.get("path", "")
    if scope.get("method") in ("PUT", "DELETE") and path.startswith("/model/"):
        raise ServingError(403, "parameter model: the served weights are set on the server (--conf <model>_model) "
                                "and replaced by training rounds; they are not uploaded or deleted over HTTP")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if any(query.get("session_id", [])):
        raise ServingError(400, "parameter session_id: this app keeps no sessions; give image (a datastore image id) "
                                "or upload the image as file")
    for value in query.get("check_sum", []):
        algorithm = value.split(":")[0] if ":" in value else "SHA256"
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise ServingError(422, f"parameter check_sum: {algorithm!r} is not one of {list(CHECKSUM_ALGORITHMS)}")
    for name in JSON_PARAMETERS:
        for value in query.get(name, []):
            no_server_keys(json_object(value, name, empty_ok=name == "params"), name)
    fields: dict[str, list[Any]] = {}
    kind = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
    if body and kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        try:
            form = await Request(scope, _replay(body, receive)).form()
        except Exception:  # noqa: BLE001 - a body the parser refuses is answered by the endpoint
            form = None
        if form is not None:
            try:
                for key, value in form.multi_items():
                    fields.setdefault(key, []).append(value)
            finally:
                await form.close()
    for name, values in fields.items():
        for value in values:
            if not isinstance(value, str):
                upload_suffix(value.filename, name)
            elif name in JSON_PARAMETERS:
                no_server_keys(json_object(value, name, empty_ok=name == "params"), name)
    if body and kind.startswith("application/json"):
        try:
            data = json.loads(body)
        except ValueError:
            data = None  # the endpoint answers a body it cannot parse
        no_server_keys(data, "body")
        for name in NAME_KEYS:
            if isinstance(data, dict) and name in data:
                plain_name(data[name], name)
        if scope.get("method") == "POST" and path in ("/train/", "/scoring/") and isinstance(data, dict):
            _check_per_model(data, "trainers" if path == "/train/" else "scoring")
    if scope.get("method") == "POST" and path.startswith("/infer/"):
        if fields.get("label"):
            raise ServingError(422, "parameter label: the served models take no label (scribbles) with the image")
        has_file = any(not isinstance(v, str) for v in fields.get("file", []))
        if not any(query.get("image", [])) and not has_file:
            raise ServingError(422, "parameter image: give a datastore image id (image=...) or upload the image "
                                    "(file=...)")


def _check_per_model(body: dict[str, Any], kind: str) -> None:
    """``POST /train/`` and ``/scoring/`` (every model / method) read ``body[<name>]`` as that one's parameters."""
    from monailabel.interfaces.utils.app import app_instance

    for name in app_instance().info().get(kind, {}):
        if name in body and not isinstance(body[name], dict):
            raise ServingError(422, f"parameter {name}: expected a JSON object of {name!r}'s parameters, got "
                                    f"{type(body[name]).__name__}")


class GuardMiddleware:
    """Request checks, a per-request upload folder and path-free JSON / text answers (see the module docstring).

    Args:
        app: the ASGI app.
        origins: the origins listed for cross-origin access (see :func:`cors_origins`).
        hosts: the DNS names the server may be called by besides ``localhost`` (``--conf hosts``).
    """

    def __init__(self, app: ASGIApp, origins: list[str] | None = None, hosts: list[str] | None = None) -> None:
        self.app = app
        self.origins = list(origins or [])
        self.hosts = list(hosts or [])

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        why = not_served(path)
        refusal = (404, why) if why is not None else None
        if ".." in path.split("/"):
            refusal = (404, "path: no '..' segments")
        origin = foreign_origin(scope, self.origins)
        if origin is not None and scope.get("method") not in READ_METHODS:
            refusal = (403, f"header Origin: {origin!r} is another origin; it may call this server once listed with "
                            "--conf cors_origins")
        host = foreign_host(scope, self.hosts)
        if host is not None:
            refusal = (403, f"header Host: {host!r} is not a name of this server; list its names with --conf hosts")
        if refusal is not None:
            await JSONResponse({"detail": refusal[1]}, status_code=refusal[0])(scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def send_scrubbed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                kind = headers.get(b"content-type", b"").decode("latin-1")
                if kind.startswith(("application/json", "text/")):
                    held["start"], held["body"], held["json"] = message, [], kind.startswith("application/json")
                    return
                await send(message)
                return
            if message["type"] == "http.response.body" and "start" in held:
                held["body"].append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = scrub(b"".join(held["body"]).decode("utf-8", errors="surrogateescape"), path_replacements())
                if held["json"] and '"details"' in body:
                    try:
                        body = json.dumps(drop_tracebacks(json.loads(body)), separators=(",", ":"))
                    except ValueError:
                        pass  # not JSON after all: sent as scrubbed
                data = body.encode("utf-8", errors="surrogateescape")
                start = held.pop("start")
                start["headers"] = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                start["headers"].append((b"content-length", str(len(data)).encode()))
                await send(start)
                await send({"type": "http.response.body", "body": data})
                return
            await send(message)

        with uploads.request_folder():
            has_body = scope.get("method") in ("POST", "PUT", "PATCH", "DELETE")
            body = await _read_body(receive) if has_body else b""
            try:
                await check_request(scope, body, receive)
            except ServingError as err:
                await JSONResponse({"detail": err.message}, status_code=err.status)(scope, receive, send_scrubbed)
                return
            await self.app(scope, _replay(body, receive) if has_body else receive, send_scrubbed)


# These two answers pass through GuardMiddleware (Starlette runs them inside the user middleware), which scrubs them.
async def _serving_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ServingError)
    return JSONResponse({"detail": err.message}, status_code=err.status)


async def _monailabel_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, MONAILabelException)
    return JSONResponse({"detail": str(err.msg)}, status_code=400)


async def _internal_error(request: Request, err: Exception) -> JSONResponse:
    logger.error(f"{request.method} {request.url.path} failed: {type(err).__name__}: {err}", exc_info=err)
    return JSONResponse({"detail": f"internal server error ({type(err).__name__}); the server log has the details"},
                        status_code=500)


async def _proxy_dicom(request: Request, service: str, path: str,
                       user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))) -> Response:
    """``/proxy/dicom/<service>/<path>``: a read of the app's DICOMweb server (see
    :mod:`~modan_monai.apps.monailabel.lib.proxy`)."""
    upstream = dicomweb_upstream()
    if upstream is None:  # GuardMiddleware answers first; this holds without it too
        raise ServingError(404, NOT_SERVED["/proxy/"])
    own_root = f"{request.scope.get('root_path', '')}{settings.MONAI_LABEL_API_STR}{PROXY_PREFIX}/wado"
    answer = await run_in_threadpool(forward, upstream, service, path, request.url.query, dict(request.headers),
                                     request.method, own_root)
    headers = {"content-type": answer.content_type} if answer.content_type else {}
    return Response(answer.body if request.method != "HEAD" else b"", status_code=answer.status, headers=headers)


def _mount_proxy(application: Any) -> None:
    """Put :func:`_proxy_dicom` in front of MONAI Label's proxy routes (every method: a write is refused with a
    405 naming the method); the first matching route answers."""
    route = APIRoute(f"{settings.MONAI_LABEL_API_STR}{PROXY_PREFIX}/{{service}}/{{path:path}}", _proxy_dicom,
                     methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    application.router.routes.insert(0, route)


def _configure(application: Any) -> None:
    origins = cors_origins(str(settings.MONAI_LABEL_APP_CONF.get("cors_origins") or ""),
                           settings.MONAI_LABEL_CORS_ORIGINS)
    application.user_middleware = [m for m in application.user_middleware if m.cls is not CORSMiddleware]
    hosts = [h.strip() for h in str(settings.MONAI_LABEL_APP_CONF.get("hosts") or "").split(",") if h.strip()]
    application.add_middleware(GuardMiddleware, origins=origins, hosts=hosts)
    if origins:
        application.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials="*" not in origins,
                                   allow_methods=["*"], allow_headers=["*"])
    # MONAI Label's app printed "Allow Origins: ['*']" on import: say what holds
    print(f"modan_monai: cross-origin access allowed for {origins or 'no origin'} (--conf cors_origins)")
    application.add_exception_handler(ServingError, _serving_error)
    application.add_exception_handler(MONAILabelException, _monailabel_error)
    application.add_exception_handler(Exception, _internal_error)
    uploads.install()
    _mount_proxy(application)


_configure(app)
