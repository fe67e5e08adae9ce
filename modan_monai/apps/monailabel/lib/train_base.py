"""What the app's training tasks share: checked round parameters and one round of a bundle's ``configs/train.json``.

A round (:class:`BundleTrain`): the request's parameters, each checked (:func:`train_params`) -> a folder
``<work_dir>/round_<time>_<random>/`` -> the task's manifest of the datastore's labels (a subclass writes it:
:class:`~modan_monai.apps.monailabel.lib.train_segment.SegmentationTrain`,
:class:`~modan_monai.apps.monailabel.lib.train_classify.ClassificationTrain`) -> ``python -m monai.bundle run`` of
the bundle's ``configs/train.json`` starting from the served weights (``start_from``) -> the best-validation
``models/model.pt`` replaces the served file atomically (a copy beside it, then ``os.replace``), so the next
inference uses it. Each round keeps its manifest, log and checkpoints in its folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from modan_monai.apps.monailabel.lib.bundle import ServedBundle, ServingError
from modan_monai.evaluation.segmentation_grid import bundle_cli_value

__all__ = ["TRAIN_DEFAULTS", "TRAIN_LIMITS", "BundleTrain", "display_path", "train_params"]

logger = logging.getLogger(__name__)

#: request parameters of a round and their defaults (shown in /info/ under the trainer's config)
TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 2, "batch_size": 4, "learning_rate": 1e-4, "val_fraction": 0.25, "seed": 0}
#: the accepted range of each parameter: ``(low, high, low inclusive, high inclusive)``
TRAIN_LIMITS: dict[str, tuple[float, float, bool, bool]] = {
    "epochs": (1, 100_000, True, True),
    "batch_size": (1, 65_536, True, True),
    "learning_rate": (0.0, 10.0, False, True),
    "val_fraction": (0.0, 1.0, False, False),
    "seed": (0, 2**32 - 1, True, True),
}


def _train_value(key: str, value: Any, default: Any, model: str) -> Any:
    kind = type(default).__name__
    article = "an" if kind == "int" else "a"
    bad = ServingError(422, f"model {model!r}: training parameter {key}={value!r} is not {article} {kind}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if not math.isfinite(number):
        raise ServingError(422, f"model {model!r}: training parameter {key}={value!r} is not a finite number")
    if isinstance(default, int):
        if isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                raise bad from None
        if number != int(number):
            raise bad
        number = int(number)
    low, high, low_in, high_in = TRAIN_LIMITS[key]
    if (number < low or (number == low and not low_in)) or (number > high or (number == high and not high_in)):
        interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise ServingError(422, f"model {model!r}: training parameter {key}={value!r} is out of range {interval}")
    return number


def train_params(request: Mapping[str, Any], model: str = "segment") -> dict[str, Any]:
    """The round's parameters from a training request, each checked (type, finite, range).

    Args:
        request: the training request.
        model: the app model errors name.

    Raises:
        ServingError: (422) a parameter is not a number of its type, not finite, or out of :data:`TRAIN_LIMITS`
            (naming it and the value).
    """
    return {key: _train_value(key, request.get(key, default), default, model)
            for key, default in TRAIN_DEFAULTS.items()}


def display_path(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` (the datastore) when it lies inside it, else as given."""
    if root and os.path.realpath(path).startswith(os.path.realpath(root) + os.sep):
        return os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    return path


