"""A private Orthanc PACS (Debian's ``orthanc`` + ``orthanc-dicomweb``) for the app's DICOMweb route.

:class:`OrthancServer` writes an Orthanc configuration into a folder of the user's (storage and index in
``<folder>/storage`` and ``<folder>/index``, HTTP on a free or given port, remote access refused, HTTP basic
authentication with one generated user, the DICOMweb plugin at ``/dicom-web/``), starts ``Orthanc
<folder>/orthanc.json`` as a child process, waits until ``/dicom-web/studies`` answers, and stops it by its pid
(kept in ``<folder>/orthanc.pid``)::

    with OrthancServer(tmp_path / "pacs") as pacs:
        pacs.upload(Path("slice.dcm").read_bytes())
        # the app: --studies pacs.dicomweb_url, with pacs.env() in its environment

Orthanc binds every interface (``RemoteAccessAllowed: false`` only refuses non-local HTTP clients, and every HTTP
client must authenticate), so the DICOM (DIMSE) server, which has no authentication, is off unless asked for
(``dicom_server=True``). ``python -m modan_monai.apps.monailabel start_orthanc --folder DIR`` /
``stop_orthanc --folder DIR`` do the same from a shell.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "DICOMWEB_PLUGIN",
    "OrthancError",
    "OrthancServer",
    "orthanc_config",
    "stop_orthanc",
]

#: the DICOMweb plugin of Debian's ``orthanc-dicomweb``
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
CONFIG_NAME = "orthanc.json"
PID_NAME = "orthanc.pid"
LOG_NAME = "orthanc.log"


class OrthancError(RuntimeError):
    """Orthanc cannot be configured, started, reached or stopped (the message names the URL, port or file)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def orthanc_config(
    folder: str | Path,
    http_port: int,
    username: str,
    password: str,
    dicom_port: int | None = None,
    plugin: str | Path = DICOMWEB_PLUGIN,
) -> dict[str, Any]:
    """The Orthanc configuration :class:`OrthancServer` writes.

    Args:
        folder: storage and index go to ``<folder>/storage`` and ``<folder>/index``.
        http_port: Orthanc's HTTP port (REST API and DICOMweb).
        username: the one registered user (HTTP basic authentication).
        password: its password.
        dicom_port: the DICOM (DIMSE) port; ``None`` turns Orthanc's DICOM server off.
        plugin: the DICOMweb plugin library.

    Returns:
        the configuration as a JSON-ready dict.
    """
    folder = Path(folder).resolve()
    return {
        "Name": "modan_monai",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": int(http_port),
        "DicomServerEnabled": dicom_port is not None,
        "DicomPort": int(dicom_port) if dicom_port is not None else _free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {username: password},
        "WebDavEnabled": False,
        "SaveJobs": False,
        "DeidentifyLogs": True,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False,
                     "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
    }


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _runs_config(pid: int, config: Path) -> bool:
    """Whether process ``pid`` is an Orthanc run on ``config`` (``True`` where ``/proc`` cannot tell)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return any(a and Path(a.decode(errors="replace")).resolve() == config.resolve() for a in args[1:])


def stop_orthanc(folder: str | Path, timeout: float = 20.0) -> bool:
    """Stop the Orthanc started in ``folder`` (by the pid in ``<folder>/orthanc.pid``) and remove the pid file.

    Returns:
        ``True`` when a running Orthanc was stopped, ``False`` when there was none (no pid file, or its process
        has ended).

    Raises:
        OrthancError: the pid file is not a pid, or the process did not end within ``timeout`` (naming them).
    """
    pid_file = Path(folder) / PID_NAME
    if not pid_file.is_file():
        return False
    text = pid_file.read_text().strip()
    if not text.isdigit():
        raise OrthancError(f"{pid_file}: {text!r} is not a process id")
    pid = int(text)
    if not _pid_alive(pid) or not _runs_config(pid, Path(folder) / CONFIG_NAME):
        pid_file.unlink()  # stale: the process ended (its pid may now be another program's)
        return False
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:  # our own child: reap it; another process's: poll it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            if not _pid_alive(pid):
                break
        time.sleep(0.1)
    else:
        raise OrthancError(f"Orthanc (pid {pid}, {pid_file}) did not stop within {timeout:.0f} s")
    pid_file.unlink()
    return True


class OrthancServer:
    """Orthanc with the DICOMweb plugin on 127.0.0.1, configured in and stopped by a folder (module docstring).

    Args:
        folder: the folder of the configuration (``orthanc.json``, mode 600: it holds the password), the pid and
            log files, and Orthanc's storage and index.
        http_port: HTTP port (default: a free one).
        dicom_port: DICOM (DIMSE) port; ``None`` (default) leaves Orthanc's unauthenticated DICOM server off.
        username: the registered user (default ``modan``).
        password: its password (default: a new random one).
        executable: the Orthanc program (default: ``Orthanc`` on ``PATH``).
        plugin: the DICOMweb plugin library.
        timeout: seconds to wait for ``/dicom-web/studies`` to answer.
        extra_config: more Orthanc configuration keys (e.g. ``LuaScripts``), over the generated ones.

    Attributes:
        url: ``http://127.0.0.1:<http_port>`` (Orthanc's REST API).
        dicomweb_url: ``<url>/dicom-web`` (what the app's ``--studies`` takes).
        config_file, pid_file, log_file: the files in ``folder``.

    Example:
        >>> with OrthancServer("/tmp/pacs") as pacs:  # doctest: +SKIP
        ...     pacs.upload(open("slice.dcm", "rb").read())
    """

    def __init__(
        self,
        folder: str | Path,
        http_port: int | None = None,
        dicom_port: int | None = None,
        username: str = "modan",
        password: str | None = None,
        executable: str = "Orthanc",
        plugin: str | Path = DICOMWEB_PLUGIN,
        timeout: float = 60.0,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.http_port = int(http_port) if http_port else _free_port()
        self.dicom_port = dicom_port
        self.username = username
        self.password = password or secrets.token_urlsafe(18)
        self.executable = executable
        self.plugin = Path(plugin)
        self.timeout = float(timeout)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.config_file = self.folder / CONFIG_NAME
        self.pid_file = self.folder / PID_NAME
        self.log_file = self.folder / LOG_NAME
        self.extra_config = dict(extra_config or {})
        self.process: subprocess.Popen | None = None

    # -- configuration and process ----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment variables MONAI Label reads the DICOMweb credentials from."""
        return {"MONAI_LABEL_DICOMWEB_USERNAME": self.username, "MONAI_LABEL_DICOMWEB_PASSWORD": self.password}

    def write_config(self) -> Path:
        """Write ``orthanc.json`` (mode 600) and return its path.

        Raises:
            OrthancError: the Orthanc program or the DICOMweb plugin is missing, or the folder cannot be written.
        """
        if shutil.which(self.executable) is None:
            raise OrthancError(f"Orthanc program {self.executable!r} not found on PATH (Debian: apt-get install "
                               "orthanc orthanc-dicomweb)")
        if not self.plugin.is_file():
            raise OrthancError(f"Orthanc DICOMweb plugin {self.plugin} not found (Debian: apt-get install "
                               "orthanc-dicomweb)")
        config = orthanc_config(self.folder, self.http_port, self.username, self.password, self.dicom_port,
                                self.plugin)
        config.update(self.extra_config)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(config, f, indent=2)
            os.chmod(self.config_file, 0o600)
        except OSError as err:
            raise OrthancError(f"cannot write the Orthanc configuration {self.config_file}: {err}") from err
        return self.config_file

    def start(self, detach: bool = False) -> OrthancServer:
        """Write the configuration, start Orthanc, record its pid, and wait until ``/dicom-web/studies`` answers.

        Args:
            detach: run Orthanc in its own session (it outlives this Python: the ``start_orthanc`` command).

        Raises:
            OrthancError: Orthanc is already running from this folder, exited, or did not answer within
                ``timeout`` (naming the URL, port, configuration and log file, and quoting the log's end).
        """
        if self.pid_file.is_file() and self.pid_file.read_text().strip().isdigit() \
                and _pid_alive(int(self.pid_file.read_text().strip())):
            raise OrthancError(f"an Orthanc started from {self.folder} is running (pid file {self.pid_file}); "
                               f"stop it first (stop_orthanc --folder {self.folder})")
        self.write_config()
        with open(self.log_file, "w") as log:
            self.process = subprocess.Popen([self.executable, str(self.config_file)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.folder, start_new_session=detach)
        self.pid_file.write_text(f"{self.process.pid}\n")
        try:
            self._wait()
        except OrthancError:
            self.stop()
            raise
        return self

    def _wait(self) -> None:
        end = time.monotonic() + self.timeout
        last = "no answer"
        while time.monotonic() < end:
            if self.process is not None and self.process.poll() is not None:
                raise OrthancError(self._failure(f"exited with code {self.process.returncode}"))
            try:
                self.request("GET", "/dicom-web/studies", timeout=5)
                return
            except OrthancError as err:
                last = str(err)
            time.sleep(0.2)
        raise OrthancError(self._failure(f"did not answer within {self.timeout:.0f} s ({last})"))

    def _failure(self, what: str) -> str:
        tail = ""
        if self.log_file.is_file():
            tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-8:])
        return (f"Orthanc ({self.executable} {self.config_file}) {what}: {self.dicomweb_url}/studies on HTTP port "
                f"{self.http_port}; log {self.log_file}" + (f":\n{tail}" if tail else ""))

    def stop(self) -> None:
        """Stop Orthanc by its pid (see :func:`stop_orthanc`); nothing happens when it is not running."""
        stop_orthanc(self.folder)
        if self.process is not None:
            self.process.poll()
            self.process = None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- HTTP -------------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, data: bytes | None = None, content_type: str | None = None,
                timeout: float = 30.0) -> bytes:
        """An authenticated request to Orthanc; returns the answer's body.

        Raises:
            OrthancError: no answer, or an HTTP error (naming the method, URL and status).
        """
        url = self.url + path
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return answer.read()
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")[:300]
            raise OrthancError(f"{method} {url}: HTTP {err.code} {body}") from err
        except (urllib.error.URLError, OSError) as err:
            raise OrthancError(f"{method} {url}: {getattr(err, 'reason', err)}") from err

    def upload(self, dicom: bytes) -> dict[str, Any]:
        """Store one DICOM file's bytes (``POST /instances``); returns Orthanc's answer (``ID``,
        ``ParentStudy``, ``ParentSeries``, ``Status`` ...)."""
        return json.loads(self.request("POST", "/instances", dicom, "application/dicom"))

    def get_json(self, path: str) -> Any:
        """``GET <url><path>`` as JSON (e.g. ``/studies``, ``/series/<id>``)."""
        return json.loads(self.request("GET", path))
