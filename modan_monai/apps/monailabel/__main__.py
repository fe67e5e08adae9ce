"""``python -m modan_monai.apps.monailabel``: the app folder, and the MONAI Label server on it.

Usage::

    python -m modan_monai.apps.monailabel app_dir [FOLDER]      # write the app folder, print its path
    python -m modan_monai.apps.monailabel start_server --studies STUDIES [--conf KEY VALUE ...] [monailabel options]

``start_server`` is ``monailabel start_server`` (all its options) run by this Python, with
:mod:`~modan_monai.apps.monailabel.compat` applied first, ``--app`` defaulting to the app folder (a given ``--app`` folder without ``main.py`` gets the app's), ``--host``
to ``127.0.0.1`` (MONAI Label's own default, ``0.0.0.0``, listens on every interface) and ``--uvicorn_app`` to
:mod:`modan_monai.apps.monailabel.server` (no cross-origin access unless ``--conf cors_origins`` lists origins).
"""

from __future__ import annotations

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


def main(argv: list[str] | None = None) -> None:
    """Run the command line (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if argv[0] == "app_dir":
        print(write_app_dir(argv[1] if len(argv) > 1 else None))
        return
    if argv[0] != "start_server":
        sys.exit(f"unknown command {argv[0]!r}: use app_dir or start_server (see --help)")
    from modan_monai.apps.monailabel import compat

    compat.apply()
    rest = argv[1:]
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
