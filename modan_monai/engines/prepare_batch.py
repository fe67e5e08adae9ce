"""Batch preparation for MONAI's ``SupervisedTrainer``: named view groups of any spatial size.

Every pretraining method of the project runs through one engine (:class:`modan_monai.engines.Trainer`, a MONAI
``SupervisedTrainer``): :class:`PrepareViewGroups` hands the views to the network and the (optional) metadata
target to the loss, so ``loss_function(network(views), target)`` covers ModAn-MulSupCon (multi-hot target), SimCLR
and MLVICX (no target) and supervised cross-entropy (combined class target). Multi-crop methods (Adam-v2: a teacher
view, a global view, local crops and parts, each of its own size) name several view groups; the network then
receives a ``dict`` of ``(B, V, C, H, W)`` tensors whose ``H, W`` differ between groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

__all__ = ["PrepareViewGroups"]


class PrepareViewGroups(PrepareBatch):
    """Return ``(views, target)`` from a collated dictionary batch.

    Args:
        views_key: key of the stacked views, a tensor of shape (B, V, C, H, W), which the network receives as
            such; or a sequence of keys (view groups), which the network receives as ``{key: (B, V_k, C, H_k,
            W_k)}``, each group with its own number of views and spatial size.
        target_key: key of the target passed to the loss (multi-hot (B, K) or class index (B,)), or ``None`` for
            label-free objectives (SimCLR, MLVICX), in which case the target is ``None``.

    Raises:
        KeyError: when a key is missing from the batch, naming the keys that are present.
        ValueError: when a view group is not 5-D or the groups disagree on the batch size.

    Example:
        >>> import torch
        >>> prep = PrepareViewGroups(views_key=["global", "local"], target_key=None)
        >>> batch = {"global": torch.zeros(4, 1, 1, 32, 32), "local": torch.zeros(4, 8, 1, 12, 12)}
        >>> views, target = prep(batch)
        >>> {k: tuple(v.shape) for k, v in views.items()}, target
        ({'global': (4, 1, 1, 32, 32), 'local': (4, 8, 1, 12, 12)}, None)
    """

    def __init__(self, views_key: str | Sequence[str] = "views", target_key: str | None = "label") -> None:
        if isinstance(views_key, str):
            self.views_keys: tuple[str, ...] = (views_key,)
            self.grouped = False
        else:
            self.views_keys = tuple(views_key)
            self.grouped = True
            if not self.views_keys:
                raise ValueError("views_key must name at least one view group.")
        self.target_key = target_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor | None]:
        for key in (*self.views_keys, self.target_key):
            if key is not None and key not in batchdata:
                raise KeyError(f"batch has no key '{key}'; keys present: {sorted(batchdata)}")
        groups: dict[str, torch.Tensor] = {}
        for key in self.views_keys:
            views = torch.as_tensor(batchdata[key])
            if views.ndim != 5:
                raise ValueError(f"'{key}' must have shape (B, V, C, H, W), got {tuple(views.shape)}")
            groups[key] = views.to(device=device, non_blocking=non_blocking, **kwargs)
        sizes = {key: int(v.shape[0]) for key, v in groups.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"view groups disagree on the batch size: {sizes}")
        inputs = groups if self.grouped else groups[self.views_keys[0]]
        if self.target_key is None:
            return inputs, None
        target = torch.as_tensor(batchdata[self.target_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        return inputs, target
