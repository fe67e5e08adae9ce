"""The DICOMweb proxy the bundled OHIF viewer reads studies through, locked to the app's DICOMweb server.

OHIF (served by MONAI Label at ``/ohif/``) asks the app, not the PACS, for studies: its data source reads
``/proxy/dicom/qido/<path>`` (QIDO-RS searches) and ``/proxy/dicom/wado/<path>`` (WADO-RS metadata, frames,
bulk data). The app forwards such a request to the DICOMweb server it serves as its datastore (``--studies
http://host:port/dicom-web``) with the server's credentials (``MONAI_LABEL_DICOMWEB_USERNAME`` /
``MONAI_LABEL_DICOMWEB_PASSWORD``), so the browser never holds them. Unlike MONAI Label's own proxy:

- the target is the configured server only: nothing in a request chooses scheme, host, port or the root path;
  each path segment must be a DICOMweb word, UID or frame list (letters, digits, ``. , _ -``, no ``..``), and
  query keys are plain words;
- only reads (``GET`` / ``HEAD``) of QIDO-RS and WADO-RS; STOW-RS and the other DICOMweb services are not opened;
- the browser's headers are not passed on (no cookie, no ``Authorization``), only ``Accept``;
- an answer keeps its status, body and content type; the server's own URL in JSON metadata (``BulkDataURI``,
  ``RetrieveURL``) is rewritten to the proxy's, so OHIF fetches bulk data through the app;
- the server's errors are not passed on: its text may name its internals. An unreachable server, a redirect,
  refused credentials or a server error become a 502 that names the server only as configured (its URL without
  user name or password), a 404 stays a 404 naming the requested path; the server log has the rest.

Nothing here imports monailabel (:mod:`~modan_monai.apps.monailabel.server` mounts :func:`forward` on
``/proxy/dicom/{service}/{path}``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from modan_monai.apps.monailabel.lib.bundle import ServingError

__all__ = ["SERVICES", "DicomWebUpstream", "ProxyAnswer", "forward", "upstream_url"]

logger = logging.getLogger(__name__)

#: the DICOMweb services OHIF reads through the proxy (``/proxy/dicom/<service>/...``)
SERVICES = ("qido", "wado")
#: a path segment: a DICOMweb resource word (``studies``, ``metadata``, ``frames`` ...), a UID or a frame list
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.,_-]{0,127}")
#: a query key (``limit``, ``includefield``, ``00100020``, ``StudyDate`` ...)
_QUERY_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: the most path segments (``studies/<uid>/series/<uid>/instances/<uid>/frames/<list>`` is 8)
MAX_SEGMENTS = 10
#: the longest query value accepted (characters)
MAX_QUERY_VALUE = 256
#: the request headers passed on (the rest, cookies and ``Authorization`` included, stay with the app)
FORWARDED_HEADERS = ("accept",)
#: JSON content types whose bodies may name the server's own URL
_JSON_TYPES = ("application/dicom+json", "application/json")


@dataclass(frozen=True)
class DicomWebUpstream:
    """The DICOMweb server the proxy forwards to (the app's ``--studies`` URL) and how.

    Args:
        url: its root URL, ``http(s)://host[:port]/path`` (``--studies``).
        username: basic-auth user name (``MONAI_LABEL_DICOMWEB_USERNAME``); empty for none.
        password: basic-auth password (``MONAI_LABEL_DICOMWEB_PASSWORD``).
        qido_prefix: path under ``url`` of the QIDO-RS service (MONAI Label's ``MONAI_LABEL_QIDO_PREFIX``).
        wado_prefix: path under ``url`` of the WADO-RS service (``MONAI_LABEL_WADO_PREFIX``).
        timeout: seconds to wait for the server to connect and to answer.

    Raises:
        ValueError: ``url`` is not an ``http(s)`` URL with a host, or has a query or fragment.

    Example:
        >>> DicomWebUpstream("http://user:pw@127.0.0.1:8042/dicom-web/").name
        'http://127.0.0.1:8042/dicom-web'
    """

    url: str
    username: str = ""
    password: str = ""
    qido_prefix: str | None = None
    wado_prefix: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"--studies {self.name!r}: the DICOMweb proxy needs an http(s)://host[:port]/path URL")

    @property
    def name(self) -> str:
        """The server's URL as configured, without user name, password, query or trailing ``/``."""
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))

    @property
    def auth(self) -> tuple[str, str] | None:
        """Basic-auth credentials, when both are set."""
        return (self.username, self.password) if self.username and self.password else None


@dataclass(frozen=True)
class ProxyAnswer:
    """What the proxy answers: the upstream's status, content type and body (with the server's URL rewritten)."""

    status: int
    content_type: str
    body: bytes


def _segments(path: str) -> list[str]:
    """``path``'s segments, each checked (a 404 naming ``path`` otherwise)."""
    segments = path.split("/")
    if not path or len(segments) > MAX_SEGMENTS:
        raise ServingError(404, f"path: {path[:200]!r} is not a DICOMweb resource path (studies/<uid>/...)")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or ".." in segment:
            raise ServingError(404, f"path: segment {segment[:130]!r} of {path[:200]!r} is neither a DICOMweb "
                                    "word nor a UID; the proxy reads studies of the app's DICOMweb server only")
    return segments


