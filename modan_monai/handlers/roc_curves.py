"""ROC curves of an evaluation, one per class (binary: the positive class), written as a PNG."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from modan_monai.utils.atomic import atomic_path

__all__ = ["ROCCurveSaver", "plot_class_roc"]


def plot_class_roc(
    targets: np.ndarray, scores: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """One ROC curve per class / label (:func:`sklearn.metrics.roc_curve`), entries whose target is ``NaN`` left out.

    A class without a positive or a negative among the counted rows has no curve; it is named in the legend.

    Args:
        targets: ``(N, C)`` 0/1 targets (one-hot for a multi-class task), ``NaN`` where ignored.
        scores: ``(N, C)`` scores.
        class_names: the ``C`` names.
        path: the PNG file (written atomically).
        title: the plot title.

    Returns:
        ``path``.

    Raises:
        ValueError: shapes that do not match the class names.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    y, p = np.asarray(targets, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    names = [str(n) for n in class_names]
    if y.shape != p.shape or y.ndim != 2 or y.shape[1] != len(names):
        raise ValueError(f"ROC curves of {names}: targets {y.shape} and scores {p.shape} must both be "
                         f"(N, {len(names)}).")
    fig = Figure(figsize=(5.4, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for j, name in enumerate(names):
        counted = ~np.isnan(y[:, j])
        truth, score = y[counted, j], p[counted, j]
        if not 0 < truth.sum() < len(truth):
            ax.plot([], [], label=f"{name} (no AUC: one class only)")
            continue
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(truth, score):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return path


class ROCCurveSaver:
    """Collect an evaluator's probabilities and labels and write ``roc.png``, one ROC curve per class.

    ``task`` ``"binary"``: one curve, the positive class (the last of the 2 probabilities); ``"multiclass"``:
    one-vs-rest per class (labels are indices or one-hot); ``"multilabel"``: one per label, ``NaN`` labels (ignored)
    left out.

    Args:
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        class_names: the classes / labels in output order.
        output_dir: folder of the PNG.
        filename: its name.
        output_transform: maps ``engine.state.output`` to ``(preds, labels)``.

    Raises:
        ValueError: an unknown task; at the end of the evaluation, predictions of the wrong size.

    Example:
        >>> saver = ROCCurveSaver("multiclass", ["benign", "malignant", "normal"], output_dir="eval")
        >>> # saver.attach(evaluator): eval/roc.png after the evaluation
    """

    def __init__(
        self,
        task: str,
        class_names: Sequence[str],
        output_dir: str | Path = "./",
        filename: str = "roc.png",
        output_transform: Callable[[Any], Any] = from_engine(["pred", "label"]),
    ) -> None:
        from modan_monai.evaluation.training import check_task  # lazy: evaluation imports the handlers

        self.task = check_task(task)
        self.class_names = [str(n) for n in class_names]
        self.path = Path(output_dir) / filename
        self.output_transform = output_transform
        self._preds: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        """Collect at every iteration, write at the end of each evaluation."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._preds, self._labels = [], []

    def _collect(self, engine: Engine) -> None:
        preds, labels = self.output_transform(engine.state.output)[:2]
        self._preds += [torch.as_tensor(p).detach().float().cpu().reshape(-1).numpy() for p in preds]
        self._labels += [torch.as_tensor(y).detach().float().cpu().reshape(-1).numpy() for y in labels]

    def __call__(self, engine: Engine) -> None:
        """Write the PNG (nothing when the evaluation saw no item)."""
        if not self._preds:
            return
        n = len(self.class_names)
        sizes = sorted({len(p) for p in self._preds} - {n})
        if sizes:
            raise ValueError(f"ROCCurveSaver: predictions with {sizes} values, expected {n} (one per class of "
                             f"{self.class_names}).")
        scores = np.stack(self._preds)
        if self.task == "multilabel":
            targets = np.stack(self._labels)
        else:
            index = [int(t.argmax()) if len(t) > 1 else int(t[0]) for t in self._labels]
            targets = np.eye(n)[index]
        names = self.class_names
        if self.task == "binary":  # one curve: the positive class
            targets, scores, names = targets[:, -1:], scores[:, -1:], names[-1:]
        plot_class_roc(targets, scores, names, self.path, title=f"ROC ({self.task}, {len(scores)} images)")
