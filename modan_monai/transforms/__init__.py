"""MONAI dictionary transforms for loading, normalising, labelling and augmenting images."""

from __future__ import annotations

from .classification import classification_postprocessing, classification_transforms
from .io import LoadManifestImaged, RandSliced
from .intensity import NormalizeByModality, NormalizeByModalityd
from .labels import CombinedClassd, MultiHotLabeld
from .label_map import StructuresToLabelMapd, label_map_to_structures, label_values, structures_to_label_map
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
    "StructuresToLabelMapd",
    "classification_postprocessing",
    "classification_transforms",
    "label_map_to_structures",
    "label_values",
    "load_preprocess_transforms",
    "structures_to_label_map",
    "AdamV2Viewsd",
    "DINOViewsd",
]
