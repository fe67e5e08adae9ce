"""What MONAI's training engine needs to train every method of the project."""

from __future__ import annotations

from .prepare_batch import PrepareMultiViewBatch

__all__ = ["PrepareMultiViewBatch"]
