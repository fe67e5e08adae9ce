"""Losses: multi-label supervised contrastive (ModAn-MulSupCon) and its reductions; VICReg and MLVICX; Adam-v2."""

from __future__ import annotations

from .mlvicx import MLVICXLoss
from .mulsupcon import MulSupConLoss, jaccard_similarity
from .vicreg import VICRegLoss, covariance_term, invariance_term, variance_term, vicreg_terms
from .dino import (
    DINOLoss,
    batch_center,
    dino_cross_entropy,
    sinkhorn_knopp_probabilities,
    student_log_probabilities,
    teacher_probabilities,
    teacher_temperature,
    updated_center,
)
from .part_whole import CompositionLoss, DecompositionLoss, normalize_parts, squared_error
from .adamv2 import AdamV2Loss, koleo_loss
from .masked_bce import MaskedBCEWithLogitsLoss, balanced_pos_weight, classification_loss

__all__ = [
    "MLVICXLoss",
    "MulSupConLoss",
    "VICRegLoss",
    "covariance_term",
    "invariance_term",
    "jaccard_similarity",
    "variance_term",
    "vicreg_terms",
    "AdamV2Loss",
    "CompositionLoss",
    "DINOLoss",
    "DecompositionLoss",
    "batch_center",
    "dino_cross_entropy",
    "koleo_loss",
    "normalize_parts",
    "sinkhorn_knopp_probabilities",
    "squared_error",
    "student_log_probabilities",
    "teacher_probabilities",
    "teacher_temperature",
    "updated_center",
]
__all__ += ["MaskedBCEWithLogitsLoss", "balanced_pos_weight", "classification_loss"]
