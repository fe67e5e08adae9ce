"""TensorBoard handlers: the augmented views of a batch, and the learning rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from modan_monai.utils.distributed import process_rank

__all__ = ["LearningRateTensorBoardHandler", "ViewsTensorBoardHandler", "rank_zero_summary_writer"]


class ViewsTensorBoardHandler:
    """Write the views of the first batch of every ``interval`` epochs as TensorBoard images.

    One image grid per view (tags ``{tag}/view_0``, ``{tag}/view_1``...; with several view groups
    ``{tag}/{group}/view_0``...), each image min-max scaled to [0, 1], so a user can check what the
    augmentation does to the data.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` shared with the other handlers.
        views_key: key of the views in ``engine.state.batch``: a (B, V, C, H, W) tensor, or (V, C, H, W)
            per item when the engine decollated the batch; or a sequence of view-group keys (the same
            ``views_key`` as :class:`~modan_monai.engines.PrepareViewGroups`).
        max_images: images per grid.
        interval: epochs between writes.
        tag: tag prefix.
    """

    #: under torchrun only rank 0 runs it (see modan_monai.engines.rank_zero_handlers)
    rank_zero_only = True

    def __init__(
        self,
        summary_writer: Any,
        views_key: str | Sequence[str] = "views",
        max_images: int = 8,
        interval: int = 1,
        tag: str = "views",
    ) -> None:
        self.writer = summary_writer
        self.views_key = views_key
        self.max_images = max_images
        self.interval = max(1, int(interval))
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        if (state.iteration - 1) % state.epoch_length or (state.epoch - 1) % self.interval:
            return
        grouped = not isinstance(self.views_key, str)
        for key in self.views_key if grouped else [self.views_key]:
            views = self._views(state.batch, key)
            prefix = f"{self.tag}/{key}" if grouped else self.tag
            for v in range(views.shape[1]):
                imgs = views[:, v, :1]
                lo = imgs.amin(dim=(1, 2, 3), keepdim=True)
                hi = imgs.amax(dim=(1, 2, 3), keepdim=True)
                imgs = (imgs - lo) / (hi - lo).clamp_min(1e-8)
                # the readers' (x, y) axis order (MONAI's) is (width, height): transpose to show images upright
                self.writer.add_images(f"{prefix}/view_{v}", imgs.transpose(-1, -2), state.epoch)
        self.writer.flush()

    def _views(self, batch: Any, key: str) -> torch.Tensor:
        """(B', V, C, H, W) views of the first ``max_images`` items of a collated or decollated batch."""
        if isinstance(batch, (list, tuple)):  # MONAI engines decollate the batch into per-sample dicts
            views = torch.stack([torch.as_tensor(item[key]) for item in batch[: self.max_images]])
        else:
            views = torch.as_tensor(batch[key])[: self.max_images]
        return views.detach().float().cpu()


class LearningRateTensorBoardHandler:
    """Write the learning rate of each optimiser parameter group as a TensorBoard scalar.

    Written here because ignite's ``OptimizerParamsHandler`` only works through ignite's own
    ``TensorboardLogger`` (a second writer and event file) and MONAI's ``TensorBoardStatsHandler`` writes
    ``engine.state`` attributes per epoch only; this one writes per iteration to the bundle's shared writer.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``.
        optimizer: the optimiser whose ``lr`` is logged.
        interval: iterations between writes.
        tag: scalar tag (``{tag}`` for one group, ``{tag}/group_i`` otherwise).
    """

    #: under torchrun only rank 0 runs it (see modan_monai.engines.rank_zero_handlers)
    rank_zero_only = True

    def __init__(self, summary_writer: Any, optimizer: torch.optim.Optimizer, interval: int = 1, tag: str = "lr") -> None:
        self.writer = summary_writer
        self.optimizer = optimizer
        self.interval = max(1, int(interval))
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        groups = self.optimizer.param_groups
        for i, group in enumerate(groups):
            tag = self.tag if len(groups) == 1 else f"{self.tag}/group_{i}"
            self.writer.add_scalar(tag, float(group["lr"]), engine.state.iteration)


class _RankNullWriter:
    """What ranks other than 0 get for a ``SummaryWriter``: every method accepts its arguments and writes nothing."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def rank_zero_summary_writer(log_dir: str, **kwargs: Any) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` on rank 0 (and in a single process), a no-op writer elsewhere.

    A ``SummaryWriter`` creates its event file when it is built, so under ``torchrun`` the multi-GPU configs
    build the bundle's ``summary_writer`` with this function: one event file per run, written by rank 0.
    The rank is read from ``torch.distributed`` when it is initialised, else from the ``RANK`` variable that
    ``torchrun`` sets (the writer is built before the process group).

    Args:
        log_dir: the TensorBoard folder.
        kwargs: further ``SummaryWriter`` arguments.

    Returns:
        The writer.
    """
    if process_rank() != 0:
        return _RankNullWriter(log_dir)
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=log_dir, **kwargs)
