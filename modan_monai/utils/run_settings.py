"""The settings a run was started with, stored in its checkpoints so that a resume cannot mix runs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = ["RunSettings"]

_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain Python values (paths as text, tuples as lists), or ValueError naming ``where``."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise ValueError(f"run setting {where} is a {type(value).__name__}, not a plain value (str, number, list, dict)")


class RunSettings:
    """Settings of a run (init, seed, data subset...) that a resumed run must share.

    Put it in the checkpoint dictionary: the saver stores the settings; at resume,
    ``load_state_dict`` compares them with this run's and refuses a checkpoint written with other
    values, so that a second command with another ``--init`` into the same output folder does not
    silently continue the first run. Leave out what may change on resume (e.g. ``epochs``, to train
    on).

    Args:
        settings: plain values (str, numbers, bool, None, paths, lists, dicts).
        added_defaults: settings introduced in a later version, with the value a checkpoint written before then
            implicitly ran with (e.g. ``{"task": "binary"}``): a saved state without such a key reads as that value,
            so an earlier run still resumes.

    Raises:
        ValueError: a value that is not plain.

    Example:
        >>> saved = RunSettings({"init": "scratch", "seed": 0}).state_dict()
        >>> RunSettings({"init": "scratch", "seed": 0}).load_state_dict(saved)
        >>> RunSettings({"init": "encoder.pt", "seed": 0}).load_state_dict(saved)
        Traceback (most recent call last):
        ...
        ValueError: the checkpoint was written by a run with other settings: init 'scratch' there, 'encoder.pt' here; \
use another output folder, or delete its checkpoints to start over
    """

    def __init__(self, settings: Mapping[str, Any], added_defaults: Mapping[str, Any] | None = None) -> None:
        if not isinstance(settings, Mapping):
            raise ValueError(f"settings must be a mapping of names to plain values, got {type(settings).__name__}")
        self.settings = {str(k): _plain(v, str(k)) for k, v in settings.items()}
        self.added_defaults = {str(k): _plain(v, str(k)) for k, v in (added_defaults or {}).items()}

    def state_dict(self) -> dict[str, Any]:
        """The settings (plain values)."""
        return dict(self.settings)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Check that the saved settings equal this run's.

        Args:
            state_dict: saved by :meth:`state_dict`.

        Raises:
            ValueError: naming each setting that differs, with both values.
        """
        saved = {**self.added_defaults, **{str(k): _plain(v, str(k)) for k, v in state_dict.items()}}
        missing = object()
        differ = [
            f"{key} {_show(saved.get(key, missing))} there, {_show(self.settings.get(key, missing))} here"
            for key in sorted(set(saved) | set(self.settings))
            if saved.get(key, missing) != self.settings.get(key, missing)
        ]
        if differ:
            raise ValueError(
                "the checkpoint was written by a run with other settings: " + "; ".join(differ)
                + "; use another output folder, or delete its checkpoints to start over"
            )


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, _PLAIN + (list, dict)) else "(not set)"
