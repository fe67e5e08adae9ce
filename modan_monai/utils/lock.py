"""One run per output folder: a lock file naming the process that writes into the folder.

Two training runs writing into one ``output_dir`` delete each other's checkpoints and mix their TensorBoard
event files; two ``run_cv.py`` runs into one ``--out`` write every fold twice. :class:`RunLock` prevents it:

- :meth:`RunLock.acquire` creates ``<folder>/.run.lock`` atomically (a complete temporary file hard-linked to
  the final name, which fails when the name exists) holding the owner's pid, host, start time and command
  line, as JSON;
- a second run into the folder, while the owner lives, gets a :class:`RunLockError` naming the folder, the pid
  and the host holding it (and the owner's command line);
- a lock left by a dead process of the same host (a run killed with SIGKILL) is taken over with a warning; a
  lock of another host cannot be checked and is refused, saying to delete the file when that run is gone. The
  takeover is atomic: it runs under an exclusive ``flock`` of the folder itself (released by the kernel if the
  process dies), re-reads the lock there and deletes it only if it is still the stale one it judged, so of
  several runs racing for one stale lock exactly one gets it;
- the same process may take the lock of a folder again (a count, released when it drops to zero), and may
  hold several folders at once (``run_cv.py`` locks ``--out``, each fold's classify bundle its subfolder);
- every lock still held is released when the process exits (``atexit``, also after an error); a forked child
  never releases its parent's locks;
- while a process holds a lock, SIGTERM raises ``KeyboardInterrupt`` in it as Ctrl-C does
  (:func:`~modan_monai.utils.interrupt.sigterm_as_interrupt`), so a run stopped by ``kill`` or a scheduler at
  any point, its start-up included, still releases the lock and ends with one line.

In a distributed run (env ``RANK`` set) only global rank 0 takes the lock: the other ranks share its folder.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from .distributed import process_rank
from .interrupt import sigterm_as_interrupt

__all__ = ["LOCK_NAME", "RunLock", "RunLockError", "lock_output_dir"]

#: name of the lock file inside the locked folder
LOCK_NAME = ".run.lock"

logger = logging.getLogger(__name__)

#: resolved lock file -> [owner pid, hold count] of the locks this process holds
_HELD: dict[Path, list[int]] = {}
_GUARD = threading.Lock()
#: SIGTERM as an interrupt while this process holds any lock (entered with the first, closed with the last)
_SIGTERM = contextlib.ExitStack()


class RunLockError(RuntimeError):
    """Another live run holds the lock of the output folder (or its lock file cannot be read)."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


