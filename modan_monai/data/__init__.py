"""Manifests, metadata vocabularies, image readers, datasets and the embedded demo corpus."""

from __future__ import annotations

from .cache import CACHE_MODES, cached_dataset, default_cache_dir
from .demo import ensure_demo_corpus, make_demo_corpus
from .demo_segmentation import DEMO_SEGMENTATION_STRUCTURES, demo_segmentation_manifest
from .demo_tasks import demo_classification_manifest
from .manifest import (
    MANIFEST_COLUMNS,
    REQUIRED_COLUMNS,
    load_datalist,
    manifest_to_datalist,
    read_manifest,
    write_manifest,
)
from .readers import (
    DicomReader,
    NiftiReader,
    NpyVolumeReader,
    NpzReader,
    PILImageReader,
    read_image_row,
    select_reader,
)
from .samplers import DistributedSampler
from .segmentation import LoadStructureMasksd, segmentation_transforms, select_training_subset
from .slicing import expand_volume_slices
from .vocabulary import MetadataVocabulary, default_vocabulary_path

__all__ = [
    "CACHE_MODES",
    "cached_dataset",
    "default_cache_dir",
    "DistributedSampler",
    "DEMO_SEGMENTATION_STRUCTURES",
    "MANIFEST_COLUMNS",
    "REQUIRED_COLUMNS",
    "DicomReader",
    "LoadStructureMasksd",
    "MetadataVocabulary",
    "NiftiReader",
    "NpyVolumeReader",
    "NpzReader",
    "PILImageReader",
    "default_vocabulary_path",
    "demo_classification_manifest",
    "demo_segmentation_manifest",
    "ensure_demo_corpus",
    "expand_volume_slices",
    "load_datalist",
    "make_demo_corpus",
    "manifest_to_datalist",
    "read_image_row",
    "read_manifest",
    "segmentation_transforms",
    "select_reader",
    "select_training_subset",
    "write_manifest",
]
from .csv_saver import HeaderCSVSaver, probability_header

__all__ += ["HeaderCSVSaver", "probability_header"]
