"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A process killed while writing (SIGKILL, power loss after the ``fsync``) leaves either the previous
file or the new one, never a truncated file under the final name. The temporaries are named
``.<name>.<pid>.<token>.tmp`` so that globs for the final names (``checkpoint_epoch=*.pt``) never
match them; :func:`remove_stale_temporaries` deletes those left by killed writers.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "append_complete_lines",
    "atomic_append_text",
    "atomic_path",
    "atomic_save",
    "atomic_write_text",
    "remove_stale_temporaries",
]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable on POSIX; folders cannot be opened this way on Windows
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Give a temporary path to write; on success it replaces ``path`` atomically.

    The temporary lies in the folder of ``path`` (created if needed), so ``os.replace`` is a rename
    on one file system. If the body raises, the temporary is deleted and ``path`` is untouched; a full disk
    (``ENOSPC``) is raised as an ``OSError`` naming ``path`` and "no space left on device".

    Args:
        path: the final file.

    Yields:
        The temporary path to write (it does not exist yet).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with atomic_path(folder / "a.txt") as tmp:
        ...     _ = tmp.write_text("done")
        >>> (folder / "a.txt").read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise _disk_full(path) from err
        raise
    _fsync_dir(path.parent)


def _disk_full(path: Path) -> OSError:
    """The error of a write that found the disk full, naming the file (``OSError`` with ``errno.ENOSPC``)."""
    return OSError(errno.ENOSPC, f"no space left on device: {path} was not written (a previous version, if any, is "
                                 "kept); free some space and run the same command again")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_path`.

    Args:
        obj: what to save (for ``torch.load(weights_only=True)``: tensors and plain values).
        path: the final file.

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`.

    Args:
        path: the final file.
        text: its whole content.

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def atomic_append_text(path: str | Path, text: str) -> Path:
    """Append ``text`` to ``path`` atomically: the old content and ``text`` go to a temporary that replaces it.

    A killed write leaves the file as it was before the call, never a half-written last line. The whole file is
    copied, so use it for small files that mark progress (``results.csv``: one line per finished fold); for large
    logs see :func:`append_complete_lines`.

    Args:
        path: the file (created if missing).
        text: what to add (complete lines, ending with a newline).

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as out:
            if path.is_file():
                with open(path, "rb") as old:
                    shutil.copyfileobj(old, out)
            out.write(text.encode("utf-8"))
    return path


def append_complete_lines(path: str | Path, text: str) -> Path:
    """Append complete lines to a large file in place, first dropping a partial last line a killed write left.

    The append is not atomic (copying a large file at every append would cost its size each time), but no line
    is ever half there for long: a file that does not end with a newline lost its last write midway, and that
    partial line is cut off (with a warning) before ``text`` is added. Write the lines a later run depends on
    (its resume key) after these, with :func:`atomic_append_text`, so that a cut line is written again.

    Args:
        path: the file (created if missing).
        text: complete lines, ending with a newline.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _append_complete_lines(path, text)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise _disk_full(path) from err
        raise


def _append_complete_lines(path: Path, text: str) -> Path:
    with open(path, "ab+") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(max(0, size - 65536))
            tail = f.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                keep = size - len(tail) + cut + 1 if cut >= 0 else 0
                if cut < 0 and size > len(tail):
                    raise ValueError(f"{path} ends with a line over 64 KiB without a newline: not a file of lines")
                f.truncate(keep)
                logging.getLogger(__name__).warning(
                    f"{path}: removed a partial last line ({size - keep} bytes) that an interrupted write left"
                )
        f.write(text.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    return path


def remove_stale_temporaries(folder: str | Path, pattern: str) -> list[Path]:
    """Delete the temporaries that :func:`atomic_path` left for files named ``pattern`` in ``folder``.

    Only call this when no other process writes such files in ``folder``.

    Args:
        folder: the folder of the final files.
        pattern: glob of the final names, e.g. ``"checkpoint_epoch=*.pt"``.

    Returns:
        The deleted paths.
    """
    removed = []
    for tmp in Path(folder).glob(f".{pattern}.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
