"""Helpers shared by the manifest builders: frame assembly in the manifest column order, layout checks, errors.

Every builder checks the raw layout its module documents and refuses anything else, naming what it expected and
what it found: a missing documented folder -> ``FileNotFoundError``; an undocumented folder, a file of another type,
a broken symbolic link or a layout without a single image -> ``ValueError``. Hidden entries (names starting with
``.``) are ignored.

Symbolic links are followed: a dataset assembled from links to folders or files elsewhere is read like a copy, and
the manifest holds the paths through the links (so class and structure names come from the link names). Builders
that walk a tree use :func:`walk_files`, which descends into linked folders and visits each real folder once; a
builder that walks several parts of one tree (the class folders) fences the other parts off, so that a link back into
the tree is skipped with a warning naming it instead of listing a file twice or under another part's name.

A file that must stay private (a pseudonymisation salt) is checked with :func:`warn_if_not_ignored`: inside a git
work tree that does not ignore it, a warning names it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from modan_monai.data.manifest import MANIFEST_COLUMNS

__all__ = [
    "IMAGE_SUFFIXES",
    "as_frame",
    "case_id_from_name",
    "check_files",
    "check_folders",
    "check_option",
    "compile_case_id_regex",
    "describe",
    "fenced_by",
    "find_one_file",
    "logger",
    "preview",
    "refuse_broken_links",
    "require_dir",
    "require_file",
    "skip_links_out",
    "walk_files",
    "warn_if_not_ignored",
]

logger = logging.getLogger("data_manifests")

#: 2D image suffixes the readers decode with PIL.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


def preview(items: Sequence[Any], limit: int = 10) -> str:
    """``"a, b, c (+N more)"`` for error messages that list offending files."""
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible sub-folders and files of ``folder``, sorted by name."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    return [p for p in entries if p.is_dir()], [p for p in entries if not p.is_dir()]


def describe(folder: str | Path) -> str:
    """What a folder holds, for error messages: ``"folders ['no', 'yes']; files: 3 .png, 1 .csv"``."""
    folder = Path(folder)
    if not folder.is_dir():
        return "nothing (not a folder)"
    dirs, files = _entries(folder)
    counts: dict[str, int] = {}
    for file in files:
        suffix = file.suffix.lower() or "(no suffix)"
        counts[suffix] = counts.get(suffix, 0) + 1
    found_files = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"
    return f"folders {[d.name for d in dirs]}; files: {found_files}"


def check_folders(
    folder: Path, expected: Sequence[str], what: str, required: Sequence[str] | None = None
) -> list[str]:
    """Check the sub-folders of ``folder`` against the documented ones.

    Args:
        folder: the folder to check.
        expected: every sub-folder name the layout documents.
        what: layout name for messages (``"BUSI root"``).
        required: names that must be present (default: all of ``expected``).

    Returns:
        The names of the expected sub-folders present.

    Raises:
        FileNotFoundError: a required folder is missing (naming the expected and the found entries).
        ValueError: a sub-folder the layout does not document (naming the expected and the found folders).
    """
    dirs, _ = _entries(folder)
    found = [d.name for d in dirs]
    missing = [n for n in (expected if required is None else required) if n not in found]
    if missing:
        raise FileNotFoundError(f"{what} {folder}: folder(s) {missing} not found; expected folders {list(expected)}; "
                                f"found {describe(folder)}.")
    unexpected = [n for n in found if n not in expected]
    if unexpected:
        raise ValueError(f"{what} {folder}: unexpected folder(s) {unexpected}; expected folders {list(expected)} "
                         f"only; found {describe(folder)}.")
    return [n for n in found if n in expected]


def check_files(folder: Path, suffixes: Sequence[str], what: str, expected: str) -> list[Path]:
    """The files of a leaf folder; sub-folders, files of another type and an empty folder are refused.

    Args:
        folder: the folder.
        suffixes: accepted file suffixes (lower case, with the dot).
        what: layout name for messages (``"BUSI class folder"``).
        expected: the documented content, for messages (``"benign (1).png ..."``).

    Returns:
        The files, sorted by name.

    Raises:
        ValueError: a sub-folder, a file with another suffix, or no file at all (naming expected and found).
    """
    dirs, files = _entries(folder)
    if dirs:
        raise ValueError(f"{what} {folder}: unexpected sub-folder(s) {preview([d.name for d in dirs])}; expected "
                         f"only files {expected}.")
    refuse_broken_links([f for f in files if not f.exists()], f"{what} {folder}")
    refuse_other_types(folder, files, [f.name for f in files], suffixes, what, f"{expected} ({', '.join(suffixes)})")
    return files


def refuse_other_types(
    folder: Path, files: Sequence[Path], names: Sequence[str], suffixes: Sequence[str], what: str, expected: str
) -> None:
    """Raise a ValueError for files of ``folder`` whose suffix is not in ``suffixes``, or for no file at all.

    Args:
        folder: the folder named in the message.
        files: its files.
        names: how each file is named in the message (its name, or its path below ``folder``).
        suffixes: accepted suffixes (lower case, with the dot).
        what: layout name for messages.
        expected: the documented content, for messages.
    """
    others = [name for file, name in zip(files, names) if file.suffix.lower() not in suffixes]
    if others:
        types = sorted({Path(o).suffix.lower() or "(no suffix)" for o in others})
        raise ValueError(f"{what} {folder}: unexpected file type(s) {types}: {preview(others)}; expected {expected}.")
    if not files:
        raise ValueError(f"{what} {folder}: no images; expected {expected}; found {describe(folder)}.")


def check_option(
    name: str, values: Sequence[str] | str, allowed: Sequence[str], what: str, allow_empty: bool = False
) -> tuple[str, ...]:
    """A builder option listing names: a single string becomes a 1-tuple; names outside ``allowed`` raise.

    Raises:
        ValueError: naming the unknown values and the allowed ones (or an empty option unless ``allow_empty``).
    """
    chosen = (values,) if isinstance(values, str) else tuple(values)
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise ValueError(f"{what}: unknown {name} {unknown}; the layout documents {list(allowed)}.")
    if not chosen and not allow_empty:
        raise ValueError(f"{what}: option {name} is empty; choose from {list(allowed)}.")
    return chosen


def require_dir(path: str | Path, what: str) -> Path:
    """Return ``path`` made absolute, or raise ``FileNotFoundError`` naming ``what`` (e.g. "BUSI root").

    The path is made absolute lexically (``os.path.abspath``), not resolved: a root given through a symbolic link
    stays the path the user gave, and so do the paths the manifest stores below it.
    """
    folder = Path(os.path.abspath(Path(path).expanduser()))
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {folder}")
    return folder


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` made absolute (lexically, see :func:`require_dir`), or raise ``FileNotFoundError`` naming
    ``what``."""
    file = Path(os.path.abspath(Path(path).expanduser()))
    if not file.is_file():
        raise FileNotFoundError(f"{what}: file not found: {file}")
    return file


