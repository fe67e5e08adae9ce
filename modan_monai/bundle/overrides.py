"""Check the config files and id overrides a bundle run was given, before anything is built.

``python -m monai.bundle run --config_file ... --<id> <value>`` merges the config files in order, then sets each
override with ``ConfigParser.update``: an id no config file defines is silently added (``--epochz 1`` trains
the default number of epochs) and a value of another type arrives as it was typed (``--epochs abc`` fails deep
inside the trainer with ``TypeError: '<' not supported ...``). :func:`check_overrides` reads each config file on
its own and refuses, naming the id and its value:

- an override id that no given config file defines, naming the closest defined id; an id is added on purpose
  by listing it in the ``new_ids`` config id (``--new_ids "['my_id']"``) or by defining it in an extra config
  file given with ``--config_file``;
- a value of another type than the id's default in the config files: text for a number or a boolean, a
  number for text, a float for an integer, a single value for a list or a mapping, a non-finite number (``nan``,
  ``inf``). An integer is a number, a list and a mapping stand for each other (segment's ``structures``); an
  id whose default is ``null`` or only an expression takes any value; an expression (``'$...'``), a reference
  (``'@...'``) or a macro (``'%...'``) is not checked (``'$None'`` sets null on purpose);
- two method override files (each sets ``method``; a file that refines another method's file names it with
  ``extends_method``, as ``adamv2_dino.json`` does ``adamv2``).

:func:`check_bundle_arguments` runs these checks from a bundle's ``initialize`` list on the arguments that
``monai.bundle run`` (command line, ``--args_file`` or ``monai.bundle.run(...)`` in Python) handed to
``monai.bundle.scripts.create_workflow``; a ``ConfigWorkflow`` built in code has no command line, and code that
builds one can call :func:`check_overrides` with its files and overrides.
"""

from __future__ import annotations

import difflib
import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.utils import ID_REF_KEY, ID_SEP_KEY, MACRO_KEY
from monai.utils import ensure_tuple

__all__ = [
    "EXTENDS_METHOD_KEY",
    "METHOD_KEY",
    "NEW_IDS_KEY",
    "RUN_ARGUMENTS",
    "check_bundle_arguments",
    "check_method_files",
    "check_overrides",
    "defined_ids",
]

#: the config id listing ids an override adds on purpose
NEW_IDS_KEY = "new_ids"
#: the id a method override file sets
METHOD_KEY = "method"
#: the id of a method file that refines another method's file (``adamv2_dino.json``: ``"adamv2"``)
EXTENDS_METHOD_KEY = "extends_method"
#: arguments that ``monai.bundle run`` / ``ConfigWorkflow`` consume themselves: not config ids
RUN_ARGUMENTS = frozenset(
    {
        "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
        "workflow_type", "workflow_name", "properties_path",
    }
)
_EXPRESSION_PREFIXES = ("$", ID_REF_KEY, MACRO_KEY)
_MERGE_KEY = "+"
_SEP = "#"  # ids are compared in this form; MONAI reads "#" and its ID_SEP_KEY "::" alike

logger = logging.getLogger(__name__)


def _normalise(id: str) -> str:
    """``a::b`` -> ``a#b`` (MONAI's two separators) and no leading ``+`` (the merge key)."""
    return str(id).replace(ID_SEP_KEY, _SEP).lstrip(_MERGE_KEY)


