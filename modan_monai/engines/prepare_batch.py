"""Batch preparation for multi-view batches in MONAI's ``SupervisedTrainer``.

Every pretraining method of the project runs through ``monai.engines.SupervisedTrainer``: the
``prepare_batch`` below hands the stacked views to the network and the (optional) metadata
target to the loss, so ``loss_function(network(views), target)`` covers ModAn-MulSupCon
(multi-hot target), SimCLR (no target) and supervised cross-entropy (combined class target).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

__all__ = ["PrepareMultiViewBatch"]


class PrepareMultiViewBatch(PrepareBatch):
    """Return ``(views, target)`` from a collated dictionary batch.

    Args:
        views_key: key of the stacked views, a tensor of shape (B, V, C, H, W).
        target_key: key of the target passed to the loss (multi-hot (B, K) or class index (B,)),
            or ``None`` for label-free objectives (SimCLR), in which case the target is ``None``.

    Raises:
        KeyError: when a key is missing from the batch, naming the keys that are present.
        ValueError: when the views are not 5-D.

    Example:
        >>> import torch
        >>> prep = PrepareMultiViewBatch(target_key="label")
        >>> views, target = prep({"views": torch.zeros(4, 2, 1, 8, 8), "label": torch.ones(4, 3)})
        >>> tuple(views.shape), tuple(target.shape)
        ((4, 2, 1, 8, 8), (4, 3))
    """

    def __init__(self, views_key: str = "views", target_key: str | None = "label") -> None:
        self.views_key = views_key
        self.target_key = target_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        for key in (self.views_key, self.target_key):
            if key is not None and key not in batchdata:
                raise KeyError(f"batch has no key '{key}'; keys present: {sorted(batchdata)}")
        views = torch.as_tensor(batchdata[self.views_key])
        if views.ndim != 5:
            raise ValueError(f"'{self.views_key}' must have shape (B, V, C, H, W), got {tuple(views.shape)}")
        views = views.to(device=device, non_blocking=non_blocking, **kwargs)
        if self.target_key is None:
            return views, None
        target = torch.as_tensor(batchdata[self.target_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        return views, target