def find_one_file(folder: Path, given: str | Path | None, pattern: str, layout: str, role: str, option: str) -> Path:
    """The file named by a builder option (relative to ``folder``), or else the one file matching ``pattern``.

    Args:
        folder: the dataset root.
        given: the option's value, or ``None`` to look for ``pattern`` directly inside ``folder``.
        pattern: glob pattern of the file, e.g. ``"Data_Entry_2017*.csv"``.
        layout: layout name for messages (``"ChestX-ray14 root"``).
        role: the file's role for messages (``"label CSV"``).
        option: the option's name for messages (``labels``).

    Returns:
        The file.

    Raises:
        FileNotFoundError: if ``given`` is not a file, or not exactly one file matches ``pattern`` (naming the
            matches and what ``folder`` holds).
    """
    if given is not None:
        path = folder / given
        if not path.is_file():
            raise FileNotFoundError(f"{layout} {folder}: {role} {path} not found; found {describe(folder)}.")
        return path
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"{layout} {folder}: expected exactly one {pattern} (or pass {option}=), found "
                                f"{[f.name for f in found]}; found {describe(folder)}.")
    return found[0]


def as_frame(rows: Iterable[Mapping[str, Any]], what: str) -> pd.DataFrame:
    """Build a manifest frame: manifest columns first (missing ones empty), extra columns after, ``index`` Int64.

    Raises:
        ValueError: if there are no rows (an empty manifest is always a mistake in the raw layout or options).
    """
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError(f"{what}: no images found.")
    for column in MANIFEST_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame["index"] = pd.array(frame["index"], dtype="Int64")
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    return frame[list(MANIFEST_COLUMNS) + extra].reset_index(drop=True)