def _walk(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    yield prefix, value
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{prefix}{_SEP}{_normalise(key)}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(item, f"{prefix}{_SEP}{i}")


def defined_ids(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every id a config file's content defines (nested ones joined with ``#``), with its value.

    Args:
        config: the content of one config file (its keys may be paths such as ``train#dataloader#batch_size``).

    Returns:
        ``{id: value}`` for every key and list position, at every depth.
    """
    found: dict[str, Any] = {}
    for key, value in config.items():
        for id, item in _walk(value, _normalise(key)):
            found[id] = item
    return found


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_EXPRESSION_PREFIXES)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "dict"
    return type(value).__name__


_STRUCTURED = frozenset({"list", "dict"})
_KIND_WORDS = {
    "bool": "true or false (True / False on the command line)",
    "int": "an integer",
    "float": "a number",
    "str": "text",
    "list": "a list",
    "dict": "a mapping",
}


def _fits(value: Any, kinds: set[str]) -> bool:
    kind = _kind(value)
    if kind == "float" and not math.isfinite(value):
        return False
    if kind in kinds:
        return True
    if kind in _STRUCTURED and kinds & _STRUCTURED:  # e.g. segment's structures: a list or a mapping
        return True
    return kind == "int" and "float" in kinds  # an integer for a float id


_VALUE_WORDS = {"bool": "the boolean", "int": "the integer", "float": "the number", "str": "the text",
                "list": "the list", "dict": "the mapping"}


def _describe(value: Any) -> str:
    kind = _kind(value)
    if kind == "null":
        return "null"
    if kind == "float" and not math.isfinite(value):
        return f"the non-finite number {value!r}"
    return f"{_VALUE_WORDS.get(kind, 'a ' + kind)} {value!r}"


def _read(path: str | Path) -> dict[str, Any]:
    content = ConfigParser.load_config_file(str(path))
    if not isinstance(content, Mapping):
        raise ValueError(f"config file {path} holds a {type(content).__name__}, expected a mapping of config ids")
    return dict(content)


def check_method_files(config_files: Sequence[str | Path], contents: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Refuse two method override files in one run, naming both.

    The first config file is the bundle's base config (its ``method`` is the default); every later file that sets
    ``method`` selects a method. A file that refines the method of an earlier one says so with
    ``extends_method`` (``adamv2_dino.json``: ``"adamv2"``) and needs that file before it.

    Args:
        config_files: the files, in the order given.
        contents: their contents (read from ``config_files`` when ``None``).

    Raises:
        ValueError: naming both files and the methods they select, or the file a refinement needs.
    """
    contents = [_read(f) for f in config_files] if contents is None else list(contents)
    selected: tuple[str, Any] | None = None
    for path, content in list(zip(config_files, contents))[1:]:
        if METHOD_KEY not in content:
            continue
        method, extends = content[METHOD_KEY], content.get(EXTENDS_METHOD_KEY)
        if extends is not None and (selected is None or selected[1] != extends):
            before = "" if selected is None else f", not {selected[0]} (method {selected[1]!r})"
            raise ValueError(
                f"config file {path} (method {method!r}) refines method {extends!r}: give the {extends!r} override "
                f"file just before it in --config_file{before}"
            )
        if selected is not None and extends is None:
            raise ValueError(
                f"two method override files in one run: {selected[0]} selects method {selected[1]!r} and {path} "
                f"selects method {method!r}; give one of them in --config_file"
            )
        selected = (str(path), method)


def check_overrides(
    config_files: str | Path | Sequence[str | Path],
    overrides: Mapping[str, Any],
    new_ids: Sequence[str] | None = None,
) -> None:
    """Refuse override ids the config files do not define and values of another type than their defaults.

    Args:
        config_files: the config files of the run, in order.
        overrides: ``{id: value}`` as ``ConfigParser.update`` receives them (``monai.bundle run``'s own arguments,
            :data:`RUN_ARGUMENTS`, are skipped).
        new_ids: ids that may be added although no config file defines them (the ``new_ids`` config id).

    Raises:
        ValueError: naming the id, the value and what is expected (and the closest defined id for an unknown
            one), or two method override files (:func:`check_method_files`).
    """
    files = [str(f) for f in ensure_tuple(config_files)]
    contents = [_read(f) for f in files]
    check_method_files(files, contents)
    definitions: dict[str, list[tuple[str, Any]]] = {}
    for path, content in zip(files, contents):
        for id, value in defined_ids(content).items():
            definitions.setdefault(id, []).append((path, value))
    allowed_new = {_normalise(i) for i in (new_ids or ())}
    for raw_id, value in overrides.items():
        if raw_id in RUN_ARGUMENTS or str(raw_id).startswith("_meta_"):
            continue
        id = _normalise(raw_id)
        if id not in definitions:
            if id in allowed_new:
                continue
            close = difflib.get_close_matches(id, list(definitions), n=1, cutoff=0.6)
            hint = f"; the closest defined id is '{close[0]}'" if close else ""
            raise ValueError(
                f"override --{raw_id} {value!r}: config id '{raw_id}' is not defined in the config files "
                f"{files}{hint}. To add a new id on purpose, list it in the config id '{NEW_IDS_KEY}' "
                f"(--{NEW_IDS_KEY} \"['{raw_id}']\") or define it in an extra --config_file."
            )
        if _is_expression(value):
            continue
        plain = [(path, default) for path, default in definitions[id] if not _is_expression(default)]
        kinds = {_kind(default) for _, default in plain}
        if not plain or "null" in kinds or _fits(value, kinds):
            continue
        path, default = plain[-1]
        wanted = " or ".join(sorted({_KIND_WORDS.get(k, k) for k in kinds}))
        raise ValueError(
            f"override --{raw_id} {value!r}: config id '{raw_id}' expects {wanted} (default {default!r} in {path}), "
            f"got {_describe(value)}. Give a value of that type, or an expression ('$...', e.g. '$None' for null) "
            "to set another on purpose."
        )


def _run_arguments() -> tuple[Any, dict[str, Any]] | None:
    """``(config_file, arguments)`` of the ``monai.bundle.scripts.create_workflow`` call this code runs under."""
    from monai.bundle import scripts

    code = scripts.create_workflow.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return frame.f_locals.get("config_file"), dict(frame.f_locals.get("_args") or {})
        frame = frame.f_back
    return None


def check_bundle_arguments(new_ids: Sequence[str] | None = None) -> None:
    """Check the config files and overrides of the ``monai.bundle run`` this bundle runs under (see module doc).

    Put it first in a bundle's ``initialize`` list: ``"$modan_monai.bundle.check_bundle_arguments(@new_ids)"``.
    Under a ``ConfigWorkflow`` built in code (no ``monai.bundle run`` arguments) it checks nothing.

    Args:
        new_ids: ids that overrides may add (the bundle's ``new_ids`` config id).

    Raises:
        ValueError: see :func:`check_overrides`.
    """
    found = _run_arguments()
    if found is None:
        logger.debug("not run by monai.bundle run: no command-line overrides to check")
        return
    config_file, arguments = found
    if config_file is None:
        return
    if isinstance(new_ids, str) or not isinstance(new_ids, (list, tuple, type(None))):
        raise ValueError(f"config id '{NEW_IDS_KEY}' must be a list of ids, got {new_ids!r}")
    check_overrides(config_file, arguments, new_ids)
