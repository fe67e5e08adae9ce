"""MONAI dictionary transforms for loading, normalising, labelling and augmenting images."""

from __future__ import annotations

from .classification import classification_postprocessing, classification_transforms
from .io import LoadManifestImaged, RandSliced
from .intensity import NormalizeByModality, NormalizeByModalityd
from .labels import CombinedClassd, MultiHotLabeld
from .presets import load_preprocess_transforms
from .views import RandResizedCrop, RandResizedCropd, MultiViewd, SimCLRViewsd
from .part_whole import AdamV2Viewsd, DINOViewsd

__all__ = [
    "CombinedClassd",
    "LoadManifestImaged",
    "MultiHotLabeld",
    "MultiViewd",
    "NormalizeByModality",
    "NormalizeByModalityd",
    "RandResizedCrop",
    "RandSliced",
    "RandResizedCropd",
    "SimCLRViewsd",
    "classification_postprocessing",
    "classification_transforms",
    "load_preprocess_transforms",
    "AdamV2Viewsd",
    "DINOViewsd",
]
