"""Manifest builder for a folder tree of DICOM files (any depth, any file names).

Expected raw layout: any directory tree whose files are DICOM Part-10 files (with or without a ``.dcm`` suffix), for
example the shared TCGA CT slices::

    ct_tcga_dicom/dicom_dir/ID_0000_AGE_0060_CONTRAST_1_CT.dcm
    ct_tcga_dicom/dicom_dir/...

Every file is opened with ``pydicom.dcmread(stop_before_pixels=True)`` (which checks the 128-byte preamble and
``DICM`` prefix), so files are recognised by content, not by suffix. One row per file:

- ``modality`` / ``anatomy``: the raw ``Modality`` / ``BodyPartExamined`` values (e.g. ``CT`` / ``LUNG``); the
  vocabulary maps synonyms (``LUNG`` and ``CHEST`` both become ``chest``). Empty when the tag is absent.
- ``case_id``: a pseudonym, never the raw identifier: ``pid-`` + the first 16 hex digits of
  HMAC-SHA256(salt, ``PatientID``), or ``study-`` + the same hash of ``StudyInstanceUID`` when the patient id is empty
  (see :func:`pseudonym`). The same salt gives the same pseudonym in every build; without the salt the patient id
  cannot be recovered from it (nor confirmed by hashing guessed ids).
- ``index`` empty (multi-frame files are expanded by the dataset), ``key`` empty.
- extra columns ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID`` only with ``keep_uids=True`` (UIDs
  identify the exam at the hospital that made it: leave them out of anything you share).

No other header value (PatientName, PatientBirthDate, AccessionNumber, ...) is read into the manifest. The ``path``
column holds the file paths: do not name files or folders after patients.

The salt is ``salt=`` (a string), or the contents of ``salt_file=`` (created with a random 256-bit secret, mode 0600,
when it does not exist). Without either, the salt file is ``$MODAN_DICOM_SALT_FILE`` or
``~/.config/modan_monai/dicom.salt``. ``scripts/build_manifest.py`` uses ``<manifest>.salt`` beside the manifest it
writes. Keep the salt file private and never share it with the manifest or any run output: anyone holding it can
test guessed patient ids against the pseudonyms. Deleting it gives every case a new pseudonym at the next build. A
salt file inside a git work tree that does not ignore it gets a warning naming it (``git add .`` would publish it;
the project's ``.gitignore`` ignores ``*.salt``).

A file that is not DICOM is an error listing the files, unless ``ignore_non_dicom=True``, which logs a warning with the
count and names. ``DICOMDIR`` media directory files carry no image and are always left out with a warning.

The tree is walked following linked folders (each real folder once, see :func:`data_manifests._common.walk_files`;
hidden files are read too); a broken link is an error naming it. Only the headers are read, never the pixel data.
``workers=N`` reads them in N processes (``concurrent.futures.ProcessPoolExecutor``, files handed out in chunks); the
frame is the same for any N: rows are in path order and every check runs on the results in that order.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from ._common import as_frame, logger, preview, require_dir, walk_files, warn_if_not_ignored

__all__ = ["PSEUDONYM_PREFIXES", "SALT_FILE_ENV", "build", "default_salt_file", "load_or_create_salt", "pseudonym"]

_MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
_UID_COLUMNS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

#: source tag -> prefix of its pseudonym (recognisable as a pseudonym, and telling which tag it came from).
PSEUDONYM_PREFIXES: dict[str, str] = {"PatientID": "pid-", "StudyInstanceUID": "study-"}
#: environment variable naming the salt file used when neither ``salt`` nor ``salt_file`` is given.
SALT_FILE_ENV = "MODAN_DICOM_SALT_FILE"
_PSEUDONYM_HEX_DIGITS = 16  # 64 bits: no collision in any realistic number of patients (checked anyway)
_CHUNKS_PER_WORKER = 4  # chunks handed to each process: large enough to amortise the pickling, small to balance


def _text(dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return "" if value is None else str(value).strip()


def pseudonym(value: str, salt: str, tag: str = "PatientID") -> str:
    """Salted pseudonym of an identifier: ``<prefix>`` + 16 hex digits of HMAC-SHA256(salt, ``"<tag>:<value>"``).

    Args:
        value: the raw identifier (e.g. a PatientID), non-empty.
        salt: the secret key (see :func:`load_or_create_salt`).
        tag: a key of :data:`PSEUDONYM_PREFIXES`; part of the hashed message, so a PatientID and a
            StudyInstanceUID with the same text get different pseudonyms.

    Returns:
        e.g. ``"pid-3f9a0c1e5b7d2a48"``.

    Raises:
        ValueError: for an empty value or salt, or an unknown tag.

    Example:
        >>> pseudonym("12345", "secret") == pseudonym("12345", "secret") != pseudonym("12345", "other")
        True
    """
    if tag not in PSEUDONYM_PREFIXES:
        raise ValueError(f"pseudonym: unknown tag {tag!r}; known: {sorted(PSEUDONYM_PREFIXES)}.")
    if not value:
        raise ValueError(f"pseudonym: empty {tag}.")
    if not salt:
        raise ValueError("pseudonym: the salt is empty.")
    digest = hmac.new(salt.encode("utf-8"), f"{tag}:{value}".encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIXES[tag] + digest[:_PSEUDONYM_HEX_DIGITS]


def default_salt_file() -> Path:
    """``$MODAN_DICOM_SALT_FILE`` if set, else ``~/.config/modan_monai/dicom.salt``."""
    env = os.environ.get(SALT_FILE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".config" / "modan_monai" / "dicom.salt"


def load_or_create_salt(path: str | Path) -> str:
    """The salt held in ``path``; a new file with a random 256-bit secret (64 hex digits, mode 0600) if absent.

    Args:
        path: salt file (e.g. ``<manifest>.salt``). Its parent folder is created when missing.

    Returns:
        The salt: the file's text without surrounding whitespace. A file inside a git work tree that does not ignore
        it is named in a warning (see :func:`data_manifests._common.warn_if_not_ignored`).

    Raises:
        ValueError: if the file exists but cannot be read (a folder, no permission, not UTF-8 text) or is empty, or
            cannot be created. The message names the file.
    """
    file = Path(path).expanduser()
    if not file.exists():
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created by a concurrent build: read that one
            pass
        except OSError as err:
            raise ValueError(f"cannot create the DICOM pseudonym salt file {file}: {type(err).__name__}: {err}. "
                             "Pass another salt file (--salt-file / salt_file=) or the salt itself.") from err
        else:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            logger.warning("created the DICOM pseudonym salt file %s: keep it private (never share it with the "
                           "manifest or any output) and keep it: the same salt gives the same case_id pseudonyms "
                           "in later builds.", file)
    try:
        salt = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the DICOM pseudonym salt file {file}: {type(err).__name__}: {err}. Fix its "
                         "permissions or pass the salt itself; do not replace it, a new salt changes every "
                         "case_id.") from err
    if not salt:
        raise ValueError(f"the DICOM pseudonym salt file {file} is empty: restore the salt it held, or delete the "
                         "file to start a new salt (every case_id then changes).")
    warn_if_not_ignored(file, "the DICOM pseudonym salt file")
    return salt


def _resolve_salt(salt: str | None, salt_file: str | Path | None) -> str:
    if salt is not None and salt_file is not None:
        raise ValueError("dicom_dir: pass either salt or salt_file, not both.")
    if salt is not None:
        if not str(salt).strip():
            raise ValueError("dicom_dir: salt is empty; pass a secret string or a salt_file.")
        return str(salt)
    file = Path(salt_file) if salt_file is not None else default_salt_file()
    if salt_file is None:
        logger.info("DICOM pseudonym salt file: %s (set salt_file= or %s to use another)", file, SALT_FILE_ENV)
    return load_or_create_salt(file)


def _read_header(file: Path) -> dict[str, Any]:
    """The header values a manifest row needs, read with ``stop_before_pixels=True`` (runs in a worker process).

    Returns:
        ``{"kind": "image", "modality", "anatomy", "tag", "identifier", <UIDs>}``, ``{"kind": "media"}`` for a
        DICOMDIR, or ``{"kind": "error", "error": "<exception type>: <message>"}`` for a file that is not DICOM.
        Plain values only, so the result pickles cheaply back to the parent process.
    """
    try:
        header = dcmread(file, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError) as err:
        return {"kind": "error", "error": f"{type(err).__name__}: {err}"}
    sop_class = _text(header.file_meta, "MediaStorageSOPClassUID") if hasattr(header, "file_meta") else ""
    if sop_class == _MEDIA_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in header:
        return {"kind": "media"}
    tag = "PatientID" if _text(header, "PatientID") else "StudyInstanceUID"
    values = {"kind": "image", "modality": _text(header, "Modality"), "anatomy": _text(header, "BodyPartExamined"),
              "tag": tag, "identifier": _text(header, tag)}
    values.update({column: _text(header, column) for column in _UID_COLUMNS})
    return values


def _read_headers(files: Sequence[Path], workers: int) -> list[dict[str, Any]]:
    """:func:`_read_header` of every file, in the order of ``files``; in this process for ``workers=1``."""
    if workers == 1 or len(files) < 2:
        return [_read_header(file) for file in files]
    chunksize = max(1, len(files) // (workers * _CHUNKS_PER_WORKER))
    with ProcessPoolExecutor(max_workers=min(workers, len(files))) as pool:
        return list(pool.map(_read_header, files, chunksize=chunksize))


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"dicom_dir: option workers must be an integer >= 1 (1 reads in this process), got "
                         f"{workers!r}.")
    return workers


def build(
    root: str | Path,
    dataset: str = "dicom",
    split: str = "train",
    ignore_non_dicom: bool = False,
    salt: str | None = None,
    salt_file: str | Path | None = None,
    keep_uids: bool = False,
    workers: int = 1,
) -> pd.DataFrame:
    """Build a manifest of every DICOM file under ``root``, with pseudonymous ``case_id`` values.

    Args:
        root: folder to walk recursively.
        dataset: value of the ``dataset`` column.
        split: value of the ``split`` column.
        ignore_non_dicom: leave non-DICOM files out with a warning instead of raising.
        salt: secret key of the ``case_id`` pseudonyms.
        salt_file: file holding the salt, created with a random one when absent (default, when ``salt`` is not
            given either: :func:`default_salt_file`).
        keep_uids: add the Study/Series/SOP Instance UID columns (left out by default).
        workers: processes reading the headers; 1 reads them in this process. The frame does not depend on it.

    Returns:
        Manifest frame with absolute paths, sorted by path.

    Raises:
        FileNotFoundError: if ``root`` is not a folder.
        ValueError: if non-DICOM files are present (and not ignored), a file has neither PatientID nor
            StudyInstanceUID, no DICOM file is found, both or an empty salt are given, or the salt file cannot be
            read or created, ``workers`` is not an integer >= 1, or a symbolic link is broken.
    """
    workers = _check_workers(workers)
    folder = require_dir(root, "DICOM root")
    secret = _resolve_salt(salt, salt_file)
    rows, non_dicom, media_dirs = [], [], []
    owners: dict[str, tuple[str, Path]] = {}  # pseudonym -> (raw identifier, first file), for the collision check
    files = walk_files(folder, "DICOM root", hidden=True)
    for file, header in zip(files, _read_headers(files, workers)):
        if header["kind"] == "error":
            non_dicom.append((file, header["error"]))
            continue
        if header["kind"] == "media":
            media_dirs.append(file)
            continue
        tag, identifier = header["tag"], header["identifier"]
        if not identifier:
            raise ValueError(f"DICOM file {file} has neither PatientID nor StudyInstanceUID: cannot set case_id.")
        case_id = pseudonym(identifier, secret, tag)
        owner = owners.setdefault(case_id, (f"{tag}:{identifier}", file))
        if owner[0] != f"{tag}:{identifier}":  # the raw identifiers stay out of the message
            raise ValueError(f"DICOM files {owner[1]} and {file}: two different patient ids share the pseudonym "
                             f"{case_id}; build again with another salt.")
        row = {"path": str(file), "modality": header["modality"], "anatomy": header["anatomy"],
               "split": split, "dataset": dataset, "case_id": case_id}
        if keep_uids:
            row.update({column: header[column] for column in _UID_COLUMNS})
        rows.append(row)
    if media_dirs:
        logger.warning("DICOM root %s: left out %d DICOMDIR file(s) without images: %s", folder, len(media_dirs),
                       preview(media_dirs))
    if non_dicom:
        names = [str(f) for f, _ in non_dicom]
        if not ignore_non_dicom:
            raise ValueError(
                f"DICOM root {folder}: {len(non_dicom)} file(s) are not DICOM ({non_dicom[0][1]}): {preview(names)}. "
                "Remove them or pass ignore_non_dicom=True."
            )
        logger.warning("DICOM root %s: ignored %d non-DICOM file(s): %s", folder, len(names), preview(names, 50))
    return as_frame(rows, f"DICOM root {folder}")
