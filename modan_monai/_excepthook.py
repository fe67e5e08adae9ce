"""Make the project's own explanation of a failed run the last line the user reads.

``python -m monai.bundle run`` wraps any error raised while a config item is evaluated or instantiated in its
own ``RuntimeError("Failed to evaluate ConfigExpression ...")`` / ``"Failed to instantiate ..."``, so the clear
message this project raises (naming the manifest row, file or config id) ends up in the middle of the traceback;
and a library error the project explains (``raise ValueError("checkpoint ... is damaged: delete it") from err``)
may sit further in, or out, of the chain. Python's ``sys.excepthook`` is the only place that runs after the
traceback is printed: :func:`install` wraps it so that, after the usual traceback, the explanation
(:func:`project_cause`: the outermost exception of the chain that this project raised, else the innermost cause
of a MONAI wrapper) is printed once more, last. An exception the project raised outermost is printed exactly as
before (it is the last line already), and a hook someone else installed (IPython, a debugger) is left alone.

A ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM while :func:`modan_monai.utils.interrupt.sigterm_as_interrupt` is
active) prints one line and no traceback: where the run stopped and how to resume
(:class:`modan_monai.utils.interrupt.RunInterrupted`).
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
from pathlib import Path
from types import TracebackType

__all__ = ["install", "is_project_raised", "project_cause", "root_cause"]

_WRAPPER_PREFIXES = ("Failed to evaluate", "Failed to instantiate", "Component to instantiate must")
#: the folders of the project's own code: an exception raised in a file under one of them is the project's
_ROOT = Path(__file__).resolve().parents[1]
_PROJECT_DIRS = tuple(str(_ROOT / name) + os.sep for name in ("modan_monai", "scripts", "data_manifests"))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its ``__cause__`` / ``__context__`` chain, outermost first (each once)."""
    chain = [exc]
    seen = {id(exc)}
    while True:
        inner = chain[-1].__cause__ or chain[-1].__context__
        if inner is None or id(inner) in seen:
            return chain
        seen.add(id(inner))
        chain.append(inner)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``'s ``__cause__`` / ``__context__`` chain (``exc`` itself if none)."""
    return _chain(exc)[-1]


def is_project_raised(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in this project's code (``modan_monai``, ``scripts``, ``data_manifests``).

    The innermost frame of its traceback is where it was raised (re-raising an exception adds outer frames only).
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = str(Path(tb.tb_frame.f_code.co_filename).resolve())
    return filename.startswith(_PROJECT_DIRS)


def project_cause(exc: BaseException) -> BaseException:
    """The explanation of ``exc`` to show last: the outermost exception of its chain that the project raised.

    Without one, the innermost cause (:func:`root_cause`).

    Args:
        exc: the exception that ended the run.

    Returns:
        An exception of ``exc``'s chain (``exc`` itself when it is the project's, or has no cause).
    """
    chain = _chain(exc)
    return next((e for e in chain if is_project_raised(e)), chain[-1])


def _is_monai_wrapper(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and str(exc).lstrip().startswith(_WRAPPER_PREFIXES)


def _hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if isinstance(exc, KeyboardInterrupt):
        from modan_monai.utils.interrupt import exit_by_signal, interrupt_message

        sys.stderr.write(interrupt_message(exc) + "\n")
        exit_by_signal()  # exit status 130 / 143, as the signal would have given
        return
    sys.__excepthook__(exc_type, exc, tb)
    chain = _chain(exc)
    project = next((e for e in chain if is_project_raised(e)), None)
    if project is None and _is_monai_wrapper(exc):
        project = chain[-1]  # no message of the project's: the innermost library error, as MONAI hides it
    if project is not None and project is not exc:
        sys.stderr.write("\nCause (raised inside the failed step above):\n")
        sys.stderr.write("".join(traceback.format_exception_only(type(project), project)))


def _end_by_signal() -> None:
    module = sys.modules.get("modan_monai.utils.interrupt")
    if module is not None:
        module.die_by_received_signal()


def install() -> None:
    """Wrap ``sys.excepthook`` (only when it is Python's default one); end a SIGTERM-interrupted run by SIGTERM."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _hook
        atexit.register(_end_by_signal)  # registered first, so it runs last: after the locks are released
