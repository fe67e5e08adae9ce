"""Start the app's MONAI Label server as a child process on a free loopback port, and stop it.

For scripts and tests that talk to a real server (``scripts/bench_monailabel.py``, the loopback test)::

    with LocalServer(studies, conf={"segment_model": "model.pt"}) as server:
        requests.get(server.url + "/info/")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["LocalServer", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``python -m modan_monai.apps.monailabel start_server`` on 127.0.0.1, polled until ``/info/`` answers.

    Args:
        studies: the datastore folder.
        conf: ``--conf`` pairs.
        app_dir: the app folder (default: ``monailabel_app`` beside the log file).
        log_file: where the server's output goes (default ``<studies>.server.log``).
        timeout: seconds to wait for the server to answer.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        start_seconds: wall time from the process start to the first ``/info/`` answer.
    """

    def __init__(
        self,
        studies: str | Path,
        conf: Mapping[str, str] | None = None,
        app_dir: str | Path | None = None,
        log_file: str | Path | None = None,
        timeout: float = 180.0,
    ) -> None:
        remote = str(studies).startswith(("http://", "https://"))  # a DICOMweb URL: no folder, name a log file
        if remote and log_file is None:
            raise ValueError(f"LocalServer on the DICOMweb studies {studies}: give log_file")
        self.studies = str(studies) if remote else Path(studies)
        self.conf = dict(conf or {})
        self.log_file = Path(log_file) if log_file else self.studies.with_name(self.studies.name + ".server.log")
        self.app_dir = Path(app_dir) if app_dir else self.log_file.with_name("monailabel_app")
        self.timeout = float(timeout)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start_seconds = float("nan")

    def start(self) -> LocalServer:
        """Start the server and wait for ``/info/``.

        Raises:
            RuntimeError: the process exited or did not answer within ``timeout`` (naming the log file and
                quoting its end).
        """
        cmd = [sys.executable, "-m", "modan_monai.apps.monailabel", "start_server", "--app", str(self.app_dir),
               "--studies", str(self.studies), "--port", str(self.port)]
        for key, value in self.conf.items():
            cmd += ["--conf", key, str(value)]
        begin = time.monotonic()
        log = open(self.log_file, "w")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        log.close()
        while time.monotonic() - begin < self.timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"MONAI Label server exited with {self.process.returncode}; see {self.log_file}: "
                                   + self._tail())
            try:
                with urllib.request.urlopen(self.url + "/info/", timeout=5) as response:
                    if response.status == 200:
                        self.start_seconds = time.monotonic() - begin
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"MONAI Label server did not answer in {self.timeout:.0f} s; see {self.log_file}: "
                           + self._tail())

    def _tail(self) -> str:
        lines = self.log_file.read_text(errors="replace").strip().splitlines() if self.log_file.is_file() else []
        return " | ".join(lines[-5:])

    def stop(self) -> None:
        """Terminate the process (by its id), killing it after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
