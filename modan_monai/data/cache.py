"""The bundles' ``cache`` id: decoded, resized images kept in memory, on disk, or not at all.

- ``memory``: MONAI's ``CacheDataset`` (every image decoded once, held in RAM; ``cache_rate`` of them);
- ``disk``: MONAI's ``PersistentDataset``: the output of the deterministic transforms (decode, window, resize...)
  is written once per image as a ``.pt`` file under ``cache_dir`` and read back in later epochs and later runs;
  for corpora larger than memory;
- ``none``: MONAI's ``Dataset``, decoding every image at every epoch.

A disk entry is keyed by the row (its file paths and metadata), the size and modification time of every file
the row names, and a fingerprint of the deterministic transforms' settings (class and parameter values), so
an edited image, or another ``image_size`` / window / reader setting, never reads a stale entry: the entry is
built again under a new key. Each settings fingerprint gets its own subfolder of ``cache_dir`` with a
``settings.json`` describing it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, RandomizableTrait, Transform
from monai.utils import convert_to_tensor

__all__ = ["CACHE_MODES", "cached_dataset", "default_cache_dir", "row_key", "transform_settings"]

#: values of the ``cache`` id
CACHE_MODES = ("memory", "disk", "none")
_SKIPPED = (np.random.RandomState, np.random.Generator)


def default_cache_dir() -> str:
    """``$MODAN_MONAI_CACHE_DIR``, else ``~/.cache/modan_monai/datasets`` (shared by runs of every bundle)."""
    return os.environ.get("MODAN_MONAI_CACHE_DIR") or str(Path.home() / ".cache" / "modan_monai" / "datasets")


def _describe(value: Any, depth: int = 0) -> Any:
    """A JSON description of a transform or setting: class and public parameter values, never object addresses."""
    if depth > 8 or isinstance(value, _SKIPPED) or callable(getattr(value, "get_state", None)):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (os.PathLike, bytes, type)) or type(value).__module__ == "torch" and not hasattr(value, "__dict__"):
        return str(value)  # paths, classes (dtype=np.float32), torch.dtype and the like
    if isinstance(value, np.ndarray) and value.size <= 64:
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _describe(v, depth + 1) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_describe(v, depth + 1) for v in items]
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    attributes = getattr(value, "__dict__", None)
    if not isinstance(attributes, dict):
        return kind
    return {
        "class": kind,
        **{k: _describe(v, depth + 1) for k, v in sorted(attributes.items()) if not k.startswith("__") and k != "R"},
    }


def transform_settings(transforms: Sequence[Any] | Any) -> dict[str, Any]:
    """The description of ``transforms`` that the disk cache's subfolder is named after (see the module)."""
    import monai

    import modan_monai

    items = list(transforms) if isinstance(transforms, (list, tuple)) else [transforms]
    return {"monai": monai.__version__, "modan_monai": modan_monai.__version__,
            "transforms": [_describe(t) for t in items]}


def _digest(description: Any) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:24]


def row_key(row: Mapping[str, Any]) -> bytes:
    """Hash of a datalist row with the size and modification time of each file it names (``hash_func``)."""
    stats = {}
    for key, value in sorted(row.items(), key=lambda kv: str(kv[0])):
        if isinstance(value, str) and os.path.isfile(value):
            stat = os.stat(value)
            stats[str(key)] = [stat.st_size, stat.st_mtime_ns]
    return _digest({"row": _describe(dict(row)), "files": stats}).encode()


def _deterministic_prefix(transform: Callable) -> list[Any]:
    """The transforms PersistentDataset caches: those before the first random one (as MONAI does)."""
    flat = transform.flatten().transforms if isinstance(transform, Compose) else [transform]
    prefix = []
    for item in flat:
        if isinstance(item, RandomizableTrait) or not isinstance(item, Transform):
            break
        prefix.append(item)
    return prefix


def _writable_folder(cache_dir: str | os.PathLike[str], key: str) -> Path:
    folder = Path(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"config id '{key}' is {str(cache_dir)!r}, which cannot be written ({err.strerror or err}); give a "
            "writable folder, or set the config id 'cache' to memory or none."
        ) from err
    return folder


def cached_dataset(
    data: Sequence[Mapping[str, Any]],
    transform: Callable,
    cache: str = "memory",
    cache_dir: str | os.PathLike[str] | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = 0,
    progress: bool = True,
) -> Dataset:
    """The dataset of one bundle role for the ``cache`` id (``memory``, ``disk`` or ``none``; see the module).

    Args:
        data: the datalist.
        transform: the whole transform chain (deterministic part first, then the random augmentation).
        cache: ``memory`` (``CacheDataset``), ``disk`` (``PersistentDataset`` under ``cache_dir``), ``none``.
        cache_dir: the disk cache's folder (default :func:`default_cache_dir`); one subfolder per settings
            fingerprint.
        cache_rate: fraction cached in memory (``memory`` only).
        num_workers: workers filling the memory cache.
        progress: show the memory cache's progress bar.

    Returns:
        The dataset.

    Raises:
        ValueError: an unknown ``cache`` value (naming the config id and the choices).
        PermissionError: a ``cache_dir`` that cannot be written (naming the config id).
    """
    mode = str(cache).lower()
    if mode not in CACHE_MODES:
        raise ValueError(f"config id 'cache' must be one of {list(CACHE_MODES)}, got {cache!r}.")
    if mode == "memory":
        return CacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=progress)
    if mode == "none":
        return Dataset(data, transform)
    folder = _writable_folder(cache_dir if cache_dir is not None else default_cache_dir(), "cache_dir")
    settings = transform_settings(_deterministic_prefix(transform))
    fingerprint = _digest(settings)
    subfolder = folder / fingerprint
    subfolder.mkdir(exist_ok=True)
    description = subfolder / "settings.json"
    if not description.is_file():
        tmp = subfolder / f".settings-{os.getpid()}.json"
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, description)
    return _PersistentDataset(data, transform, cache_dir=subfolder, hash_func=row_key)


class _PersistentDataset(PersistentDataset):
    """``PersistentDataset`` whose cached part is plain tensors both when it is built and when it is read back.

    MONAI's returns a ``MetaTensor`` when it builds an entry and a plain tensor when it reads one
    (``track_meta=False``), so the first epoch and the later ones would differ in type.
    """

    def _pre_transform(self, item_transformed: Any) -> Any:
        return convert_to_tensor(super()._pre_transform(item_transformed), convert_numeric=False, track_meta=False)
