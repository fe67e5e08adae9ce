"""``python -m modan_monai.apps.monailabel``: the app folder, and the MONAI Label server on it.

Usage::

    python -m modan_monai.apps.monailabel app_dir [FOLDER]      # write the app folder, print its path
    python -m modan_monai.apps.monailabel start_server --studies STUDIES [--conf KEY VALUE ...] [monailabel options]
    python -m modan_monai.apps.monailabel start_orthanc --folder DIR [--port PORT] [--dicom-port PORT] [--username NAME]
    python -m modan_monai.apps.monailabel stop_orthanc --folder DIR

``start_server`` is ``monailabel start_server`` (all its options) run by this Python, with
:mod:`~modan_monai.apps.monailabel.compat` applied first, ``--app`` defaulting to the app folder (a given ``--app`` folder without ``main.py`` gets the app's), ``--host``
to ``127.0.0.1`` (MONAI Label's own default, ``0.0.0.0``, listens on every interface) and ``--uvicorn_app`` to
:mod:`modan_monai.apps.monailabel.server` (no cross-origin access unless ``--conf cors_origins`` lists origins).

A DICOMweb ``--studies`` URL is checked first: an unreachable server or refused credentials
(``MONAI_LABEL_DICOMWEB_USERNAME`` / ``..._PASSWORD``) end the command with one error naming the URL.

``start_orthanc`` writes an Orthanc configuration into ``DIR`` (storage, index, generated credentials, DICOMweb at
``/dicom-web/``; see :mod:`~modan_monai.apps.monailabel.lib.orthanc`), starts Orthanc in the background on
127.0.0.1 and prints the command that starts the app on it; ``stop_orthanc`` stops it by its pid.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from modan_monai.apps.monailabel import write_app_dir


def _has(argv: list[str], *flags: str) -> bool:
    return any(a in flags or any(a.startswith(f + "=") for f in flags) for a in argv)


def _value(argv: list[str], *flags: str) -> str | None:
    for i, a in enumerate(argv):
        if a in flags and i + 1 < len(argv):
            return argv[i + 1]
        for f in flags:
            if a.startswith(f + "="):
                return a[len(f) + 1:]
    return None


def _orthanc(command: str, args: list[str]) -> None:
    """``start_orthanc`` / ``stop_orthanc`` (exits with the error's message, no traceback)."""
    from modan_monai.apps.monailabel.lib.orthanc import OrthancError, OrthancServer, stop_orthanc

    parser = argparse.ArgumentParser(prog=f"python -m modan_monai.apps.monailabel {command}")
    parser.add_argument("--folder", required=True, help="folder of the configuration, storage, pid and log")
    if command == "start_orthanc":
        parser.add_argument("--port", type=int, default=8042, help="HTTP port (default 8042)")
        parser.add_argument("--dicom-port", type=int, default=None,
                            help="DICOM (DIMSE) port; default: Orthanc's unauthenticated DICOM server is off")
        parser.add_argument("--username", default="modan", help="the registered user (default modan)")
    opts = parser.parse_args(args)
    try:
        if command == "stop_orthanc":
            stopped = stop_orthanc(opts.folder)
            print(f"Orthanc {'stopped' if stopped else 'was not running'} ({opts.folder})")
            return
        pacs = OrthancServer(opts.folder, http_port=opts.port, dicom_port=opts.dicom_port,
                             username=opts.username).start(detach=True)
    except OrthancError as err:
        sys.exit(f"{command}: {err}")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in pacs.env().items())
    print(f"Orthanc is serving DICOMweb at {pacs.dicomweb_url} (pid {pacs.process.pid}, configuration "
          f"{pacs.config_file}, log {pacs.log_file}); stop it with:\n"
          f"  {shlex.quote(sys.executable)} -m modan_monai.apps.monailabel stop_orthanc --folder "
          f"{shlex.quote(str(pacs.folder))}\n"
          "Start the app on it with:\n"
          f"  {env} {shlex.quote(sys.executable)} -m modan_monai.apps.monailabel start_server --studies "
          f"{pacs.dicomweb_url}")


def main(argv: list[str] | None = None) -> None:
    """Run the command line (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if argv[0] == "app_dir":
        print(write_app_dir(argv[1] if len(argv) > 1 else None))
        return
    if argv[0] in ("start_orthanc", "stop_orthanc"):
        _orthanc(argv[0], argv[1:])
        return
    if argv[0] != "start_server":
        sys.exit(f"unknown command {argv[0]!r}: use app_dir, start_server, start_orthanc or stop_orthanc (see "
                 "--help)")
    from modan_monai.apps.monailabel import compat

    compat.apply()
    rest = argv[1:]
    studies = _value(rest, "-s", "--studies")
    if studies and studies.startswith(("http://", "https://")):
        from modan_monai.apps.monailabel.lib.dicomweb import DICOMwebError, check_dicomweb, dicomweb_session

        try:  # before the server starts: its start-up failure would end in a traceback
            check_dicomweb(studies.rstrip("/"), dicomweb_session())
        except DICOMwebError as err:
            sys.exit(f"start_server: {err}")
    app = _value(rest, "-a", "--app")
    if app is None:
        rest = ["--app", str(write_app_dir()), *rest]
    elif not (Path(app) / "main.py").is_file():
        write_app_dir(app)
    if not _has(rest, "-i", "--host"):
        rest = ["--host", "127.0.0.1", *rest]
    if not _has(rest, "--uvicorn_app"):
        rest = ["--uvicorn_app", "modan_monai.apps.monailabel.server:app", *rest]
    from monailabel.main import Main

    sys.argv = ["monailabel", "start_server", *rest]
    Main().run()


if __name__ == "__main__":
    main()