def _query(query: str) -> str:
    """``query`` parsed and encoded again, each key a plain word and each value short, without control characters
    (a 400 naming the key otherwise)."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=64)
    except ValueError as err:
        raise ServingError(400, f"query: {query[:200]!r} is not a query string ({err})") from None
    for key, value in pairs:
        if not _QUERY_KEY.fullmatch(key):
            raise ServingError(400, f"query parameter {key[:70]!r}: not a DICOMweb query key")
        if len(value) > MAX_QUERY_VALUE:
            raise ServingError(400, f"query parameter {key}: the value is longer than {MAX_QUERY_VALUE} characters")
        if any(unicodedata.category(c) == "Cc" for c in value):
            raise ServingError(400, f"query parameter {key}: the value holds a control character")
    return urlencode(pairs)


def upstream_url(upstream: DicomWebUpstream, service: str, path: str, query: str = "") -> str:
    """The URL on ``upstream`` that ``/proxy/dicom/<service>/<path>?<query>`` reads.

    Args:
        upstream: the configured DICOMweb server.
        service: ``qido`` or ``wado`` (MONAI Label's prefix settings apply; metadata is always WADO-RS).
        path: the resource path under the service (``studies``, ``studies/<uid>/series/<uid>/metadata`` ...).
        query: the raw query string.

    Raises:
        ServingError: (404) an unknown service or a path segment that is not a DICOMweb word, UID or frame list;
            (400) a query that is not a plain one (naming the key).

    Example:
        >>> upstream_url(DicomWebUpstream("http://127.0.0.1:8042/dicom-web"), "qido", "studies", "limit=25")
        'http://127.0.0.1:8042/dicom-web/studies?limit=25'
    """
    if service not in SERVICES:
        raise ServingError(404, f"path: the DICOMweb proxy serves {['/proxy/dicom/' + s for s in SERVICES]}, "
                                f"not {service[:40]!r}")
    segments = _segments(path)
    prefix = upstream.qido_prefix if service == "qido" and segments[-1] != "metadata" else upstream.wado_prefix
    base = urlsplit(upstream.url)
    root = base.path.rstrip("/")
    if prefix:
        root += "/" + "/".join(_segments(prefix.strip("/")))
    url = urlunsplit((base.scheme, base.netloc, root + "/" + "/".join(segments), _query(query), ""))
    target = urlsplit(url)
    # belt and braces: whatever the request held, the URL stays on the configured server and under its root
    if (target.scheme, target.netloc) != (base.scheme, base.netloc) or not target.path.startswith(root + "/"):
        raise ServingError(404, f"path: {path[:200]!r} leads off the app's DICOMweb server")
    return url


def _rewrite(body: bytes, upstream: DicomWebUpstream, own_root: str) -> bytes:
    """``body`` with the server's WADO-RS root URL replaced by the proxy's (``own_root``)."""
    server_root = upstream.name
    if upstream.wado_prefix:
        server_root += "/" + upstream.wado_prefix.strip("/")
    return body.replace(server_root.encode() + b"/", own_root.rstrip("/").encode() + b"/")


def forward(upstream: DicomWebUpstream, service: str, path: str, query: str = "",
            headers: dict[str, str] | None = None, method: str = "GET", own_root: str = "/proxy/dicom/wado",
            session: requests.Session | None = None) -> ProxyAnswer:
    """Read ``/proxy/dicom/<service>/<path>?<query>`` from ``upstream`` (see the module docstring).

    Args:
        upstream: the configured DICOMweb server.
        service: ``qido`` or ``wado``.
        path: the resource path under the service.
        query: the raw query string.
        headers: the request's headers (lower-case names); only ``accept`` is passed on.
        method: ``GET`` or ``HEAD``.
        own_root: the proxy's WADO-RS root as the browser reaches it (replaces the server's URL in JSON bodies).
        session: a ``requests`` session to send with (default: a new request).

    Returns:
        The answer to send: the server's status, content type and body for a success or a 404.

    Raises:
        ServingError: (404 / 400) see :func:`upstream_url`; (405) another method; (502) the server did not answer,
            redirected, refused the credentials or failed (naming it by :attr:`DicomWebUpstream.name`).
    """
    if method not in ("GET", "HEAD"):
        raise ServingError(405, f"method {method[:10]}: the DICOMweb proxy only reads (GET); studies are stored by "
                                "the app's DICOMweb datastore")
    url = upstream_url(upstream, service, path, query)
    sent = {k.title(): v for k, v in (headers or {}).items() if k.lower() in FORWARDED_HEADERS}
    try:
        response = (session or requests).request(method, url, auth=upstream.auth, headers=sent,
                                                 timeout=upstream.timeout, allow_redirects=False)
    except requests.RequestException as err:
        logger.warning(f"DICOMweb proxy: {method} {url} failed: {type(err).__name__}: {err}")
        raise ServingError(502, f"the DICOMweb server {upstream.name} did not answer ({type(err).__name__})") from None
    status = response.status_code
    if status < 300 or status == 404:
        if status == 404:
            logger.info(f"DICOMweb proxy: {url} answered 404")
            raise ServingError(404, f"path: {service}/{path[:200]} is not on the DICOMweb server {upstream.name}")
        kind = response.headers.get("content-type", "")
        body = response.content
        if kind.split(";")[0].strip().lower() in _JSON_TYPES:
            body = _rewrite(body, upstream, own_root)
        return ProxyAnswer(status, kind, body)
    logger.warning(f"DICOMweb proxy: {method} {url} answered {status}: {response.text[:500]!r}")
    if status in (401, 403):
        why = "refused the app's credentials (MONAI_LABEL_DICOMWEB_USERNAME / MONAI_LABEL_DICOMWEB_PASSWORD)"
    elif status < 400:
        why = f"answered with a redirect ({status}), which the proxy does not follow"
    elif status < 500:
        why = f"refused the request ({status})"
    else:
        why = f"failed ({status})"
    raise ServingError(502, f"the DICOMweb server {upstream.name} {why}; the app's log has the details")
