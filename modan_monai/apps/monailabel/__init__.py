"""A MONAI Label app serving the ``segment`` and ``classify`` bundles (and training ``segment``).

MONAI Label writes ``model/``, ``logs/``, ``lib/`` and ``bin/`` into the folder it is given as ``--app``, so the
package is not that folder: :func:`write_app_dir` writes a small app folder (its ``main.py`` imports
:class:`modan_monai.apps.monailabel.main.ModanMonaiApp`) wherever the user can write, and
``python -m modan_monai.apps.monailabel`` starts the server on it (see ``__main__``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["APP_MAIN", "default_app_dir", "write_app_dir"]

APP_MAIN = (
    '"""MONAI Label app folder written by modan_monai (python -m modan_monai.apps.monailabel app_dir)."""\n\n'
    "from modan_monai.apps.monailabel.main import ModanMonaiApp  # noqa: F401 (applies the compat fixes first)\n"
)


def default_app_dir() -> Path:
    """``$MODAN_MONAI_MONAILABEL_APP`` if set, else ``~/.cache/modan_monai/monailabel_app``."""
    env = os.environ.get("MODAN_MONAI_MONAILABEL_APP")
    return Path(env) if env else Path.home() / ".cache" / "modan_monai" / "monailabel_app"


def write_app_dir(folder: str | Path | None = None) -> Path:
    """Write (or refresh) the app folder's ``main.py`` and return the folder.

    Raises:
        PermissionError: the folder cannot be written (naming it).
    """
    root = Path(folder) if folder is not None else default_app_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        main = root / "main.py"
        if not main.is_file() or main.read_text() != APP_MAIN:
            main.write_text(APP_MAIN)
    except OSError as err:
        raise PermissionError(f"cannot write the MONAI Label app folder {root}: {err}") from err
    return root.resolve()
