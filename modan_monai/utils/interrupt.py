"""Ctrl-C and SIGTERM end a run with one line: where it stopped, its last checkpoint, how to resume.

Python turns Ctrl-C (SIGINT) into ``KeyboardInterrupt``; SIGTERM (``kill``, a batch scheduler's time limit) kills
the process outright, with no ``finally`` block and no ``atexit`` handler run, so the output folder's lock would be
left behind. :func:`sigterm_as_interrupt` makes SIGTERM raise ``KeyboardInterrupt`` too, in the process that
installed it, while a run or script is active; :class:`~modan_monai.engines.Trainer` raises :class:`RunInterrupted`
naming the epoch, the iteration and the newest checkpoint, and :mod:`modan_monai._excepthook` prints it as the one
line the user reads (no traceback). The process then ends as the signal would have ended it (exit status 130 for
SIGINT, 143 for SIGTERM in a shell) after the ``finally`` blocks and ``atexit`` handlers ran (the lock is released).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = [
    "RunInterrupted",
    "die_by_received_signal",
    "exit_by_signal",
    "interrupt_message",
    "interrupting_signal",
    "sigterm_as_interrupt",
]

#: the signal that raised the current KeyboardInterrupt, when it was not SIGINT
_RECEIVED: dict[str, int] = {}


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; ``str()`` is the one line shown to the user.

    Args:
        message: the line (where the run stopped, its last checkpoint, how to resume).
        epoch: the epoch the run was in.
        iteration: its iteration count.
        checkpoint: the newest checkpoint written, if any.
    """

    def __init__(self, message: str, epoch: int | None = None, iteration: int | None = None,
                 checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.iteration = iteration
        self.checkpoint = checkpoint


def interrupting_signal() -> int:
    """The signal behind the ``KeyboardInterrupt`` being handled: ``SIGTERM`` if one was received, else ``SIGINT``."""
    return _RECEIVED.get("signum", int(signal.SIGINT))


def interrupt_message(exc: BaseException) -> str:
    """The one line for an interrupt: a :class:`RunInterrupted`'s own, else a generic one naming the signal."""
    name = signal.Signals(interrupting_signal()).name
    text = str(exc).strip()
    if isinstance(exc, RunInterrupted) and text:
        return f"{text} ({name})"
    return f"interrupted ({name}); run the same command to resume"


def exit_by_signal() -> None:
    """Make this process end by the interrupting signal once the ``atexit`` handlers ran (see
    :func:`die_by_received_signal`); the error hook calls it when it reports an interrupt."""
    _RECEIVED["exit_by"] = interrupting_signal()
    _RECEIVED["exit_pid"] = os.getpid()


def die_by_received_signal() -> None:
    """At exit, after the other ``atexit`` handlers (the lock release), end as the signal would have.

    :mod:`modan_monai._excepthook` registers it when ``modan_monai`` is imported (before any lock is taken, so it
    runs after their release); it acts only after :func:`exit_by_signal`. A shell then shows exit status 130
    (SIGINT) or 143 (SIGTERM).
    """
    signum = _RECEIVED.get("exit_by")
    if signum is None or os.getpid() != _RECEIVED.get("exit_pid"):
        return
    # multiprocessing's own exit handler may be registered before this one (so due after it): run it now, or the
    # queues of a process pool are never finalised and its resource tracker warns of leaked semaphores last
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util._exit_function()  # noqa: SLF001 - the stdlib offers no public call for it
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While active (in the main thread), SIGTERM raises ``KeyboardInterrupt`` in this process, as Ctrl-C does.

    The previous handler comes back on exit. A process forked meanwhile that receives SIGTERM dies of it as usual.
    Elsewhere than the main thread (where Python runs signal handlers) it does nothing.

    Example:
        >>> with sigterm_as_interrupt():
        ...     pass
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != pid:  # a forked child (a DataLoader worker) inherited the handler: die as usual
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _RECEIVED.update(signum=int(signum), pid=pid)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():  # a lock released in another thread: keep it
            signal.signal(signal.SIGTERM, previous)

