"""Losses: multi-label supervised contrastive (ModAn-MulSupCon) and its reductions."""

from __future__ import annotations

from .mulsupcon import MulSupConLoss, jaccard_similarity

__all__ = ["MulSupConLoss", "jaccard_similarity"]