def refuse_broken_links(broken: Sequence[Path], what: str) -> None:
    """Raise ``ValueError`` naming the broken symbolic links (a link whose target does not exist), if any.

    Args:
        broken: the links found broken (empty: nothing to report).
        what: layout name and folder for the message.

    Raises:
        ValueError: naming each link and its target, when ``broken`` is not empty.
    """
    if broken:
        targets = [f"{b} -> {os.readlink(b)}" if b.is_symlink() else str(b) for b in broken]
        raise ValueError(f"{what}: {len(broken)} broken symbolic link(s) (the target does not exist): "
                         f"{preview(targets)}.")


def _inside(path: str, folder: str) -> bool:
    """Whether the real path ``path`` is ``folder`` or lies below it (both real, absolute paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def fenced_by(real: str | Path, own: str | Path, fence: Sequence[str | Path]) -> str | None:
    """The fenced folder a real path leads into, or ``None`` when it may be read as part of ``own``.

    A path is fenced when it lies outside ``own`` (the real folder being read) and inside one of ``fence`` (real
    folders read as other parts of the tree, or the tree's root) or is an ancestor of one of them (a link up the
    tree, which would walk the fenced folders again).

    Args:
        real: a real path (``os.path.realpath``) reached through a link.
        own: the real path of the folder being read.
        fence: real paths of the folders that belong to other parts of the tree.

    Returns:
        The fenced folder (as a string), or ``None``.
    """
    real, own = str(real), str(own)
    if _inside(real, own):
        return None
    folders = [str(f) for f in fence]
    inside = [f for f in folders if _inside(real, f)]
    if inside:
        return max(inside, key=len)  # the most specific one
    return next((f for f in folders if _inside(f, real)), None)


def _link_leads_out(path: Path, top: Path, own: str, fence: Sequence[str], what: str) -> bool:
    """Whether ``path`` is a link into a fenced folder (see :func:`fenced_by`); a warning names the link."""
    if not fence or not path.is_symlink():
        return False
    real = os.path.realpath(path)
    into = fenced_by(real, own, fence)
    if into is not None:
        logger.warning("%s: %s is a link to %s: it leads out of %s back into %s, whose files are listed where they "
                       "are; the link is skipped (each file is listed once, under the part that holds it).",
                       what, path, real, top, into)
    return into is not None


def skip_links_out(files: Sequence[Path], folder: Path, fence: Sequence[str | Path], what: str) -> list[Path]:
    """``files`` of ``folder`` without the links that lead into a fenced folder (each skipped with a warning).

    The check :func:`walk_files` makes with ``fence``, for a file list read otherwise (a flat folder).

    Args:
        files: files found in ``folder``.
        folder: the folder read.
        fence: real paths of the folders that belong to other parts of the tree.
        what: layout name for messages.

    Returns:
        The files to list, in their order.
    """
    own = os.path.realpath(folder)
    fenced = [os.path.realpath(f) for f in fence]
    return [f for f in files if not _link_leads_out(f, folder, own, fenced, what)]


def walk_files(
    folder: str | Path, what: str, hidden: bool = False, fence: Sequence[str | Path] = ()
) -> list[Path]:
    """Every file below ``folder``, following symbolic links to folders, each real folder visited once.

    ``Path.rglob`` does not descend into linked folders (Python 3.11; 3.13 only with ``recurse_symlinks=True``), so
    a dataset assembled from links would look empty. This walk follows them (``os.walk(followlinks=True)``) and keeps
    the real paths of the folders it has entered: a link back to a folder already walked (a loop such as
    ``latest -> .``, or two links to one folder) is not entered again, and a warning names the link and the real
    folder, so no file is listed twice and none is left out in silence. Paths are returned as reached from
    ``folder`` (through the links, not resolved).

    With ``fence`` (the real paths of the tree's root and of the folders read as its other parts, e.g. the other
    class folders), a link that leads outside ``folder`` into a fenced folder, or up to an ancestor of one, is not
    followed (a folder link) or not listed (a file link), and a warning names the link: its files belong to the part
    that holds them, not to ``folder`` (see :func:`fenced_by`).

    Args:
        folder: the top folder.
        what: layout name for messages (``"RadImageNet root"``).
        hidden: include entries whose name starts with ``.`` (by default hidden files and folders are not listed).
        fence: real paths of the folders that belong to other parts of the tree (default: none).

    Returns:
        The files (and links to files), sorted by path.

    Raises:
        ValueError: for a broken symbolic link (naming the link and its target).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "store").mkdir(); (root / "store" / "a.png").write_bytes(b"x")
        1
        >>> (root / "tree").mkdir(); (root / "tree" / "CT").symlink_to(root / "store", target_is_directory=True)
        >>> [p.relative_to(root / "tree").as_posix() for p in walk_files(root / "tree", "example")]
        ['CT/a.png']
    """
    top = Path(folder)
    own = os.path.realpath(top)
    fenced = [os.path.realpath(f) for f in fence]
    visited: dict[str, Path] = {}
    files: list[Path] = []
    broken: list[Path] = []

    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        current = Path(dirpath)
        real = os.path.realpath(current)
        if real in visited:
            logger.warning("%s: %s is a link to %s, already walked as %s; its files are listed once.", what,
                           current, real, visited[real])
            dirnames[:] = []
            continue
        visited[real] = current
        if not hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames[:] = [d for d in dirnames if not _link_leads_out(current / d, top, own, fenced, what)]
        dirnames.sort()  # deterministic walk order, so the first of two links to one folder is always the same
        for name in filenames:
            if hidden or not name.startswith("."):
                path = current / name
                if not path.exists():
                    broken.append(path)
                elif not _link_leads_out(path, top, own, fenced, what):
                    files.append(path)
    refuse_broken_links(sorted(broken), f"{what} {top}")
    return sorted(files)


def compile_case_id_regex(pattern: str | None, what: str) -> re.Pattern[str] | None:
    """The compiled ``case_id_regex`` option: a regular expression with exactly one group, or ``None``.

    Raises:
        ValueError: naming the option when the pattern does not compile or has not exactly one group.
    """
    if pattern is None:
        return None
    try:
        compiled = re.compile(str(pattern))
    except re.error as err:
        raise ValueError(f"{what}: option case_id_regex {pattern!r} is not a valid regular expression: {err}.") from err
    if compiled.groups != 1:
        raise ValueError(f"{what}: option case_id_regex {pattern!r} must have exactly one group (the case id), "
                         f"it has {compiled.groups}; e.g. '^(P\\d+)_' for P0012_left.png.")
    return compiled


def case_id_from_name(file: Path, regex: re.Pattern[str] | None) -> str:
    """The case id of an image: the file stem, or the group of ``regex`` searched in the file name.

    Args:
        file: the image file.
        regex: from :func:`compile_case_id_regex`; ``None`` takes the stem (``P0012_left.png`` -> ``P0012_left``).

    Returns:
        The case id.

    Raises:
        ValueError: naming the file and the pattern when the pattern does not match the name or its group is empty.
    """
    if regex is None:
        return file.stem
    match = regex.search(file.name)
    if match is None or not match.group(1):
        problem = "does not match" if match is None else "matches with an empty group in"
        raise ValueError(f"option case_id_regex {regex.pattern!r} {problem} the file name {file.name!r} ({file}); "
                         "every image needs a case id.")
    return match.group(1)


def warn_if_not_ignored(path: str | Path, what: str) -> bool:
    """Warn, naming the file, when ``path`` lies in a git work tree that does not ignore it (``git add .`` adds it).

    Asks ``git check-ignore`` (run in the file's folder, so the work tree's ``.gitignore`` files, ``info/exclude`` and
    ``core.excludesFile`` all count); a tracked file is reported too. Quiet when git is not installed, the folder is
    not in a work tree, or git fails.

    Args:
        path: the file (it should exist; its folder must).
        what: what the file is, for the message (``"the DICOM pseudonym salt file"``).

    Returns:
        Whether a warning was logged.
    """
    file = Path(path).expanduser().absolute()
    git = shutil.which("git")
    if git is None or not file.parent.is_dir():
        return False
    try:
        result = subprocess.run([git, "-C", str(file.parent), "check-ignore", "-q", "--", file.name],
                                capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    if result.returncode != 1:  # 0: ignored; 128: not in a work tree (or git failed)
        return False
    logger.warning("%s %s lies inside a git work tree that does not ignore it: `git add .` would publish it. Add a "
                   "line '*.salt' (or its name) to the work tree's .gitignore, or keep the file outside the work "
                   "tree.", what, file)
    return True
