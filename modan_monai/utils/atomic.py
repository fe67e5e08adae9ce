"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A process killed while writing (SIGKILL, power loss after the ``fsync``) leaves either the previous
file or the new one, never a truncated file under the final name. The temporaries are named
``.<name>.<pid>.<token>.tmp`` so that globs for the final names (``checkpoint_epoch=*.pt``) never
match them; :func:`remove_stale_temporaries` deletes those left by killed writers.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_path", "atomic_save", "remove_stale_temporaries"]


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
    on one file system. If the body raises, the temporary is deleted and ``path`` is untouched.

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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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
