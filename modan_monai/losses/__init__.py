"""Losses: multi-label supervised contrastive (ModAn-MulSupCon) and its reductions; VICReg and MLVICX."""

from __future__ import annotations

from .mlvicx import MLVICXLoss
from .mulsupcon import MulSupConLoss, jaccard_similarity
from .vicreg import VICRegLoss, covariance_term, invariance_term, variance_term, vicreg_terms

__all__ = [
    "MLVICXLoss",
    "MulSupConLoss",
    "VICRegLoss",
    "covariance_term",
    "invariance_term",
    "jaccard_similarity",
    "variance_term",
    "vicreg_terms",
]