@contextlib.contextmanager
def _takeover_guard(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` of ``folder`` (no extra file; the kernel drops it when the process dies)."""
    import fcntl  # POSIX (Linux, macOS), as is the pid check that judges a lock stale

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def _read(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _describe(info: dict[str, Any]) -> str:
    command = info.get("command")
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {info.get('pid')} on host {info.get('host')!r} (started {when}; command: {command})"


class RunLock:
    """The lock of one output folder: ``<folder>/.run.lock`` holding the owning pid and host.

    Args:
        folder: the run's output folder (created if missing).
        what: how the folder is given, named in the messages (``"output_dir"``, ``"--out"``).
        name: the lock file's name inside ``folder``.

    Raises:
        RunLockError: (``acquire``) another live process holds the folder (naming the folder, its pid, host and
            command line), the lock belongs to another host, the lock file cannot be read, or the folder's path is
            a file.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with RunLock(folder) as lock:
        ...     (Path(folder) / LOCK_NAME).is_file()
        True
        >>> (Path(folder) / LOCK_NAME).exists()
        False
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "output_dir", name: str = LOCK_NAME) -> None:
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder / name
        self._key: Path | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (in this process)."""
        return self._key is not None and self._key in _HELD and _HELD[self._key][0] == os.getpid()

    def acquire(self) -> RunLock:
        """Take the lock (again, when this process holds it already); returns ``self``.

        Raises:
            RunLockError: see the class.
        """
        if process_rank() != 0:
            return self  # distributed ranks other than 0 share rank 0's folder
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # the folder, or a folder above it, is a file
            blocking = next((p for p in (self.folder, *self.folder.parents) if p.exists() and not p.is_dir()),
                            self.folder)
            raise RunLockError(
                f"{self.what} {self.folder} cannot be used as an output folder: {blocking} is a file, not a folder; "
                f"choose another {self.what} or move that file away."
            ) from None
        key = self.folder.resolve() / self.path.name
        with _GUARD:
            entry = _HELD.get(key)
            if entry is not None and entry[0] == os.getpid():  # held by this process (this object or another)
                entry[1] += 1
                self._key = key
                return self
            self._create()
            if not _HELD:
                _SIGTERM.enter_context(sigterm_as_interrupt())
            _HELD[key] = [os.getpid(), 1]
            self._key = key
        return self

    def release(self) -> None:
        """Drop one hold; the last one removes the lock file (only if it still names this process)."""
        if not self.held:
            return
        key = self._key
        with _GUARD:
            entry = _HELD[key]  # type: ignore[index]
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[key]  # type: ignore[arg-type]
            if not _HELD:
                _SIGTERM.close()
        self._key = None
        _remove_if_ours(key)  # type: ignore[arg-type]

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _create(self) -> None:
        host = socket.gethostname()
        info = {"pid": os.getpid(), "host": host, "started": time.time(), "command": " ".join(sys.argv) or "python"}
        tmp = self.folder / f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps(info) + "\n")
        try:
            for _ in range(5):
                try:
                    os.link(tmp, self.path)  # atomic: fails when the lock exists, never leaves it half-written
                    return
                except FileExistsError:
                    pass
                try:
                    owner = _read(self.path)
                except FileNotFoundError:
                    continue  # released meanwhile
                if owner is None:
                    raise RunLockError(
                        f"{self.what} {self.folder} is locked by {self.path}, which cannot be read (damaged or "
                        "written by another tool). If no run is writing into this folder, delete that file and "
                        "start again."
                    )
                if owner.get("host") != host:
                    raise RunLockError(
                        f"{self.what} {self.folder} is in use by another run: {_describe(owner)}. Its host is not "
                        f"this one ({host!r}), so whether it still runs cannot be checked here; wait for it, choose "
                        f"another {self.what}, or, if that run is gone, delete {self.path}."
                    )
                if _pid_alive(int(owner["pid"])) and int(owner["pid"]) != os.getpid():
                    raise RunLockError(
                        f"{self.what} {self.folder} is in use by another run: {_describe(owner)}; lock file "
                        f"{self.path}. Two runs into one folder overwrite each other's files: wait for it to end "
                        f"or choose another {self.what}."
                    )
                # Deleting the stale lock must be atomic with judging it: a racer that read the same stale content
                # must not delete the lock another racer has just created in its place. Under the folder's flock
                # only one process at a time re-reads and deletes, and only the very lock it judged stale.
                with _takeover_guard(self.folder):
                    try:
                        still = _read(self.path)
                    except FileNotFoundError:
                        continue  # released or taken over meanwhile: try to create it again
                    if still != owner:
                        continue  # another run took it over meanwhile: judge its lock afresh
                    logger.warning(
                        "taking over the stale lock %s of %s %s: its owner, %s, is no longer running.",
                        self.path, self.what, self.folder, _describe(owner),
                    )
                    self.path.unlink()
            raise RunLockError(f"could not take the lock {self.path} of {self.what} {self.folder}: other processes "
                               "keep taking it; is another run starting into this folder?")
        finally:
            tmp.unlink(missing_ok=True)


def _remove_if_ours(path: Path) -> None:
    try:
        owner = _read(path)
    except FileNotFoundError:
        return
    if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def lock_output_dir(folder: str | os.PathLike[str], what: str = "output_dir") -> RunLock:
    """Take the lock of ``folder`` for this process (released at exit, or by ``.release()``); see :class:`RunLock`.

    The bundles call it as the first expression of ``initialize``
    (``"$modan_monai.utils.lock_output_dir(@output_dir)"``), before anything writes into the folder.

    Args:
        folder: the output folder (created if missing).
        what: the config id or option naming the folder, used in the messages.

    Returns:
        The held :class:`RunLock`.

    Raises:
        RunLockError: naming the folder, the pid and the host holding it.
    """
    return RunLock(folder, what=what).acquire()


@atexit.register
def _release_all() -> None:
    pid = os.getpid()
    with _GUARD:
        mine = [key for key, (owner, _) in _HELD.items() if owner == pid]
        for key in mine:
            del _HELD[key]
    for key in mine:
        _remove_if_ours(key)
