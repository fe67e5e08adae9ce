"""Online k-NN monitor: does the encoder separate the metadata classes of a held-out split?

The usual check of self-supervised pretraining while it runs (solo-learn's ``WeightedKNNClassifier``,
lightly's ``KNNBenchmarkModule``, after Wu et al., "Unsupervised feature learning via non-parametric
instance discrimination", CVPR 2018): the pooled encoder features of a *bank* (the training split) and
of a *query* set (a held-out split) are L2-normalised; each query takes the ``k`` bank features of
highest cosine similarity and votes for their labels with weights ``exp(similarity / T)``. From the same
features it fits a linear probe (:func:`modan_monai.handlers.linear_probe.linear_probe_accuracy`: a logistic
regression on the bank, read on the queries). The label is, by default, the metadata class (the combined
modality x anatomy index of :class:`modan_monai.transforms.CombinedClassd`), so the monitor works for every
pretraining method, whatever its loss; any labelled manifest can be judged instead (a label column, e.g. of a
downstream task's images: :func:`modan_monai.handlers.monitor_data.monitor_datalist`). It runs at the start of
training (epoch 0: the random or initial encoder), every ``interval`` epochs and after the last epoch.

The evaluation leaves training untouched: the encoder's per-module train/eval flags are restored, the
global random states (Python, NumPy, torch CPU and CUDA) are saved and restored around it, and it uses no
random transform, so a resumed run stays bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.transforms import Compose, Randomizable
from torch.nn.modules.batchnorm import _BatchNorm

from modan_monai.networks.blocks.sync_batchnorm import GlobalBatchNorm

from .linear_probe import linear_probe_accuracy

__all__ = ["BN_STATS", "KNNMonitor", "bn_never_trained", "bn_estimated_copy", "knn_predict"]

#: how the monitor treats BatchNorm statistics (see :class:`KNNMonitor`)
BN_STATS: tuple[str, ...] = ("auto", "recompute", "running")


def knn_predict(
    query_features: torch.Tensor,
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Similarity-weighted k-nearest-neighbour vote on cosine similarity.

    Features are L2-normalised here; for each query the ``min(k, N)`` most similar bank features vote
    for their label with weight ``exp(cos / temperature)``; the class with the largest sum wins (ties:
    the smaller class index).

    Args:
        query_features: ``(Q, D)``.
        bank_features: ``(N, D)``.
        bank_labels: ``(N,)`` integer class indices in ``[0, num_classes)``.
        num_classes: number of classes.
        k: neighbours per query (>= 1).
        temperature: vote temperature (> 0).
        chunk_size: queries per similarity block (bounds memory for large banks).

    Returns:
        ``(Q,)`` int64 predicted class indices.

    Raises:
        ValueError: on mismatched shapes, an empty bank, ``k`` < 1 or ``temperature`` <= 0.

    Example:
        >>> bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> knn_predict(torch.tensor([[1.0, 0.05]]), bank, torch.tensor([0, 0, 1]), num_classes=2, k=2).tolist()
        [0]
    """
    if query_features.ndim != 2 or bank_features.ndim != 2 or query_features.shape[1] != bank_features.shape[1]:
        raise ValueError(
            f"features must be (Q, D) and (N, D) with the same D, got {tuple(query_features.shape)} and "
            f"{tuple(bank_features.shape)}"
        )
    if bank_labels.shape != (bank_features.shape[0],):
        raise ValueError(f"bank_labels must have shape ({bank_features.shape[0]},), got {tuple(bank_labels.shape)}")
    if bank_features.shape[0] == 0:
        raise ValueError("the k-NN feature bank is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = min(int(k), bank_features.shape[0])
    bank = F.normalize(bank_features.float(), dim=1)
    labels = bank_labels.long().to(bank.device)
    predictions = []
    for start in range(0, query_features.shape[0], chunk_size):
        query = F.normalize(query_features[start : start + chunk_size].float().to(bank.device), dim=1)
        similarity, neighbours = (query @ bank.T).topk(k, dim=1)
        votes = torch.zeros(query.shape[0], num_classes, dtype=similarity.dtype, device=bank.device)
        votes.scatter_add_(1, labels[neighbours], (similarity / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    if not predictions:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat(predictions).cpu()


@contextlib.contextmanager
def _preserve_random_state(transforms: Sequence[Any] = ()) -> Iterator[None]:
    """Save the global random states on entry and restore them on exit.

    (``modan_monai.utils.preserved_rng_state`` of the exact-resume work does the same for more objects; this
    module keeps its own until that lands on main.)

    Covers Python's ``random``, NumPy's global generator, torch's CPU generator, every initialised CUDA
    device's generator and the ``R`` generators of the given MONAI ``Randomizable`` transforms, so that
    code run inside (an evaluation, a data pass) cannot shift the random stream of training.

    Args:
        transforms: MONAI ``Randomizable`` objects whose ``R`` state is saved too.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    monai_states = [(t, t.R.get_state()) for t in transforms if isinstance(t, Randomizable)]
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        for transform, state in monai_states:
            transform.R.set_state(state)


def _flatten_transforms(transform: Any) -> list[Any]:
    """The leaf transforms of (nested) ``Compose`` objects and lists."""
    if isinstance(transform, Compose):
        return [t for child in transform.transforms for t in _flatten_transforms(child)]
    if isinstance(transform, (list, tuple)):
        return [t for child in transform for t in _flatten_transforms(child)]
    return [transform]


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``n`` items; a last batch of one item joins the previous one (train-mode
    BatchNorm needs two)."""
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def bn_never_trained(encoder: torch.nn.Module) -> bool:
    """Whether a BatchNorm layer of ``encoder`` that tracks running statistics has never tracked a batch
    (``num_batches_tracked == 0``: the statistics are still their initial 0 / 1, as in an untrained encoder).

    Args:
        encoder: the module.

    Returns:
        ``True`` if such a layer exists.
    """
    return any(int(m.num_batches_tracked) == 0 for m in encoder.modules()
               if isinstance(m, _BatchNorm) and m.track_running_stats)


@torch.no_grad()
def bn_estimated_copy(encoder: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.nn.Module:
    """A copy of ``encoder`` in eval mode whose BatchNorm running statistics are estimated on ``images``
    ("precise BN": reset, then the cumulative average over the batches of ``images``; the encoder is not changed).

    Args:
        encoder: the module.
        images: ``(N, C, *spatial)`` inputs.
        batch_size: images per forward pass (a last batch of one joins the previous one).

    Returns:
        The calibrated copy, in eval mode.
    """
    encoder = copy.deepcopy(encoder)
    encoder.eval()
    for module in encoder.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches
            module.train()
            if isinstance(module, GlobalBatchNorm):
                module.global_stats = False  # only this rank evaluates: no statistics from the others
    try:
        device = next(encoder.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    for start, stop in _batches(images.shape[0], max(1, int(batch_size))):
        encoder(images[start:stop].to(device))
    return encoder.eval()


def _class_value(value: Any, row: Mapping[Hashable, Any], label_key: str) -> Hashable:
    """A row's class as a plain Python value: a string as it is, else the first element of a number / array
    (``1.0`` -> ``1``, so that integer labels read as floats name the same class)."""
    if isinstance(value, str):
        return value
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).reshape(-1)
    if array.size == 0:
        raise ValueError(f"k-NN monitor: {row.get('source', 'a row')}: class '{label_key}' is empty")
    item = array[0].item()
    if isinstance(item, float) and item.is_integer():
        return int(item)
    return item


def _class_order(value: Hashable) -> tuple[int, float, str]:
    """Sort key of class values: numbers by value, then strings."""
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


class KNNMonitor:
    """Log the k-NN and linear-probe accuracy of a class on a held-out split during training.

    Attach it to the training engine (a bundle's ``train#handlers``) after the resume handler and put the monitor
    in the checkpoint's ``save_dict`` (it has ``state_dict`` / ``load_state_dict``): a resumed run then keeps the
    history (epoch 0 included) and does not recompute it. With a checkpoint saver that writes in attach order,
    attach the monitor before it, so that the value of an epoch is in that epoch's checkpoint.

    At ``Events.STARTED`` (when the history is empty: a fresh run), at every ``interval``-th
    ``EPOCH_COMPLETED`` and at the last epoch, the monitor

    1. runs ``transform`` on every row of ``data`` once (cached; the transform must be deterministic), keeping
       the rows whose ``split`` is in ``bank_splits`` (the bank) or equal to ``query_split`` (the queries);
    2. computes the encoder's pooled features in eval mode without gradients (``(B, D)`` outputs, or
       ``(B, C, *spatial)`` maps, which are average pooled). BatchNorm statistics (``bn_stats``): ``"running"``
       uses the encoder's running statistics as they are (as solo-learn does); ``"recompute"`` evaluates a copy of
       the encoder whose statistics are first recomputed on the bank ("precise BN"); ``"auto"`` (default)
       recomputes only when a BatchNorm layer has never tracked a batch (``num_batches_tracked == 0``: the
       encoder before training, whose running statistics are still their initial values 0 / 1, which would understate its
       accuracy and so overstate the rise) and uses the running statistics afterwards, as a downstream user of
       ``encoder.pt`` in eval mode would;
    3. predicts each query's class with :func:`knn_predict` and logs the accuracy (with the majority-class
       rate of the queries for comparison), writes it to TensorBoard as ``tag`` and stores it in
       :attr:`history`;
    4. with ``linear_probe`` (default), fits a logistic regression on the same bank features
       (:func:`~modan_monai.handlers.linear_probe.linear_probe_accuracy`) and logs its accuracy on the same
       queries, writes it to TensorBoard as ``linear_probe_tag`` and stores it in :attr:`linear_probe_history`.

    The classes are the distinct ``label_key`` values of bank and queries (integers, e.g. ``CombinedClassd``'s
    index named by ``class_names``, or any text / numbers, e.g. a manifest's label column).

    Args:
        encoder: the module whose features are judged (e.g. ``@network.encoder``).
        data: datalist rows of every split (e.g. ``manifest_to_datalist`` of the whole manifest); each row needs
            a ``split`` entry.
        transform: deterministic transform from a row to a dict with ``image_key`` (a ``(C, *spatial)`` array,
            the same size for every row) and ``label_key`` (the class: an integer, a string or a number); e.g.
            load -> normalise -> resize -> ``CombinedClassd``.
        query_split: the held-out split.
        bank_splits: the split(s) of the feature bank (the training data).
        k: neighbours per query.
        temperature: vote temperature.
        interval: epochs between evaluations (the last epoch is always evaluated); 0 switches the monitor off
            (nothing is attached, nothing is checked).
        batch_size: images per forward pass.
        summary_writer: a TensorBoard ``SummaryWriter`` (or ``None``).
        tag: TensorBoard scalar tag.
        image_key: image key in the transformed rows.
        label_key: class key in the transformed rows.
        class_names: names of integer class indices, for the log (optional).
        cache: keep the transformed images in memory between evaluations.
        bn_stats: ``"auto"``, ``"recompute"`` or ``"running"`` (see above).
        config_ids: bundle ids named in error messages, keys ``"query_split"``, ``"bank_splits"`` and
            ``"interval"``.
        name: logger name.
        linear_probe: also fit and report the linear probe.
        linear_probe_tag: TensorBoard scalar tag of the linear probe.
        linear_probe_c: inverse L2 regularisation strength of the logistic regression.

    Raises:
        ValueError: ``k`` < 1, ``temperature`` <= 0, ``interval`` < 0, ``linear_probe_c`` <= 0, an unknown
            ``bn_stats``, a random transform in ``transform``, or
            (when enabled) a query or bank split without rows; the message names the split and its config id.
            At the first evaluation: a split whose rows hold fewer than two classes, or images of different
            sizes.

    Example:
        >>> from modan_monai.networks import ResNet18Encoder
        >>> rows = [{"split": s, "image": torch.full((1, 8, 8), float(c)), "class": c}
        ...         for s in ("train", "val") for c in (0, 1) for _ in range(3)]
        >>> monitor = KNNMonitor(ResNet18Encoder(spatial_dims=2, in_channels=1), rows, transform=dict, k=3)
        >>> 0.0 <= monitor.evaluate() <= 1.0
        True
    """

    #: under torchrun only rank 0 evaluates and logs (the other ranks wait at their next step)
    rank_zero_only = True

    def __init__(
        self,
        encoder: torch.nn.Module,
        data: Sequence[Mapping[Hashable, Any]],
        transform: Callable[[Mapping[Hashable, Any]], Mapping[Hashable, Any]],
        query_split: str = "val",
        bank_splits: str | Sequence[str] = ("train",),
        k: int = 20,
        temperature: float = 0.07,
        interval: int = 1,
        batch_size: int = 64,
        summary_writer: Any = None,
        tag: str = "knn/accuracy",
        image_key: str = "image",
        label_key: str = "class",
        class_names: Sequence[str] | None = None,
        cache: bool = True,
        bn_stats: str = "auto",
        config_ids: Mapping[str, str] | None = None,
        name: str = "modan_monai.knn",
        linear_probe: bool = True,
        linear_probe_tag: str = "linear_probe/accuracy",
        linear_probe_c: float = 1.0,
    ) -> None:
        ids = {"query_split": "knn_split", "bank_splits": "splits", "interval": "knn_interval", **(config_ids or {})}
        if k < 1:
            raise ValueError(f"k-NN monitor: k must be >= 1, got {k}")
        if temperature <= 0:
            raise ValueError(f"k-NN monitor: temperature must be > 0, got {temperature}")
        if bn_stats not in BN_STATS:
            raise ValueError(f"k-NN monitor: bn_stats must be one of {BN_STATS}, got '{bn_stats}'")
        if interval < 0:
            raise ValueError(f"k-NN monitor: '{ids['interval']}' must be >= 0 (0 switches it off), got {interval}")
        if linear_probe_c <= 0:
            raise ValueError(f"k-NN monitor: linear_probe_c must be > 0, got {linear_probe_c}")
        self.encoder = encoder
        self.transform = transform
        self.query_split = str(query_split)
        self.bank_splits = [bank_splits] if isinstance(bank_splits, str) else [str(s) for s in bank_splits]
        self.k = int(k)
        self.temperature = float(temperature)
        self.interval = int(interval)
        self.batch_size = max(1, int(batch_size))
        self.writer = summary_writer
        self.tag = tag
        self.image_key = image_key
        self.label_key = label_key
        self.class_names = list(class_names) if class_names is not None else None
        self.cache = cache
        self.bn_stats = bn_stats
        self.config_ids = ids
        self.logger = logging.getLogger(name)
        #: epoch -> k-NN accuracy on the query split
        self.history: dict[int, float] = {}
        self.linear_probe = bool(linear_probe)
        self.linear_probe_tag = linear_probe_tag
        self.linear_probe_c = float(linear_probe_c)
        #: epoch -> linear-probe accuracy on the query split
        self.linear_probe_history: dict[int, float] = {}
        #: accuracy of always predicting the most frequent query class (set at the first evaluation)
        self.majority_rate: float | None = None
        self._random = [t for t in _flatten_transforms(transform) if isinstance(t, Randomizable)]
        if self._random:
            names = sorted({type(t).__name__ for t in self._random})
            raise ValueError(
                f"k-NN monitor: the transform must be deterministic (load -> normalise -> resize -> label), "
                f"got random transform(s) {names}"
            )
        rows = list(data)
        present = sorted({str(row.get("split")) for row in rows})
        self._bank_rows = [row for row in rows if str(row.get("split")) in self.bank_splits]
        self._query_rows = [row for row in rows if str(row.get("split")) == self.query_split]
        if self.interval:
            if self.query_split in self.bank_splits:
                raise ValueError(
                    f"k-NN monitor: the held-out split '{self.query_split}' (config id '{ids['query_split']}') is "
                    f"also a bank split {self.bank_splits} (config id '{ids['bank_splits']}'); choose a split that "
                    "is not trained on"
                )
            if not self._query_rows:
                raise ValueError(
                    f"k-NN monitor: the held-out split '{self.query_split}' (config id '{ids['query_split']}') has "
                    f"no rows; splits present: {present}. Give the manifest a held-out split, set "
                    f"'{ids['query_split']}' to one of the splits present, or set '{ids['interval']}' to 0 to "
                    "switch the monitor off"
                )
            if not self._bank_rows:
                raise ValueError(
                    f"k-NN monitor: the bank split(s) {self.bank_splits} (config id '{ids['bank_splits']}') have "
                    f"no rows; splits present: {present}"
                )
        self._cached: dict[str, tuple[torch.Tensor, list[Hashable]]] = {}

    # ------------------------------------------------------------------ engine wiring
    def attach(self, engine: Engine) -> None:
        """Evaluate at ``STARTED`` (fresh runs) and at the end of every ``interval``-th and the last epoch."""
        if not self.interval:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        if not self.history:  # a resumed run keeps the values of its checkpoint, epoch 0 included
            self.record(engine.state.epoch)

    def _epoch_completed(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if (epoch % self.interval == 0 or epoch == engine.state.max_epochs) and epoch not in self.history:
            self.record(epoch)

    # ------------------------------------------------------------------ evaluation
    def record(self, epoch: int) -> float:
        """Evaluate, store the accuracies under ``epoch``, log them and write them to TensorBoard.

        Args:
            epoch: the epoch the values belong to (0: before training).

        Returns:
            The k-NN accuracy.
        """
        values = self.measure()
        accuracy = values["knn"]
        self.history[int(epoch)] = accuracy
        first_epoch = min(self.history)
        note = " (before training)" if epoch == 0 else f" (epoch {first_epoch}: {self.history[first_epoch]:.3f})"
        n_bank, n_query = len(self._bank_rows), len(self._query_rows)
        self.logger.info(
            f"k-NN accuracy epoch {epoch}: {accuracy:.3f}{note}  [{n_query} '{self.query_split}' images vs a bank of "
            f"{n_bank} {self.bank_splits} images, k={self.k}, T={self.temperature}; majority class "
            f"{self.majority_rate:.3f}]"
        )
        if "linear_probe" in values:
            probe = self.linear_probe_history[int(epoch)] = values["linear_probe"]
            first = min(self.linear_probe_history)
            note = " (before training)" if epoch == 0 else f" (epoch {first}: {self.linear_probe_history[first]:.3f})"
            self.logger.info(
                f"linear-probe accuracy epoch {epoch}: {probe:.3f}{note}  [logistic regression (C="
                f"{self.linear_probe_c:g}) fitted on the bank's features, read on the {n_query} '{self.query_split}' "
                "images]"
            )
        if self.writer is not None:
            self.writer.add_scalar(self.tag, accuracy, int(epoch))
            if "linear_probe" in values:
                self.writer.add_scalar(self.linear_probe_tag, values["linear_probe"], int(epoch))
            self.writer.flush()
        return accuracy

    def evaluate(self) -> float:
        """k-NN accuracy of the current encoder on the query split (no state of training is changed).

        Returns:
            The fraction of query images whose predicted class equals their class.
        """
        return self.measure(linear_probe=False)["knn"]

    def measure(self, linear_probe: bool | None = None) -> dict[str, float]:
        """k-NN and linear-probe accuracy of the current encoder on the query split, from one pass of the encoder
        over bank and queries (no state of training is changed).

        Args:
            linear_probe: fit the linear probe too (default: the monitor's ``linear_probe``).

        Returns:
            ``{"knn": accuracy}``, plus ``"linear_probe"`` when the probe is fitted.
        """
        probe = self.linear_probe if linear_probe is None else bool(linear_probe)
        with _preserve_random_state(self._random):
            bank_images, bank_values = self._images("bank")
            query_images, query_values = self._images("query")
            classes = {c: i for i, c in enumerate(sorted(set(bank_values) | set(query_values), key=_class_order))}
            bank_labels = torch.as_tensor([classes[v] for v in bank_values], dtype=torch.int64)
            query_labels = torch.as_tensor([classes[v] for v in query_values], dtype=torch.int64)
            with torch.no_grad():
                encoder = self._calibrated_copy(bank_images) if self._recompute_bn() else None
                if encoder is not None:
                    bank_features, query_features = self._features(encoder, bank_images), self._features(encoder, query_images)
                else:
                    modes = [(module, module.training) for module in self.encoder.modules()]
                    self.encoder.eval()
                    try:
                        bank_features = self._features(self.encoder, bank_images)
                        query_features = self._features(self.encoder, query_images)
                    finally:
                        for module, training in modes:
                            module.training = training
            result: dict[str, float] = {}
            if probe:  # L-BFGS draws no random number; inside the guard all the same
                result["linear_probe"] = linear_probe_accuracy(
                    bank_features, bank_labels, query_features, query_labels, c=self.linear_probe_c
                )
        self.majority_rate = float(torch.bincount(query_labels).max()) / len(query_labels)
        predictions = knn_predict(
            query_features, bank_features, bank_labels, len(classes), k=self.k, temperature=self.temperature
        )
        return {"knn": float((predictions == query_labels).double().mean()), **result}

    def _recompute_bn(self) -> bool:
        norms = [m for m in self.encoder.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if self.bn_stats == "running" or not norms:
            return False
        return self.bn_stats == "recompute" or bn_never_trained(self.encoder)

    def _calibrated_copy(self, bank_images: torch.Tensor) -> torch.nn.Module:
        """A copy of the encoder in eval mode whose BatchNorm statistics are the bank's."""
        return bn_estimated_copy(self.encoder, bank_images, self.batch_size)

    def _features(self, encoder: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        try:
            device = next(encoder.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        chunks = []
        for start, stop in _batches(images.shape[0], self.batch_size):
            out = encoder(images[start:stop].to(device))
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"k-NN monitor: the encoder must return a tensor of pooled features (B, D), got {type(out).__name__}"
                )
            if out.ndim > 2:
                out = out.flatten(2).mean(dim=2)
            if out.ndim != 2:
                raise ValueError(f"k-NN monitor: encoder output must be (B, D) or (B, C, *spatial), got {tuple(out.shape)}")
            chunks.append(out.float().cpu())
        return torch.cat(chunks)

    def _images(self, which: str) -> tuple[torch.Tensor, list[Hashable]]:
        if which in self._cached:
            return self._cached[which]
        rows = self._bank_rows if which == "bank" else self._query_rows
        split, split_id = (
            (self.bank_splits, self.config_ids["bank_splits"])
            if which == "bank"
            else (self.query_split, self.config_ids["query_split"])
        )
        images, labels, shapes = [], [], set()
        for row in rows:
            item = self.transform(dict(row))
            image = torch.as_tensor(np.asarray(item[self.image_key]), dtype=torch.float32)
            images.append(image)
            labels.append(_class_value(item[self.label_key], row, self.label_key))
            shapes.add(tuple(image.shape))
        if len(shapes) > 1:
            raise ValueError(
                f"k-NN monitor: images of split {split} have different sizes {sorted(shapes)}; resize them in the "
                "transform"
            )
        classes = sorted(set(labels), key=_class_order)
        if len(classes) < 2:
            names = self.class_names or []
            named = names[classes[0]] if isinstance(classes[0], int) and 0 <= classes[0] < len(names) else classes
            raise ValueError(
                f"k-NN monitor: split {split!r} (config id '{split_id}') holds a single class ({named}) of "
                f"'{self.label_key}' in its {len(rows)} rows; k-NN and linear-probe accuracy need at least two classes"
            )
        result = (torch.stack(images), labels)
        if self.cache:
            self._cached[which] = result
        return result

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The accuracy history (for the training checkpoint)."""
        return {
            "history": dict(self.history),
            "linear_probe_history": dict(self.linear_probe_history),
            "majority_rate": self.majority_rate,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the history written by :meth:`state_dict`."""
        self.history = {int(epoch): float(value) for epoch, value in dict(state_dict.get("history", {})).items()}
        self.linear_probe_history = {
            int(epoch): float(value) for epoch, value in dict(state_dict.get("linear_probe_history", {})).items()
        }
        rate = state_dict.get("majority_rate")
        self.majority_rate = None if rate is None else float(rate)
