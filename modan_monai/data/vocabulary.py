"""Metadata vocabularies: canonical class names and their synonyms, kept as data.

A vocabulary is a set of *groups* (``modality``, ``anatomy``, and any further metadata group such as ``view`` or
``laterality``); each group maps a canonical class name to a list of synonyms. Raw values from a manifest or from
DICOM tags (``Modality`` ``CR``, ``BodyPartExamined`` ``LUNG``) are mapped to canonical names case- and
whitespace-insensitively. The multi-hot label of ModAn-MulSupCon is the concatenation of one-hot vectors, one per
group, in the order of the JSON file.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetadataVocabulary", "default_vocabulary_path"]

_UNKNOWN_POLICIES = ("error", "empty")


def default_vocabulary_path() -> Path:
    """Return the path of the packaged default vocabulary (``modan_monai/data/vocabularies/default.json``)."""
    return Path(__file__).resolve().parent / "vocabularies" / "default.json"


def _normalise(value: Any) -> str:
    """Upper-case a value and collapse runs of whitespace, so ``" chest  x-ray"`` matches ``"CHEST X-RAY"``."""
    return " ".join(str(value).split()).upper()


def _is_empty(value: Any) -> bool:
    """True for ``None``, NaN (pandas' empty cell) and blank strings."""
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


class MetadataVocabulary:
    """Maps raw metadata values to canonical classes and encodes them as multi-hot or combined-class labels.

    Args:
        groups: ``{group: {canonical_name: [synonym, ...]}}``. Group order and class order define the label layout.
        unknown: ``"error"`` raises ``ValueError`` for unknown or empty values; ``"empty"`` maps them to ``None``
            (an all-zero block in the multi-hot vector).

    Raises:
        ValueError: if ``unknown`` is not a known policy, a group is empty, or one synonym maps to two classes of
            the same group.

    Example:
        >>> vocab = MetadataVocabulary({"modality": {"XR": ["CR", "DX"], "CT": []}, "anatomy": {"chest": ["LUNG"]}})
        >>> vocab.canonical("modality", "dx")
        'XR'
        >>> vocab.class_names
        ['modality:XR', 'modality:CT', 'anatomy:chest']
        >>> vocab.encode({"modality": "CR", "anatomy": "LUNG"}).tolist()
        [1.0, 0.0, 1.0]
        >>> vocab.combined_index({"modality": "CT", "anatomy": "chest"})
        1
    """

    def __init__(self, groups: Mapping[str, Mapping[str, Sequence[str]]], unknown: str = "error") -> None:
        if unknown not in _UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {_UNKNOWN_POLICIES}, got {unknown!r}.")
        if not groups:
            raise ValueError("a MetadataVocabulary needs at least one group.")
        self.unknown = unknown
        self._groups: dict[str, dict[str, list[str]]] = {
            str(g): {str(n): list(s) for n, s in c.items()} for g, c in groups.items() if isinstance(c, Mapping)
        }
        self._classes: dict[str, list[str]] = {}
        self._lookup: dict[str, dict[str, str]] = {}
        for group, classes in groups.items():
            if not classes:
                raise ValueError(f"vocabulary group {group!r} has no classes.")
            if isinstance(classes, (str, bytes)) or not isinstance(classes, Mapping):
                raise ValueError(
                    f"vocabulary group {group!r} must map class names to synonym lists, got {type(classes).__name__}."
                )
            names = [str(name) for name in classes]
            lookup: dict[str, str] = {}
            for name in names:
                synonyms = classes[name]
                if isinstance(synonyms, (str, bytes)):
                    raise ValueError(f"vocabulary group {group!r} class {name!r}: synonyms must be a list of strings.")
                for token in (name, *synonyms):
                    key = _normalise(token)
                    if key in lookup and lookup[key] != name:
                        raise ValueError(
                            f"vocabulary group {group!r}: synonym {token!r} maps to both {lookup[key]!r} and {name!r}."
                        )
                    lookup[key] = name
            self._classes[str(group)] = names
            self._lookup[str(group)] = lookup
        self._offsets: dict[str, int] = {}
        offset = 0
        for group, names in self._classes.items():
            self._offsets[group] = offset
            offset += len(names)
        self._num_classes = offset

    @classmethod
    def from_file(cls, path: str | Path | None = None, unknown: str = "error") -> MetadataVocabulary:
        """Load a vocabulary from a JSON file ``{"groups": {group: {class: [synonyms]}}}``.

        Args:
            path: JSON file; ``None`` loads :func:`default_vocabulary_path`.
            unknown: policy for unknown values, see the class docstring.

        Returns:
            The vocabulary.

        Raises:
            FileNotFoundError: if the file does not exist.
            ValueError: if the file is not valid JSON or has no ``groups`` mapping.
        """
        file = Path(path) if path is not None else default_vocabulary_path()
        if not file.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {file}")
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"vocabulary file {file} is not valid JSON: {err}") from err
        if not isinstance(content, Mapping) or not isinstance(content.get("groups"), Mapping):
            raise ValueError(f"vocabulary file {file} must contain an object with a 'groups' mapping.")
        try:
            return cls(content["groups"], unknown=unknown)
        except ValueError as err:
            raise ValueError(f"vocabulary file {file}: {err}") from err

    @property
    def groups(self) -> dict[str, dict[str, list[str]]]:
        """A copy of the ``{group: {class: [synonyms]}}`` definition."""
        return {g: {n: list(s) for n, s in c.items()} for g, c in self._groups.items()}

    def subset(self, groups: Sequence[str] | None = None, unknown: str | None = None) -> MetadataVocabulary:
        """A vocabulary restricted to ``groups`` (in the given order) and/or with another ``unknown`` policy.

        Raises:
            ValueError: if a group is not in this vocabulary.
        """
        names = self.group_names if groups is None else [str(g) for g in groups]
        for group in names:
            self._check_group(group)
        policy = self.unknown if unknown is None else unknown
        return MetadataVocabulary({g: self._groups[g] for g in names}, unknown=policy)

    @property
    def group_names(self) -> list[str]:
        """Group names in label order."""
        return list(self._classes)

    def classes(self, group: str) -> list[str]:
        """Canonical class names of ``group`` in label order.

        Raises:
            ValueError: if the group is not in the vocabulary.
        """
        self._check_group(group)
        return list(self._classes[group])

    @property
    def class_names(self) -> list[str]:
        """Names of the multi-hot entries, ``"group:class"``, in label order."""
        return [f"{group}:{name}" for group, names in self._classes.items() for name in names]

    @property
    def num_classes(self) -> int:
        """Length of the multi-hot vector (sum of the group sizes)."""
        return self._num_classes

    @property
    def num_combined(self) -> int:
        """Number of combined classes (product of the group sizes)."""
        return int(np.prod([len(names) for names in self._classes.values()]))

    @property
    def combined_class_names(self) -> list[str]:
        """Names of the combined classes, e.g. ``"XR/chest"``, in :meth:`combined_index` order."""
        return ["/".join(combo) for combo in itertools.product(*self._classes.values())]

    def _check_group(self, group: str, context: str = "") -> None:
        if group not in self._classes:
            raise ValueError(f"{_prefix(context)}unknown metadata group {group!r}; known groups: {self.group_names}.")

    def canonical(self, group: str, value: Any, context: str = "") -> str | None:
        """Map a raw value of ``group`` to its canonical class name.

        Args:
            group: vocabulary group, e.g. ``"modality"``.
            value: raw value (canonical name or synonym, any case/whitespace).
            context: text prefixed to error messages, e.g. ``"manifest m.csv row 3"``.

        Returns:
            The canonical class name, or ``None`` for an unknown/empty value when ``unknown == "empty"``.

        Raises:
            ValueError: for an unknown group, or an unknown/empty value when ``unknown == "error"``; the message lists
                the known values of the group.
        """
        self._check_group(group, context)
        if not _is_empty(value):
            found = self._lookup[group].get(_normalise(value))
            if found is not None:
                return found
        if self.unknown == "empty":
            return None
        what = f"empty {group} value" if _is_empty(value) else f"unknown {group} value {value!r}"
        raise ValueError(f"{_prefix(context)}{what}; known {group} values: {self.known_values(group)}.")

    def known_values(self, group: str) -> dict[str, list[str]]:
        """``{canonical: [synonyms]}`` of ``group`` (upper-cased synonyms as matched)."""
        self._check_group(group)
        table: dict[str, list[str]] = {name: [] for name in self._classes[group]}
        for key, name in self._lookup[group].items():
            if key != _normalise(name):
                table[name].append(key)
        return table

    def encode(self, meta: Mapping[str, Any], context: str = "") -> np.ndarray:
        """Multi-hot label: one 1 per group at the canonical class of ``meta[group]``.

        Args:
            meta: mapping with one (raw) value per group; a missing group counts as empty.
            context: text prefixed to error messages.

        Returns:
            float32 array of shape ``(num_classes,)``; an unknown group value with ``unknown == "empty"`` leaves that
            group's block at zero.

        Raises:
            ValueError: for unknown/empty values when ``unknown == "error"``.
        """
        label = np.zeros(self._num_classes, dtype=np.float32)
        for group, names in self._classes.items():
            name = self.canonical(group, meta.get(group), context)
            if name is not None:
                label[self._offsets[group] + names.index(name)] = 1.0
        return label

    def combined_index(self, meta: Mapping[str, Any], context: str = "") -> int:
        """Index of the combination of all group values in the (row-major) product of the groups.

        Args:
            meta: mapping with one (raw) value per group.
            context: text prefixed to error messages.

        Returns:
            An integer in ``[0, num_combined)``.

        Raises:
            ValueError: if any group value is unknown or empty (a combined class needs every group, whatever the
                ``unknown`` policy).
        """
        index = 0
        for group, names in self._classes.items():
            name = self.canonical(group, meta.get(group), context)
            if name is None:
                raise ValueError(
                    f"{_prefix(context)}combined class needs a known {group} value, got {meta.get(group)!r}; "
                    f"known {group} values: {self.known_values(group)}."
                )
            index = index * len(names) + names.index(name)
        return index

    def __repr__(self) -> str:
        sizes = ", ".join(f"{group}={len(names)}" for group, names in self._classes.items())
        return f"{type(self).__name__}({sizes}, unknown={self.unknown!r})"


def _prefix(context: str) -> str:
    return f"{context}: " if context else ""
