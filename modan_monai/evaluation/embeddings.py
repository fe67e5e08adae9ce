"""Penultimate-layer features of an encoder, 2-D UMAP maps coloured by (modality, anatomy), projector export.

Used to compare what pretrained encoders learned (the paper's UMAP figure): the features of an encoder
(its output after global pooling, the layer before any head: 512-d for the ResNet-18 encoders) are mapped
to 2-D with UMAP at a fixed seed, and every (modality, anatomy) pair gets one fixed colour so that maps of
different encoders on the same manifest can be compared side by side. Encoders are built by the encoder
registry (:func:`modan_monai.networks.registry.build_encoder`) from any spec: ``scratch``,
``imagenet:<file>``, or an encoder / training checkpoint of any pretraining method (its architecture, e.g.
MLVICX's context-bottleneck ResNet-18, is read from the checkpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped, SelectItemsd
from monai.utils import optional_import

from modan_monai.data import MetadataVocabulary
from modan_monai.data.readers import is_dicom_file
from modan_monai.networks.registry import build_encoder
from modan_monai.transforms import load_preprocess_transforms
from modan_monai.transforms.labels import DEFAULT_DICOM_TAGS
from modan_monai.utils import safe_file_name

umap, _HAS_UMAP = optional_import("umap")
pydicom, _HAS_PYDICOM = optional_import("pydicom")

__all__ = [
    "embed_manifest",
    "embedding_transforms",
    "export_projector",
    "extract_features",
    "metadata_pairs",
    "pair_colours",
    "plot_umap",
    "umap_embed",
]

_UNKNOWN = "unknown"


def embedding_transforms(image_size: int) -> Compose:
    """Deterministic image pipeline for feature extraction: load, normalise by modality, resize to a square.

    Args:
        image_size: side of the resized image (the encoder's training size).
    """
    return Compose(
        load_preprocess_transforms("image", int(image_size))
        + [EnsureTyped(keys="image", dtype=torch.float32, track_meta=False), SelectItemsd(keys="image")]
    )


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    datalist: Sequence[Mapping[str, Any]],
    transform: Compose,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> np.ndarray:
    """Encoder outputs (the penultimate features of a classifier) for every datalist item, in order.

    Args:
        encoder: maps ``(B, C, H, W)`` to ``(B, F)`` (``F = 512`` for the ResNet-18 encoder).
        datalist: items with ``image`` (as from :func:`modan_monai.data.manifest_to_datalist`).
        transform: per-item pipeline producing ``image`` (e.g. :func:`embedding_transforms`).
        batch_size: batch size.
        device: torch device.
        num_workers: data loader workers.

    Returns:
        ``(N, F)`` float32 array.

    Raises:
        ValueError: an empty datalist, or features that are NaN/Inf (naming the first such item's manifest row
            and file: UMAP would only say "Input contains NaN").
    """
    if not datalist:
        raise ValueError("extract_features: the datalist is empty.")
    device = torch.device(device)
    was_training = encoder.training
    encoder = encoder.to(device).eval()
    loader = DataLoader(Dataset(list(datalist), transform), batch_size=int(batch_size), shuffle=False,
                        num_workers=int(num_workers))
    chunks = [encoder(batch["image"].to(device)).float().cpu().numpy() for batch in loader]
    encoder.train(was_training)
    features = np.concatenate(chunks, axis=0)
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if bad.size:
        first = datalist[int(bad[0])]
        raise ValueError(
            f"extract_features: the encoder's features of {bad.size} of {len(features)} images are NaN/Inf, the first "
            f"{first.get('source') or first.get('image')}; check that image (non-finite pixels?) and the encoder."
        )
    return features


def _dicom_tag(path: str, keyword: str) -> str | None:
    if not is_dicom_file(path):
        return None
    value = pydicom.dcmread(path, stop_before_pixels=True).get(keyword)
    return None if value in (None, "") else str(value)


def metadata_pairs(
    datalist: Sequence[Mapping[str, Any]], vocabulary: MetadataVocabulary | None = None
) -> list[tuple[str, str]]:
    """Canonical ``(modality, anatomy)`` per item; empty values of DICOM files come from their header tags.

    Values unknown to the vocabulary (or empty for a non-DICOM file) become ``"unknown"``.

    Args:
        datalist: manifest datalist items.
        vocabulary: default: the packaged vocabulary.
    """
    vocab = vocabulary or MetadataVocabulary.from_file(unknown="empty")
    pairs = []
    for item in datalist:
        values = []
        for group in ("modality", "anatomy"):
            raw = item.get(group)
            if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "":
                raw = _dicom_tag(str(item["image"]), DEFAULT_DICOM_TAGS[group])
            try:
                canonical = vocab.canonical(group, raw) if raw is not None else None
            except ValueError:
                canonical = None
            values.append(canonical or _UNKNOWN)
        pairs.append((values[0], values[1]))
    return pairs


def umap_embed(features: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """2-D UMAP (umap-learn) of ``features`` with a fixed seed (runs single-threaded, reproducible).

    Args:
        features: ``(N, F)``, ``N >= 3``.
        seed: ``random_state`` of UMAP.
        n_neighbors: neighbourhood size, clipped to ``N - 1`` for small sets.
        min_dist: UMAP ``min_dist``.

    Returns:
        ``(N, 2)`` float32 coordinates.

    Raises:
        ValueError: fewer than 3 samples.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"umap_embed needs a (N, F) array with N >= 3, got shape {x.shape}.")
    # Spectral initialisation needs a connected graph of reasonable size; tiny sets use the random init.
    init = "spectral" if len(x) > 2 * n_neighbors else "random"
    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(int(n_neighbors), len(x) - 1)), min_dist=min_dist,
                        random_state=int(seed), init=init, n_jobs=1)
    return reducer.fit_transform(x).astype(np.float32)


