"""MONAI's ``CSVSaver`` with a header row (``file``, then one name per value column)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from monai.data import CSVSaver

__all__ = ["HeaderCSVSaver", "probability_header"]


def probability_header(class_names: Sequence[str], first: str = "file") -> list[str]:
    """The header of a per-class probability CSV: ``[first, "p(<class 0>)", "p(<class 1>)", ...]``.

    Args:
        class_names: one name per probability column, in class-index order.
        first: the name of the first column (the image, file or exam).

    Raises:
        ValueError: an empty or repeated class name, or no class names.
    """
    names = [str(n) for n in class_names]
    if not names or any(not n.strip() for n in names) or len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct non-empty names, one per class, got {list(class_names)!r}.")
    return [first] + [f"p({n})" for n in names]


class HeaderCSVSaver(CSVSaver):
    """``monai.data.CSVSaver`` that writes ``header`` as the file's first row.

    Give it to ``monai.handlers.ClassificationSaver(saver=...)``. Unlike ``CSVSaver`` it touches no file when it
    is built: with ``overwrite`` the first :meth:`finalize` replaces the file, later ones (and all of them without
    ``overwrite``) append; the header is written whenever the file is new or empty.

    Args:
        header: column names, the first one for the file / image name, then one per value.
        output_dir: folder of the CSV file.
        filename: name of the CSV file.
        overwrite: replace an existing file at the first :meth:`finalize` (``False``: append to it).
        flush: write at every ``save_batch``.
        delimiter: column delimiter.

    Raises:
        ValueError: (at :meth:`finalize`) a row whose number of values differs from ``len(header) - 1``, naming
            the file, the row and the header.

    Example:
        >>> import numpy as np
        >>> saver = HeaderCSVSaver(["file", "p(negative)", "p(positive)"], output_dir="eval")
        >>> saver.save(np.array([0.25, 0.75]), {"filename_or_obj": "a.png"})  # finalize() writes eval/predictions.csv
    """

    def __init__(
        self,
        header: Sequence[str],
        output_dir: str | Path = "./",
        filename: str = "predictions.csv",
        overwrite: bool = True,
        flush: bool = False,
        delimiter: str = ",",
    ) -> None:
        super().__init__(output_dir=output_dir, filename=filename, overwrite=False, flush=flush, delimiter=delimiter)
        self.header = [str(h) for h in header]
        if len(self.header) < 2:
            raise ValueError(f"header of {self._filepath} needs the file column and at least one value column, "
                             f"got {self.header!r}.")
        self.overwrite = overwrite
        self._replace = overwrite

    def finalize(self) -> None:
        """Write the cached rows (after the header when the file is new or empty; names with a delimiter are
        quoted), then clear the cache."""
        for name, values in self._cache_dict.items():
            if values.size != len(self.header) - 1:
                raise ValueError(
                    f"{self._filepath}: row {name!r} has {values.size} values but the header {self.header} names "
                    f"{len(self.header) - 1} (check num_classes against class_names)."
                )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self._filepath, "w" if self._replace else "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.delimiter)
            if f.tell() == 0:
                writer.writerow(self.header)
            writer.writerows([name, *(str(v) for v in values.flatten())] for name, values in self._cache_dict.items())
        self._replace = False
        self.reset_cache()
