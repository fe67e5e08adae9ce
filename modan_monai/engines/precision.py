"""Mixed precision and memory layout for the engines, on CPU and CUDA (the bundles' ``amp`` and ``channels_last`` ids).

MONAI's ``amp=True`` autocasts for CUDA only (``torch.autocast("cuda")`` with a gradient scaler). Here:

- :class:`PrecisionInferer` wraps an inferer: the network runs under ``torch.autocast`` on the inputs' device
  type (``cpu`` or ``cuda``) with bf16 or fp16, on inputs in ``channels_last`` layout if asked, and its
  floating outputs come back as float32, so losses, metrics and post-processing stay fp32;
- :class:`~modan_monai.engines.Trainer` takes ``precision`` and wraps its inferer; fp16 on CUDA goes through
  MONAI's own path (autocast + ``GradScaler``), as fp16 gradients need loss scaling there; bf16 needs none.

The network itself is put in ``channels_last`` by the bundle (``network_def.to(device,
memory_format=@memory_format)``), before any DDP wrapper is built around it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

__all__ = ["PRECISIONS", "PrecisionInferer", "autocast_dtype", "device_type", "memory_format", "to_channels_last", "to_float32"]

logger = logging.getLogger(__name__)

#: values of the ``amp`` id -> autocast dtype (None: float32, no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"off": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str | bool | None, key: str = "amp") -> torch.dtype | None:
    """The autocast dtype of an ``amp`` value: ``bf16``, ``fp16``; ``None`` / ``false`` / ``off`` / ``fp32``: none.

    Raises:
        ValueError: another value (naming the config id ``key`` and the choices).
    """
    if precision is None or precision is False:
        return None
    name = str(precision).lower()
    if name not in PRECISIONS:
        raise ValueError(f"config id '{key}' must be one of {list(PRECISIONS)} or null, got {precision!r}.")
    return PRECISIONS[name]


def memory_format(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` when asked, else ``torch.preserve_format`` (for ``Module.to(memory_format=...)``).

    For the 2-D networks of the bundles; PyTorch refuses ``channels_last`` for 3-D convolutions.
    """
    return torch.channels_last if channels_last else torch.preserve_format


def _map_tensors(data: Any, fn: Any) -> Any:
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, Mapping):
        return {k: _map_tensors(v, fn) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        mapped = [_map_tensors(v, fn) for v in data]
        return mapped if isinstance(data, list) else tuple(mapped)
    return data


def to_channels_last(data: Any) -> Any:
    """Every 4-D tensor of ``data`` (a tensor, or nested dicts/lists of them) in ``channels_last`` layout."""
    return _map_tensors(data, lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)


def to_float32(data: Any) -> Any:
    """Every floating tensor of ``data`` below float32 (bf16, fp16) as float32; other tensors unchanged."""
    return _map_tensors(data, lambda t: t.float() if t.is_floating_point() and t.element_size() < 4 else t)


def device_type(data: Any) -> str:
    """The device type (``cpu``, ``cuda``) of the first tensor in ``data``; ``cpu`` when it holds none."""
    found: list[str] = []
    _map_tensors(data, lambda t: found.append(t.device.type) or t)
    return found[0] if found else "cpu"


class PrecisionInferer(Inferer):
    """Run another inferer under ``torch.autocast`` (bf16 / fp16, CPU or CUDA) and/or on ``channels_last`` inputs.

    Args:
        inferer: the wrapped inferer (default ``SimpleInferer``).
        amp: ``bf16``, ``fp16``, or ``None`` / ``off`` (float32) — see :func:`autocast_dtype`.
        channels_last: give the network its 4-D inputs in ``channels_last`` layout (5-D multi-view inputs
            ``(B, V, C, H, W)`` are passed as they are: the model folds the views into the batch, and its
            convolutions still run channels-last because their weights are). 2-D networks only.

    Raises:
        ValueError: an unknown ``amp`` value.

    Example:
        >>> net = torch.nn.Conv2d(1, 2, 3)
        >>> out = PrecisionInferer(amp="bf16", channels_last=True)(torch.rand(2, 1, 8, 8), net)
        >>> out.dtype, out.shape
        (torch.float32, torch.Size([2, 2, 6, 6]))
    """

    def __init__(self, inferer: Inferer | None = None, amp: str | bool | None = None, channels_last: bool = False):
        super().__init__()
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.dtype = autocast_dtype(amp)
        self.channels_last = bool(channels_last)
        self._warned = False

    def __call__(self, inputs: Any, network: Any, *args: Any, **kwargs: Any) -> Any:
        """``inferer(inputs, network, ...)`` under the precision and layout; floating outputs in float32."""
        if self.channels_last:
            inputs = to_channels_last(inputs)
        if self.dtype is None:
            return self.inferer(inputs, network, *args, **kwargs)
        kind = device_type(inputs)
        if kind == "cpu" and self.dtype is torch.float16 and not self._warned:
            logger.warning("amp fp16 on the CPU runs without a gradient scaler; bf16 is the CPU's mixed precision")
            self._warned = True
        with torch.autocast(kind, dtype=self.dtype):
            out = self.inferer(inputs, network, *args, **kwargs)
        return to_float32(out)