def pair_colours(pairs: Sequence[tuple[str, str]], vocabulary: MetadataVocabulary | None = None) -> dict[tuple, Any]:
    """One fixed colour per (modality, anatomy) pair.

    Pairs are ordered by the vocabulary (modality order, then anatomy order; unknown last) and take colours
    from the concatenated ``tab20``, ``tab20b``, ``tab20c`` palettes in that order, so the same pair gets the
    same colour in the maps of every encoder on a manifest.

    Returns:
        ``{pair: RGBA tuple}``.
    """
    from matplotlib import colormaps

    vocab = vocabulary or MetadataVocabulary.from_file(unknown="empty")

    def rank(group: str, value: str) -> tuple[int, str]:
        classes = vocab.classes(group)
        return (classes.index(value), value) if value in classes else (len(classes), value)

    ordered = sorted(set(pairs), key=lambda p: (rank("modality", p[0]), rank("anatomy", p[1])))
    palette = [c for name in ("tab20", "tab20b", "tab20c") for c in colormaps[name].colors]
    return {pair: palette[i % len(palette)] for i, pair in enumerate(ordered)}


def plot_umap(
    coords: np.ndarray,
    pairs: Sequence[tuple[str, str]],
    path: str | Path,
    title: str = "",
    colours: Mapping[tuple, Any] | None = None,
) -> Path:
    """Scatter plot of 2-D coordinates coloured by (modality, anatomy) pair, with a legend.

    Args:
        coords: ``(N, 2)``.
        pairs: ``(modality, anatomy)`` per point.
        path: PNG file.
        title: plot title.
        colours: pair -> colour (default :func:`pair_colours`).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(pairs):
        raise ValueError(f"plot_umap: coords of shape {coords.shape} for {len(pairs)} pairs.")
    colours = dict(colours or pair_colours(pairs))
    fig = Figure(figsize=(7.5, 6.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    keys = np.array([f"{m}\t{a}" for m, a in pairs])
    # With more pairs than palette colours the markers tell the repeats apart.
    markers = "os^Dv<>p"
    for i, pair in enumerate(colours):
        mask = keys == f"{pair[0]}\t{pair[1]}"
        if mask.any():
            ax.scatter(coords[mask, 0], coords[mask, 1], s=12, color=colours[pair], marker=markers[i // 60 % 8],
                       label=f"{pair[0]} / {pair[1]} ({int(mask.sum())})", linewidths=0)
    ax.set(xlabel="UMAP 1", ylabel="UMAP 2", title=title)
    ax.legend(title="modality / anatomy", fontsize="small", markerscale=1.5, loc="center left",
              bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def export_projector(
    embeddings: Mapping[str, np.ndarray],
    metadata: pd.DataFrame,
    log_dir: str | Path,
) -> Path:
    """Write features + metadata for the TensorBoard projector (``SummaryWriter.add_embedding``).

    All embeddings go through one writer: the projector config of a log folder lists the embeddings of the
    writer that wrote it.

    Args:
        embeddings: ``{tag: (N, F) features}``, e.g. one entry per encoder.
        metadata: ``N`` rows; every column becomes a projector metadata field.
        log_dir: TensorBoard log folder.

    Returns:
        ``log_dir``.

    Raises:
        ValueError: a feature array whose row count differs from the metadata's.
    """
    from torch.utils.tensorboard import SummaryWriter

    for tag, features in embeddings.items():
        if len(features) != len(metadata):
            raise ValueError(f"export_projector: {tag} has {len(features)} feature rows but there are "
                             f"{len(metadata)} metadata rows.")
    columns = [str(c) for c in metadata.columns]
    rows = [[str(v) for v in record] for record in metadata.itertuples(index=False)]
    log_dir = Path(log_dir)
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for tag, features in embeddings.items():
            writer.add_embedding(torch.as_tensor(np.asarray(features, dtype=np.float32)), metadata=rows,
                                 metadata_header=columns, tag=tag)
    return log_dir


def embed_manifest(
    manifest: str | Path,
    encoders: Mapping[str, str],
    out_dir: str | Path,
    *,
    image_size: int = 64,
    batch_size: int = 64,
    stem: str | None = None,
    seed: int = 0,
    splits: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    logger: logging.Logger | None = None,
) -> dict[str, Path]:
    """Features, UMAP map, coordinates CSV and projector export of every encoder on a manifest.

    Writes, per encoder ``name``: ``<name>_umap.png``, ``<name>_umap.csv`` (manifest row, path, index, dataset,
    case_id, modality, anatomy, pair, x, y), ``<name>_features.npy``, and one projector embedding tagged ``name`` in
    ``projector/``. Colours are fixed per (modality, anatomy) pair across encoders. The CSV and the projector
    metadata hold these manifest columns only (no other manifest column, no DICOM header value): ``case_id`` as in
    the manifest (a pseudonym for DICOM manifests) and the file ``path``, so files must not be named after patients.

    Args:
        manifest: manifest CSV (volumes without ``index`` are expanded to their slices).
        encoders: ``{name: spec}``, spec as for :func:`~modan_monai.networks.registry.build_encoder`.
        out_dir: output folder.
        image_size: resize side.
        batch_size: batch size.
        stem: encoder stem; ``None``: the checkpoint's (``"3x3"`` for ``scratch`` and ImageNet weights).
        seed: UMAP seed.
        splits: manifest splits to use (default all rows).
        device: torch device.
        num_workers: data loader workers.
        logger: progress logger.

    Returns:
        ``{name: png path}``.
    """
    from modan_monai.data import load_datalist

    log = logger or logging.getLogger("modan_monai.evaluation")
    if not encoders:
        raise ValueError("embed_manifest: at least one encoder is needed.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    datalist = load_datalist(manifest, splits=splits)
    pairs = metadata_pairs(datalist)
    colours = pair_colours(pairs)
    meta = pd.DataFrame(
        {
            "row": [item["row"] for item in datalist],
            "path": [item["image"] for item in datalist],
            "index": [item.get("index") for item in datalist],
            "dataset": [item.get("dataset") for item in datalist],
            "case_id": [item.get("case_id") for item in datalist],
            "modality": [p[0] for p in pairs],
            "anatomy": [p[1] for p in pairs],
            "pair": [f"{p[0]} / {p[1]}" for p in pairs],
        }
    )
    transform = embedding_transforms(image_size)
    written: dict[str, Path] = {}
    all_features: dict[str, np.ndarray] = {}
    for name, spec in encoders.items():
        log.info("embedding %d images with encoder %s (%s)", len(datalist), name, spec)
        encoder = build_encoder(spec, stem=stem, logger=log)
        features = extract_features(encoder, datalist, transform, batch_size=batch_size, device=device,
                                    num_workers=num_workers)
        coords = umap_embed(features, seed=seed)
        file_stem = safe_file_name(name, fallback="encoder")  # a user-given name: never a path out of ``out``
        np.save(out / f"{file_stem}_features.npy", features)
        meta.assign(x=coords[:, 0], y=coords[:, 1]).to_csv(out / f"{file_stem}_umap.csv", index=False)
        title = f"{name}: UMAP of {features.shape[1]}-d encoder features"
        written[name] = plot_umap(coords, pairs, out / f"{file_stem}_umap.png", title=title, colours=colours)
        all_features[name] = features
        log.info("wrote %s and %s", written[name], out / f"{file_stem}_umap.csv")
    export_projector(all_features, meta[["pair", "modality", "anatomy", "dataset", "case_id", "path", "index"]],
                     out / "projector")
    log.info("wrote the TensorBoard projector export to %s (tensorboard --logdir %s)", out / "projector",
             out / "projector")
    return written
