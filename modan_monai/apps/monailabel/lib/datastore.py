"""The app's datastore: MONAI Label's local datastore, confined to its folder.

:class:`ConfinedDatastore` is the one place where the app turns an image id, label id or label tag into a file.
Every id and tag must be a plain name (:func:`~modan_monai.apps.monailabel.lib.safety.plain_name`), and every
file read, written or deleted must resolve (links followed) inside the datastore folder, so that every endpoint
MONAI Label mounts (``/datastore``, ``/infer``, ``/train``, ``/activelearning``, ``/batch``, ``/scoring``) stays
inside it. Looking up an id that is missing, not a plain name, or a link leading out gets one answer (404,
``parameter <name>: no image '<id>' in the datastore``), so the answer tells nothing about the server's files.
Writes refuse a bad id or tag (400), an upload that is not one of the datastore's file types (415: no ``.html``,
``.py`` or ``.json`` lands in the datastore, so nothing it serves runs in a browser or overwrites its index), and
a destination that leads out or is a hard link (403: writing would change the file's other names, which may lie
outside), naming the parameter.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.datastore.local import LocalDatastore

from modan_monai.apps.monailabel.lib.bundle import ServingError
from modan_monai.apps.monailabel.lib.safety import inside, name_problem, plain_name, shown

__all__ = ["ConfinedDatastore"]

logger = logging.getLogger(__name__)


class ConfinedDatastore(LocalDatastore):
    """MONAI Label's :class:`LocalDatastore` that reads, writes and deletes only inside ``datastore_path``.

    The HTTP parameter each method's id arrives in is named in its errors: ``image`` (look-ups, uploads and
    labels of an image), ``id`` (deletions), ``label`` (label look-ups) and ``tag``.

    Args:
        datastore_path: the studies folder.
        kwargs: :class:`LocalDatastore` options (``extensions``, ``auto_reload``, ``read_only``).

    Example:
        >>> store = ConfinedDatastore("/data/cxr", extensions=["*.png"])  # doctest: +SKIP
        >>> store.get_image_uri("../etc/passwd")  # doctest: +SKIP
        ServingError: parameter image: no image '../etc/passwd' in the datastore
    """

    def __init__(self, datastore_path: str, **kwargs: Any) -> None:
        self.root = os.path.realpath(datastore_path)
        super().__init__(self.root, **kwargs)

    # -- helpers -------------------------------------------------------------------------------------------------
    def relative(self, path: str) -> str:
        """``path`` relative to the datastore (as answers name files)."""
        return os.path.relpath(os.path.realpath(path), self.root)

    def _refuse_outside(self, path: str, what: str) -> bool:
        if inside(path, self.root):
            return False
        logger.warning(f"refused {what}: {path} resolves to {os.path.realpath(path)}, outside the datastore "
                       f"{self.root}")
        return True

    @staticmethod
    def _no_image(image_id: Any, parameter: str) -> ServingError:
        return ServingError(404, f"parameter {parameter}: no image {shown(image_id)} in the datastore")

    @staticmethod
    def _no_label(label_id: Any, tag: Any, parameter: str) -> ServingError:
        return ServingError(404, f"parameter {parameter}: no label {shown(label_id)} with tag {shown(tag)} in the "
                                 "datastore")

    def image_file(self, image_id: Any, parameter: str = "image") -> str:
        """The file of image ``image_id``.

        Raises:
            ServingError: (404, the same answer for each) the id is not a plain name, is not in the datastore, or
                its file is missing or resolves outside the datastore.
        """
        if name_problem(image_id) is not None:
            raise self._no_image(image_id, parameter)
        uri = super().get_image_uri(image_id)
        if not uri or self._refuse_outside(uri, f"image {image_id!r}") or not os.path.isfile(uri):
            raise self._no_image(image_id, parameter)
        return uri

    def label_file(self, label_id: Any, tag: Any, parameter: str = "label") -> str:
        """The file of the label ``label_id`` with ``tag`` (404 as :meth:`image_file`)."""
        if name_problem(label_id) is not None or name_problem(tag) is not None:
            raise self._no_label(label_id, tag, parameter)
        uri = super().get_label_uri(label_id, tag)
        if not uri or self._refuse_outside(uri, f"label {label_id!r} ({tag!r})") or not os.path.isfile(uri):
            raise self._no_label(label_id, tag, parameter)
        return uri

    def _writable(self, path: str, parameter: str, value: Any) -> str:
        if self._refuse_outside(path, f"writing {parameter}={value!r}"):
            raise ServingError(403, f"parameter {parameter}: {shown(value)} leads outside the datastore; refused")
        links = os.stat(path).st_nlink if os.path.isfile(path) else 1
        if links > 1:
            logger.warning(f"refused writing {parameter}={value!r}: {path} has {links} hard links")
            raise ServingError(403, f"parameter {parameter}: the file of {shown(value)} has other names (hard links), "
                                    "which may lie outside the datastore; refused")
        return path

    def _upload_type(self, filename: str, parameter: str) -> str:
        """The datastore file type (suffix) of an upload, which must be one of the datastore's."""
        _, ext = self._to_id(os.path.basename(filename))
        types = [e.replace("*", "") for e in self._extensions]
        if ext not in types:
            raise ServingError(415, f"parameter {parameter}: an uploaded {ext or 'suffix-less'} file; the datastore "
                                    f"takes {types}")
        return ext

    def _list_files(self, path: str, patterns: Any) -> dict[str, str]:
        """MONAI Label's folder listing without the entries (links) that resolve outside (a warning names each)."""
        files = super()._list_files(path, patterns)
        return {k: v for k, v in files.items() if not self._refuse_outside(os.path.join(path, v), f"listing {v!r}")}

    # -- look-ups ------------------------------------------------------------------------------------------------
    def get_image_uri(self, image_id: str) -> str:
        """See :meth:`image_file` (parameter ``image``)."""
        return self.image_file(image_id, "image")

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        """MONAI Label's image info with ``path`` relative to the datastore."""
        self.image_file(image_id, "image")
        info = super().get_image_info(image_id)
        if "path" in info:
            info["path"] = self.relative(info["path"])
        return info

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        """See :meth:`label_file` (parameter ``label``)."""
        return self.label_file(label_id, label_tag, "label")

    def get_label_info(self, label_id: str, label_tag: str) -> dict[str, Any]:
        """MONAI Label's label info (404 for a label that :meth:`label_file` refuses)."""
        self.label_file(label_id, label_tag, "label")
        return super().get_label_info(label_id, label_tag)

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        """MONAI Label's ``{"image", "label"}`` pairs, without a pair whose file resolves outside (a warning)."""
        pairs = []
        for pair in super().datalist(full_path=True):
            if any(self._refuse_outside(path, "training pair") for path in pair.values()):
                continue
            pairs.append(pair if full_path else {k: self.relative(v) for k, v in pair.items()})
        return pairs

    def get_dataset_archive(self, limit_cases: int | None) -> str:
        """MONAI Label's archive of the labelled pairs (404 when there is none)."""
        if not self.datalist():
            raise ServingError(404, "the datastore has no image with a final label to archive")
        return super().get_dataset_archive(limit_cases)

    # -- writes --------------------------------------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Copy an uploaded image in as ``image_id`` (a plain name, parameter ``image``)."""
        plain_name(image_id, "image")
        ext = self._upload_type(image_filename, "file")
        self._writable(os.path.join(self._datastore.image_path(), self._filename(image_id, ext)), "image", image_id)
        return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id: str) -> None:
        """Delete image ``image_id`` (parameter ``id``) and its labels."""
        self.image_file(image_id, "id")
        obj = self._datastore.objects.get(image_id)
        for tag in list(obj.labels.keys()) if obj else []:
            self.label_file(image_id, tag, "id")
        super().remove_image(image_id)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Store an uploaded label of image ``image_id`` (parameter ``image``) under ``label_tag`` (``tag``)."""
        self.image_file(image_id, "image")
        plain_name(label_tag, "tag")
        folder = self._writable(self._datastore.label_path(label_tag), "tag", label_tag)
        ext = self._upload_type(label_filename, "label")
        self._writable(os.path.join(folder, self._filename(image_id, ext)), "image", image_id)
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        """Delete the label ``label_id`` (parameter ``id``) with ``label_tag``."""
        self.label_file(label_id, label_tag, "id")
        super().remove_label(label_id, label_tag)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        """Update the info of image ``image_id`` (parameter ``image``)."""
        self.image_file(image_id, "image")
        if not isinstance(info, dict):
            raise ServingError(422, f"parameter info: expected a JSON object, got {type(info).__name__}")
        return super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        """Update the info of label ``label_id`` (parameter ``label``) with ``label_tag``."""
        self.label_file(label_id, label_tag, "label")
        if not isinstance(info, dict):
            raise ServingError(422, f"parameter info: expected a JSON object, got {type(info).__name__}")
        return super().update_label_info(label_id, label_tag, info)
