"""Make the cause of a failed bundle run the last line the user reads.

``python -m monai.bundle run`` wraps any error raised while a config item is evaluated or instantiated in its
own ``RuntimeError("Failed to evaluate ConfigExpression ...")`` / ``"Failed to instantiate ..."``, so the clear
message this project raises (naming the manifest row, file or config id) ends up in the middle of the traceback.
Python's ``sys.excepthook`` is the only place that runs after the traceback is printed: :func:`install` wraps it
so that, after the usual traceback, the innermost cause of such a MONAI wrapper is printed once more, last. Other
exceptions are printed exactly as before, and a hook someone else installed (IPython, a debugger) is left alone.
"""

from __future__ import annotations

import sys
import traceback
from types import TracebackType

__all__ = ["install", "root_cause"]

_WRAPPER_PREFIXES = ("Failed to evaluate", "Failed to instantiate", "Component to instantiate must")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``'s ``__cause__`` / ``__context__`` chain (``exc`` itself if none)."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def _is_monai_wrapper(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and str(exc).lstrip().startswith(_WRAPPER_PREFIXES)


def _hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    sys.__excepthook__(exc_type, exc, tb)
    cause = root_cause(exc)
    if cause is not exc and _is_monai_wrapper(exc):
        sys.stderr.write("\nCause (raised inside the failed config item above):\n")
        sys.stderr.write("".join(traceback.format_exception_only(type(cause), cause)))


def install() -> None:
    """Wrap ``sys.excepthook`` (only when it is Python's default one)."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _hook