class BundleTrain(TrainTask):
    """One training round of a served bundle on the datastore's labels (see the module docstring).

    Subclasses write the round's manifest and name the bundle ids it needs (:meth:`round_inputs`) and read the
    best validation metric from the round's last checkpoint (:meth:`round_metrics`).

    Args:
        bundle: the served bundle (its inference config gives the settings the round trains with).
        work_dir: folder of the training rounds.
        default_modality: the manifest's modality when the request names none.
        description: the task's description in ``/info/``.
    """

    def __init__(self, bundle: ServedBundle, work_dir: str | Path, default_modality: str, description: str) -> None:
        super().__init__(description)
        self.bundle = bundle
        self.work_dir = Path(work_dir)
        self.default_modality = default_modality
        self._last: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        """The round's parameters and their defaults."""
        return dict(TRAIN_DEFAULTS)

    def stats(self) -> dict[str, Any]:
        """The last round's result."""
        return dict(self._last)

    def round_inputs(
        self, request: Mapping[str, Any], datastore: Datastore, params: Mapping[str, Any], round_dir: Path
    ) -> tuple[Path, dict[str, Any]]:
        """Write the round's manifest into ``round_dir``; return it and the bundle ids the round sets besides
        ``bundle_root``, ``output_dir``, ``manifest``, ``start_from``, ``epochs``, ``batch_size``,
        ``learning_rate`` and ``seed``.

        Raises:
            ServingError: (4xx) labels the round cannot train on, naming the image / label and the cause.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement round_inputs")

    def round_metrics(self, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """The best validation metric and its epoch, from the round's last ``checkpoint_epoch=N.pt``."""
        raise NotImplementedError(f"{type(self).__name__} must implement round_metrics")

    def _command(self, args: Mapping[str, Any]) -> list[str]:
        configs = self.bundle.bundle_dir / "configs"
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(configs / "train.json"),
               "--logging_file", str(configs / "logging.conf")]
        for key, value in args.items():
            cmd += [f"--{key}", bundle_cli_value(value)]
        return cmd

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Run one round; returns the model name, its best validation metric and epoch, the images per split, the
        batch size used and the round's folder.

        The parameters are checked first (:func:`train_params`); a ``batch_size`` larger than the training split's
        rows is clamped to that number (logged), so the documented minimum number of labelled images trains.

        Raises:
            ServingError: (422) a bad parameter or label (naming it); (404) the served weights file does not exist;
                (500) the bundle run failed or wrote no ``models/model.pt`` (naming the round's log).
        """
        start = time.time()
        name = self.bundle.name
        params = train_params(request, name)
        served = self.bundle.model_path
        if not served.is_file():
            logger.warning(f"{name} training: the served weights {served} do not exist")
            raise ServingError(404, f"model {name!r} has no weights file to fine-tune: its {served.name} does not "
                                    f"exist (start the server with --conf {name}_model <path to model.pt>)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        round_dir = Path(tempfile.mkdtemp(prefix=time.strftime("round_%Y%m%d_%H%M%S_"), dir=self.work_dir))
        manifest, task_args = self.round_inputs(request, datastore, params, round_dir)
        frame = pd.read_csv(manifest)
        train_rows = int((frame["split"] == "train").sum())
        if params["batch_size"] > train_rows:
            logger.info(f"{name} training: batch_size {params['batch_size']} clamped to {train_rows}, the number "
                        f"of training rows the split gives")
            params["batch_size"] = train_rows
        args = {
            "bundle_root": str(self.bundle.bundle_dir),
            "output_dir": str(round_dir / "models"),
            "manifest": str(manifest),
            **task_args,
            "start_from": str(served),
            "epochs": params["epochs"],
            "batch_size": params["batch_size"],
            "learning_rate": params["learning_rate"],
            "seed": params["seed"],
        }
        cmd = self._command(args)
        log_path = round_dir / "train.log"
        logger.info(f"{name} training round: {' '.join(cmd)}")
        with open(log_path, "w") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(round_dir)).returncode
        shown = f"round {round_dir.name}/train.log"
        if code != 0:
            tail = log_path.read_text().strip().splitlines()[-3:]
            raise ServingError(500, f"model {name!r}: training round failed (exit {code}); see {shown}: "
                                    + " | ".join(tail))
        best = round_dir / "models" / "model.pt"
        if not best.is_file():
            raise ServingError(500, f"model {name!r}: training round wrote no models/model.pt; see {shown}")
        checkpoints = sorted((round_dir / "models").glob("checkpoint_epoch=*.pt"), key=os.path.getmtime)
        state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True) if checkpoints else {}
        tmp = served.with_name(served.name + ".incoming")
        shutil.copyfile(best, tmp)
        os.replace(tmp, served)
        self._last = {
            "model": name,
            **self.round_metrics(state),
            "train_images": int(frame.query("split == 'train'")["path"].nunique()),
            "val_images": int(frame.query("split == 'val'")["path"].nunique()),
            "batch_size": params["batch_size"],
            "round": round_dir.name,
            "seconds": round(time.time() - start, 1),
        }
        logger.info(f"{name} training round done: {json.dumps(self._last)}")
        return dict(self._last)
