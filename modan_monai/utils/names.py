"""File-name-safe forms of user-given names (init / encoder names that become output file or folder names).

``--init ../../x=scratch`` must not make a script write outside its ``--out``: every name a script turns into a
file or folder name goes through :func:`safe_file_name` first.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["safe_file_name"]

#: longest safe name kept whole (file systems allow 255 bytes for a name; suffixes such as ``_features.npy`` follow)
_MAX_LENGTH = 100


def safe_file_name(name: str, fallback: str = "name") -> str:
    """A form of ``name`` that is one plain file name: ``[A-Za-z0-9_.+-]`` only, no leading dot, bounded length.

    A name that is already safe is returned as it is; any other one (a path separator, ``..``, a space, a control
    or non-ASCII character, an empty or very long name) is replaced by its safe characters plus a hash of the
    original, so two different names never share a file.

    Args:
        name: the user-given name (e.g. an ``--init`` / ``--encoder`` NAME).
        fallback: the stem used when no safe character is left.

    Returns:
        The safe name.

    Example:
        >>> safe_file_name("modan_v2.1")
        'modan_v2.1'
        >>> safe_file_name("../../x").startswith("x-")
        True
    """
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._")
    if safe and safe == name and len(safe) <= _MAX_LENGTH:
        return safe
    return f"{safe[:_MAX_LENGTH] or fallback}-{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
