"""A bundle served by the MONAI Label app: its parsed inference config, weights file and network.

The app reads the same ``configs/inference.json`` that ``python -m monai.bundle run`` runs, with the overrides a
user passes to the server (``--conf segment_config '{"structures": [...]}'``), so serving and batch inference use
one definition of the network, the preprocessing and the post-processing. Its ``ckpt_path`` is the served file, so
the settings the model was trained with (image size, encoder, stem, class names / structures: see
:mod:`modan_monai.networks.model_settings`) are the ones served, and an override contradicting them is refused,
naming both values. Nothing here imports monailabel.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from modan_monai.networks import check_model_settings, load_model_weights, read_model_settings

__all__ = [
    "ServedBundle",
    "ServingError",
    "inference_parser",
    "parse_overrides",
    "repository_bundle",
    "write_initial_weights",
]

logger = logging.getLogger(__name__)

_REPO_BUNDLES = Path(__file__).resolve().parents[4] / "bundles"


class ServingError(Exception):
    """A request the app refuses: ``status`` is the HTTP status the server answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message


def repository_bundle(name: str) -> Path:
    """This repository's ``bundles/<name>`` folder (the default bundle of an app model)."""
    return _REPO_BUNDLES / name


def parse_overrides(text: str | None, conf_key: str) -> dict[str, Any]:
    """Config-id overrides from a ``--conf`` value: inline JSON (``'{"image_size": 64}'``) or a JSON file path.

    Raises:
        ValueError: the value is neither a JSON object nor a readable JSON file (naming ``conf_key``).
    """
    if not text:
        return {}
    source = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"--conf {conf_key}: {text!r} is neither a JSON object nor an existing JSON file")
        source = path.read_text()
    try:
        value = json.loads(source)
    except json.JSONDecodeError as err:
        raise ValueError(f"--conf {conf_key}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"--conf {conf_key}: expected a JSON object of config ids, got {type(value).__name__}")
    return value


def inference_parser(bundle_dir: Path, overrides: Mapping[str, Any], name: str) -> ConfigParser:
    """The bundle's ``configs/inference.json`` (with its metadata) and ``overrides``, parsed.

    Raises:
        FileNotFoundError: the bundle has no ``configs/inference.json`` / ``configs/metadata.json``.
        ValueError: an override names an id the config does not have.
    """
    config_file = bundle_dir / "configs" / "inference.json"
    meta_file = bundle_dir / "configs" / "metadata.json"
    for path in (config_file, meta_file):
        if not path.is_file():
            raise FileNotFoundError(f"model {name!r}: bundle file not found: {path}")
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.read_meta(str(meta_file))
    unknown = sorted(k for k in overrides if k.split("#")[0] not in parser.config)
    if unknown:
        raise ValueError(f"model {name!r}: config overrides {unknown} are not ids of {config_file}")
    parser.update({"bundle_root": str(bundle_dir), **overrides})
    return parser


class ServedBundle:
    """One bundle's inference config and weights, for a MONAI Label task.

    Args:
        name: the app model name (``"segment"``, ``"classify"``); errors name it.
        bundle_dir: the bundle folder (``configs/inference.json``, ``configs/metadata.json``).
        model_path: the weights file served (default ``<bundle_dir>/models/model.pt``); read at the first request
            and again whenever the file changes (a training round replaces it).
        overrides: config ids to set, as ``monai.bundle run --<id> <value>`` would; each must exist in the config.

    Raises:
        FileNotFoundError: the bundle has no ``configs/inference.json`` / ``configs/metadata.json``.
        ValueError: an override names an id the config does not have, or contradicts a setting the served model
            was trained with (naming both values).
    """

    def __init__(
        self,
        name: str,
        bundle_dir: str | Path,
        model_path: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.bundle_dir = Path(bundle_dir).resolve()
        self.model_path = Path(model_path) if model_path else self.bundle_dir / "models" / "model.pt"
        self.overrides = dict(overrides or {})
        self.parser = inference_parser(self.bundle_dir, self.overrides, name)
        # the served file is the checkpoint: the config takes the settings it was trained with from it
        self.parser.update({"ckpt_path": str(self.model_path)})
        self.metadata: dict[str, Any] = dict(self.parser.get("_meta_") or {})
        self._lock = threading.Lock()
        self._network: tuple[torch.nn.Module, int, torch.device] | None = None
        if self.model_path.is_file():
            self.check_settings()

    def check_settings(self) -> None:
        """Refuse serving when this config's settings contradict those the weights file was trained with.

        Raises:
            ValueError: naming the model, each contradicting setting and both values (not the file's path).
        """
        requested = self.get("model_settings")  # the config's image size, class names, encoder arch and stem
        saved = read_model_settings(self.model_path, missing_ok=True)
        check_model_settings(saved, requested, where=f"of model {self.name!r}",
                             ids={key: f"--conf {self.name}_config {key!r}" for key in requested})

    def get(self, id: str, instantiate: bool = True) -> Any:
        """The parsed (and instantiated) content of config ``id``."""
        return self.parser.get_parsed_content(id, instantiate=instantiate)

    def description(self) -> str:
        """The bundle's ``metadata.json`` task and version."""
        return f"{self.metadata.get('task', self.name)} (bundle {self.bundle_dir.name} {self.metadata.get('version', '')})"

    def weights_info(self) -> dict[str, Any]:
        """Which weights the last request used: ``{"model", "model_mtime_ns"}`` (part of every result).

        The model is named, not its file: answers hold no server path.
        """
        cached = self._network
        return {"model": self.name, "model_mtime_ns": cached[1] if cached else None}

    def network(self, device: torch.device) -> torch.nn.Module:
        """The bundle's ``network_def`` with the served weights, in eval mode; reloaded when the file changes.

        Raises:
            ServingError: (404) the weights file does not exist; (500) it does not load into ``network_def``.
        """
        if not self.model_path.is_file():
            logger.warning(f"model {self.name!r}: weights file {self.model_path} does not exist")
            raise ServingError(
                404,
                f"model {self.name!r} has no weights file: its {self.model_path.name} does not exist (train the "
                f"bundle, or start the server with --conf {self.name}_model <path to model.pt>)",
            )
        stamp = self.model_path.stat().st_mtime_ns
        with self._lock:
            cached = self._network
            if cached is not None and cached[1] == stamp and cached[2] == device:
                return cached[0]
            network = self.get("network_def")
            try:
                self.check_settings()  # the file may have been replaced by one trained otherwise
                load_model_weights(network, self.model_path, what=f"model {self.name!r} weights")
            except (ValueError, FileNotFoundError) as err:
                logger.warning(f"model {self.name!r}: {err}")
                raise ServingError(500, str(err).replace(str(self.model_path), f"<{self.name} model>")) from err
            network = network.to(device).eval()
            if cached is not None:
                logger.info(f"model {self.name!r}: {self.model_path} changed, weights reloaded")
            self._network = (network, stamp, device)
            return network


def write_initial_weights(
    bundle_dir: str | Path, path: str | Path, overrides: Mapping[str, Any] | None = None
) -> Path:
    """Write the state dict of a freshly built ``network_def`` of the bundle's inference config.

    The weights are what ``network_def`` starts from (random, or a pretrained encoder when its ``init`` names
    one): a starting model for a first training round when no trained ``model.pt`` exists yet, and what tests
    and benchmarks serve.

    Args:
        bundle_dir: the bundle folder.
        path: the file to write.
        overrides: config ids (e.g. ``{"image_size": 64}``).

    Returns:
        ``path``.
    """
    parser = inference_parser(Path(bundle_dir).resolve(), dict(overrides or {}), "initial weights")
    parser.update({"ckpt_path": str(path)})  # no trained settings are read from another file
    network = parser.get_parsed_content("network_def")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), str(path))
    return Path(path)
