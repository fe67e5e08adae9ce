"""Checks the MONAI Label app applies to what a request names: plain names, confined paths, JSON-object params.

Every image id, label id, label tag and model name a request gives must be a plain file name (:func:`plain_name`);
every file the app touches must resolve inside its folder (:func:`inside`); every JSON parameter must be an object
of finite numbers (:func:`json_object`) and hold no key the server sets (:func:`no_server_keys`); every upload's
file name has a short suffix (:func:`upload_suffix`); MONAI Label's inference options are checked
(:func:`check_infer_options`). A failed check is a :class:`~modan_monai.apps.monailabel.lib.bundle.ServingError`
whose message names the HTTP parameter. Nothing here imports monailabel.
"""

from __future__ import annotations

import json
import logging
import math
import ntpath
import os
import re
import unicodedata
from pathlib import PurePath
from typing import Any
from urllib.parse import unquote

from modan_monai.apps.monailabel.lib.bundle import ServingError

__all__ = [
    "MAX_NAME_LENGTH",
    "RESULT_EXTENSIONS",
    "SERVER_KEYS",
    "check_infer_options",
    "inside",
    "json_object",
    "name_problem",
    "no_server_keys",
    "number",
    "plain_name",
    "shown",
    "upload_suffix",
]

#: the longest id / tag / model name accepted (characters, after URL-decoding)
MAX_NAME_LENGTH = 128
#: the longest suffix of an uploaded file's name (``.nii.gz``: 7)
MAX_SUFFIX_LENGTH = 32
#: request keys MONAI Label hands on to the processes it starts (``bundle_path`` goes onto a training / batch
#: process's ``PYTHONPATH``): the server sets them, a request never does
SERVER_KEYS = ("bundle_path",)
#: the file types an inference result may be written as (``params`` ``result_extension``)
RESULT_EXTENSIONS = (".png", ".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".tif")


def shown(value: Any, limit: int = 2 * MAX_NAME_LENGTH) -> str:
    """``repr(value)``, shortened to ``limit`` characters (a refused value is quoted in the error, never in full)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def _decodings(value: str) -> list[str]:
    """``value`` and its URL-decodings until nothing changes (``%252e`` -> ``%2e`` -> ``.``)."""
    out = [value]
    for _ in range(4):
        decoded = unquote(out[-1])
        if decoded == out[-1]:
            break
        out.append(decoded)
    return out


def name_problem(value: Any) -> str | None:
    """Why ``value`` is not a plain name, or ``None`` when it is one.

    A plain name is a non-empty string that, as given and after URL-decoding, has at most
    :data:`MAX_NAME_LENGTH` characters, no path separator (``/``, ``\\``), no ``..``, no control character (NUL
    included) and is not absolute (no drive either).
    """
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a string"
    if not value:
        return "is empty"
    for text in _decodings(value):
        if len(text) > MAX_NAME_LENGTH:
            return f"is longer than {MAX_NAME_LENGTH} characters"
        if any(unicodedata.category(c) == "Cc" for c in text):
            return "holds a control character"
        if "/" in text or "\\" in text:
            return "holds a path separator"
        if ".." in text:
            return "holds '..'"
        if os.path.isabs(text) or ntpath.isabs(text) or ntpath.splitdrive(text)[0]:
            return "is an absolute path"
        if text.strip() in ("", "."):
            return "is not a name"
    return None


def plain_name(value: Any, parameter: str, status: int = 400) -> str:
    """``value`` when it is a plain name (see :func:`name_problem`).

    Args:
        value: an id, tag or model name from a request.
        parameter: the HTTP parameter it came in (named in the error).
        status: the HTTP status of the refusal.

    Raises:
        ServingError: ``value`` is not a plain name (naming ``parameter`` and why).

    Example:
        >>> plain_name("case001", "image")
        'case001'
    """
    problem = name_problem(value)
    if problem is not None:
        raise ServingError(status, f"parameter {parameter}: {shown(value)} {problem}; ids, tags and model names are "
                                   "plain names (no folders)")
    return value


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path``, every link resolved, lies inside ``root`` (resolved too); ``False`` for a path that
    cannot be one (a NUL byte)."""
    try:
        real, base = os.path.realpath(path), os.path.realpath(root)
    except (ValueError, TypeError, OSError):
        return False
    return real != base and os.path.commonpath([real, base]) == base


def number(value: Any) -> float | None:
    """``value`` (a number, or text holding one) as a float, or ``None`` (a boolean, a list, other text).

    Example:
        >>> number("0.5"), number(True), number("high")
        (0.5, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {text}")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"non-finite number {text}")


def json_object(text: Any, parameter: str, empty_ok: bool = True) -> dict[str, Any]:
    """Parse a JSON parameter that must be an object of finite numbers.

    Args:
        text: the parameter's text (``None`` / ``""`` is ``{}`` when ``empty_ok``).
        parameter: the HTTP parameter (named in the error).
        empty_ok: whether an empty value means ``{}``.

    Raises:
        ServingError: (422) not valid JSON, ``NaN`` / ``Infinity`` / an overflowing number, or not an object.
    """
    if text is None or text == "":
        if empty_ok:
            return {}
        raise ServingError(422, f"parameter {parameter}: empty; expected a JSON object")
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise ServingError(422, f"parameter {parameter}: expected a JSON object, got {type(text).__name__}")
    try:
        value = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except ValueError as err:  # JSONDecodeError is a ValueError
        raise ServingError(422, f"parameter {parameter}: not a valid JSON object of finite numbers ({err})") from None
    if not isinstance(value, dict):
        raise ServingError(422, f"parameter {parameter}: expected a JSON object, got {type(value).__name__} "
                                f"{shown(value)}")
    return value


def no_server_keys(value: Any, parameter: str) -> None:
    """Refuse a JSON value holding a key of :data:`SERVER_KEYS` at any depth.

    Raises:
        ServingError: (400) naming ``parameter`` and the key.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in SERVER_KEYS:
                if key in item:
                    raise ServingError(400, f"parameter {parameter}: {key!r} is set by the server, not by a request")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def upload_suffix(filename: Any, parameter: str) -> str:
    """The suffix MONAI Label gives an upload's temporary file (``"".join(Path(filename).suffixes)``).

    Raises:
        ServingError: (422) the name holds a control character or its suffix is longer than
            :data:`MAX_SUFFIX_LENGTH` characters, naming ``parameter``.
    """
    name = str(filename or "")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ServingError(422, f"parameter {parameter}: the file name {shown(name)} holds a control character")
    suffix = "".join(PurePath(name).suffixes)
    if len(suffix) > MAX_SUFFIX_LENGTH:
        raise ServingError(422, f"parameter {parameter}: the file name {shown(name)} has a suffix longer than "
                                f"{MAX_SUFFIX_LENGTH} characters")
    return suffix


def check_infer_options(request: dict[str, Any], cuda_devices: int = 0) -> None:
    """Check the MONAI Label inference options a request sets (in ``params``), so a bad one is a 422, not a 500
    from deep inside MONAI Label.

    ``result_extension`` one of :data:`RESULT_EXTENSIONS`; ``logging`` a level name; ``device`` ``cpu`` or
    ``cuda[:<index>]`` (an index below ``cuda_devices`` when there are GPUs); ``timeout`` a positive number;
    ``save_label`` and ``result_compress`` true or false; ``skip_writer`` false and ``result_write_to_file`` true
    (the result is a file). An option that is absent is not checked; one that is ``null`` is.

    Raises:
        ServingError: (422) naming ``params``, the option and its value.
    """
    checks = {
        "result_extension": (lambda v: v in RESULT_EXTENSIONS, f"one of {list(RESULT_EXTENSIONS)}"),
        "logging": (lambda v: isinstance(v, str) and v.upper() in logging.getLevelNamesMapping(),
                    "a logging level such as INFO or WARNING"),
        "device": (lambda v: isinstance(v, str) and _device_ok(v, cuda_devices),
                   f"cpu or cuda[:<index>] ({cuda_devices} GPUs here)"),
        "timeout": (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0 < v < math.inf,
                    "a positive number of seconds"),
        "save_label": (lambda v: isinstance(v, bool), "true or false"),
        "result_compress": (lambda v: isinstance(v, bool), "true or false"),
        "skip_writer": (lambda v: v is False, "false"),
        "result_write_to_file": (lambda v: v is True, "true"),
    }
    for key, (ok, expected) in checks.items():
        if key in request and not ok(request[key]):
            raise ServingError(422, f"parameter params: {key}={shown(request[key])} is not served; expected {expected}")


def _device_ok(device: str, cuda_devices: int) -> bool:
    match = re.fullmatch(r"cpu|cuda(?::(\d{1,3}))?", device)
    return match is not None and not (cuda_devices and match.group(1) and int(match.group(1)) >= cuda_devices)
