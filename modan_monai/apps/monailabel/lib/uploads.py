"""A temporary folder per HTTP request, removed when the request ends, whether it succeeds or fails.

MONAI Label's endpoints write each upload (and each result file) to a temporary file and delete it in a
background task that runs only after a successful response, so a refused request leaves its upload behind.
:func:`request_folder` gives every request its own folder: while it is open, :func:`tempfile.gettempdir` (which
``tempfile.NamedTemporaryFile`` and ``mkdtemp`` use when given no ``dir``) answers that folder in the request's
context (a :class:`contextvars.ContextVar`, so concurrent requests do not mix), and the folder is deleted with
everything in it when the request is done. :func:`is_request_upload` tells the request's own upload from a path
a client names. Nothing here imports monailabel.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import tempfile
from collections.abc import Iterator

from modan_monai.apps.monailabel.lib.safety import inside

__all__ = ["current_folder", "install", "is_request_upload", "request_folder", "system_tempdir"]

_FOLDER: contextvars.ContextVar[str | None] = contextvars.ContextVar("modan_monai_request_folder", default=None)
_ORIGINAL_GETTEMPDIR = tempfile.gettempdir


def system_tempdir() -> str:
    """The process's temporary folder (what :func:`tempfile.gettempdir` answers outside a request)."""
    return _ORIGINAL_GETTEMPDIR()


def _gettempdir() -> str:
    folder = _FOLDER.get()
    return folder if folder is not None else _ORIGINAL_GETTEMPDIR()


def install() -> None:
    """Make :func:`tempfile.gettempdir` answer the current request's folder (idempotent)."""
    tempfile.gettempdir = _gettempdir


def current_folder() -> str | None:
    """The current request's temporary folder (``None`` outside a request)."""
    return _FOLDER.get()


@contextlib.contextmanager
def request_folder() -> Iterator[str]:
    """A fresh temporary folder for one request, deleted (with all it holds) when the block exits."""
    folder = tempfile.mkdtemp(prefix="modan_monai_request_", dir=_ORIGINAL_GETTEMPDIR())
    token = _FOLDER.set(folder)
    try:
        yield folder
    finally:
        _FOLDER.reset(token)
        shutil.rmtree(folder, ignore_errors=True)


def is_request_upload(path: object) -> bool:
    """Whether ``path`` is a file the current request uploaded (inside its folder)."""
    folder = _FOLDER.get()
    return isinstance(path, str) and folder is not None and inside(path, folder) and os.path.isfile(path)
