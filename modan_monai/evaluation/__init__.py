"""Downstream evaluation: the cross-validation protocol (running the classify bundle), statistics, exam-level
(MRNet) scoring, embeddings/UMAP."""

from __future__ import annotations

from .embeddings import (
    embed_manifest,
    embedding_transforms,
    export_projector,
    extract_features,
    metadata_pairs,
    pair_colours,
    plot_umap,
    umap_embed,
)
from .folds import (
    FOLD_KEY_COLUMNS,
    check_fold_classes,
    fold_column,
    group_keys,
    inner_validation_split,
    load_or_create_folds,
    make_folds,
    subsample_fraction,
)
from .labels import (
    UNCERTAIN_POLICIES,
    class_name,
    multiclass_labels,
    multilabel_from_columns,
    multilabel_from_findings,
)
from .metrics import ClassAUC, MulticlassMetrics, multiclass_metrics, multilabel_metrics, one_vs_rest_auc
from .mrnet import EXAM_AGGREGATIONS, aggregate_exam_scores, exam_labels, exam_level_auc, select_planes
from .protocol import EVALUATION_LEVELS, PROTOCOL_MODES, RESULT_COLUMNS, parse_init_specs, plot_roc, run_protocol
from .segmentation import (
    dice_per_image,
    segmentation_postprocessing,
    structure_dice_metrics,
    structure_names,
    write_dice_csv,
)
from .stats import RESULT_KEY_COLUMNS, auc, mean_roc, repeat_means, summary_markdown, summary_table, wilcoxon_paired
from .zero_shot import (
    JSRT_LANDMARKS,
    ZERO_SHOT_ANALYSES,
    Landmark,
    landmarks_from_masks,
    run_zero_shot,
)
from .training import (
    ClassifyRun,
    binary_labels,
    classify_bundle_dir,
    image_datalist,
    predict_proba,
    run_classify_bundle,
    split_datalist,
)

__all__ = [
    "ClassAUC",
    "ClassifyRun",
    "MulticlassMetrics",
    "UNCERTAIN_POLICIES",
    "class_name",
    "multiclass_labels",
    "multiclass_metrics",
    "multilabel_from_columns",
    "multilabel_from_findings",
    "multilabel_metrics",
    "one_vs_rest_auc",
    "EVALUATION_LEVELS",
    "EXAM_AGGREGATIONS",
    "FOLD_KEY_COLUMNS",
    "PROTOCOL_MODES",
    "RESULT_COLUMNS",
    "RESULT_KEY_COLUMNS",
    "aggregate_exam_scores",
    "auc",
    "binary_labels",
    "check_fold_classes",
    "classify_bundle_dir",
    "dice_per_image",
    "embed_manifest",
    "embedding_transforms",
    "exam_labels",
    "exam_level_auc",
    "export_projector",
    "extract_features",
    "fold_column",
    "group_keys",
    "image_datalist",
    "inner_validation_split",
    "load_or_create_folds",
    "make_folds",
    "mean_roc",
    "metadata_pairs",
    "pair_colours",
    "parse_init_specs",
    "plot_roc",
    "plot_umap",
    "predict_proba",
    "repeat_means",
    "run_classify_bundle",
    "run_protocol",
    "segmentation_postprocessing",
    "select_planes",
    "split_datalist",
    "structure_dice_metrics",
    "structure_names",
    "subsample_fraction",
    "summary_markdown",
    "summary_table",
    "umap_embed",
    "wilcoxon_paired",
    "write_dice_csv",
    "JSRT_LANDMARKS",
    "ZERO_SHOT_ANALYSES",
    "Landmark",
    "landmarks_from_masks",
    "run_zero_shot",
]
