"""One log format for the scripts and the bundles, and a console that shows only a script's own progress lines.

The bundles' ``configs/logging.conf`` format their console with :data:`LOG_FORMAT` (a test keeps the two equal);
:func:`setup_logging` gives a script's console the same format. MONAI's ``StatsHandler`` logs through a logger of its
own (``monai.handlers.StatsHandler``), built by ``monai.apps.get_logger`` with its own stdout handler in MONAI's
format and ``propagate=False``, set again each time a ``StatsHandler`` is built: neither a filter on a logger named
``StatsHandler`` nor one on the root's handlers reaches it. :func:`setup_logging` hands that logger the root's
handlers (``get_logger`` adds its own only to a logger that does not exist yet), and :func:`progress_only` filters it
as well as the root's handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = ["LOG_FORMAT", "STATS_HANDLER_LOGGER", "progress_only", "setup_logging"]

#: The one log line format (``configs/logging.conf`` of every bundle uses it too).
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
#: The logger of MONAI's ``StatsHandler`` (its default ``name``): per-epoch "Epoch[n] Metrics" and "Key metric" lines.
STATS_HANDLER_LOGGER = "monai.handlers.StatsHandler"


def setup_logging(level: int = logging.INFO) -> None:
    """Console logging in :data:`LOG_FORMAT` for a script, MONAI's ``StatsHandler`` lines included.

    ``logging.basicConfig``, then the ``StatsHandler`` logger writes through the root's handlers instead of a handler
    of its own. Nothing changes when the root logger has handlers already (e.g. under pytest).

    Args:
        level: the root logger's level (default INFO).
    """
    root = logging.getLogger()
    if root.handlers:  # configured by the caller already (an application, pytest): left as it is
        return
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger(STATS_HANDLER_LOGGER).handlers = list(root.handlers)


@contextmanager
def progress_only(keep: Sequence[str]) -> Iterator[None]:
    """While inside, the console shows INFO lines only from the loggers ``keep`` (and their children).

    Warnings and errors of every logger still show. The filter sits on the root logger's handlers (every record that
    propagates) and on the ``StatsHandler`` logger (which does not propagate); it is removed on exit, so a caller in
    the same process keeps its logging.

    Args:
        keep: logger names whose INFO lines stay, e.g. ``["modan_monai.evaluation"]``.

    Example:
        >>> import logging
        >>> with progress_only(["modan_monai.evaluation"]):
        ...     logging.getLogger("modan_monai.networks").info("hidden")
    """
    prefixes = tuple(keep)

    def shown(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or any(
            record.name == name or record.name.startswith(name + ".") for name in prefixes
        )

    stats = logging.getLogger(STATS_HANDLER_LOGGER)
    filtered = [*logging.getLogger().handlers, stats]
    for target in filtered:
        target.addFilter(shown)
    try:
        yield
    finally:
        for target in filtered:
            target.removeFilter(shown)
