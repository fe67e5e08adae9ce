"""Encoder features, UMAP maps coloured by (modality, anatomy), coordinates CSV and projector export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from modan_monai.data import make_demo_corpus, manifest_to_datalist, read_manifest
from modan_monai.evaluation import (
    embedding_transforms,
    extract_features,
    metadata_pairs,
    pair_colours,
    umap_embed,
)
from modan_monai.networks import CBResNet18Encoder, ResNet18Encoder, build_encoder, save_encoder

DEMO_PAIRS = {("CT", "chest"), ("CT", "head"), ("XR", "chest"), ("MR", "knee"), ("MR", "head"), ("CT", "abdomen"),
              ("US", "breast")}


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_corpus(tmp_path_factory.mktemp("demo"), size=32, per_pair=4)


def test_metadata_pairs_read_dicom_tags_and_colours_are_fixed(demo_manifest: Path) -> None:
    datalist = manifest_to_datalist(read_manifest(demo_manifest))
    pairs = metadata_pairs(datalist)
    assert set(pairs) == DEMO_PAIRS  # DICOM rows have empty modality/anatomy: taken from Modality/BodyPartExamined
    assert pairs.count(("XR", "chest")) == 4  # DX canonicalised to XR
    colours = pair_colours(pairs)
    assert len(set(colours.values())) == len(DEMO_PAIRS)
    assert pair_colours(list(reversed(pairs)))[("MR", "knee")] == colours[("MR", "knee")]  # order-independent
    assert metadata_pairs([{"image": "x.png", "modality": "ultrasound", "anatomy": "elbow??"}]) == [("US", "unknown")]


def test_extract_features_are_encoder_outputs(demo_manifest: Path) -> None:
    datalist = manifest_to_datalist(read_manifest(demo_manifest))[:6]
    torch.manual_seed(0)
    encoder = ResNet18Encoder().eval()
    features = extract_features(encoder, datalist, embedding_transforms(32), batch_size=4)
    assert features.shape == (6, 512) and features.dtype == np.float32
    image = embedding_transforms(32)(datalist[5])["image"]
    with torch.no_grad():
        np.testing.assert_allclose(features[5], encoder(image[None])[0].numpy(), rtol=1e-4, atol=1e-5)


def test_non_finite_features_name_the_first_item(demo_manifest: Path) -> None:
    datalist = manifest_to_datalist(read_manifest(demo_manifest))[:4]

    class NaNForThird(torch.nn.Module):  # an encoder whose output for the third image is NaN
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 3)
            out[2:3] = float("nan") if x.shape[0] > 2 else 0.0
            return out

    with pytest.raises(ValueError, match=r"1 of 4 images are NaN/Inf, the first manifest .* row 2: "):
        extract_features(NaNForThird(), datalist, embedding_transforms(32), batch_size=4)


def test_umap_is_seeded_and_checks_size() -> None:
    x = np.random.default_rng(0).normal(size=(12, 16)).astype(np.float32)
    a, b = umap_embed(x, seed=3), umap_embed(x, seed=3)
    assert a.shape == (12, 2) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="N >= 3"):
        umap_embed(x[:2])


def test_embed_script_writes_maps_csv_and_projector(tmp_path: Path, demo_manifest: Path, load_script: Callable) -> None:
    # an MLVICX encoder.pt (context-bottleneck ResNet-18, 7x7 stem): architecture and stem come from the checkpoint
    checkpoint = save_encoder(CBResNet18Encoder(stem="7x7"), tmp_path / "encoder.pt", method="mlvicx")
    built = build_encoder(str(checkpoint))
    assert isinstance(built, CBResNet18Encoder) and built.stem == "7x7"
    script = load_script("embed")
    out = tmp_path / "emb"
    rc = script.main(["--manifest", str(demo_manifest), "--encoder", "scratch", "--encoder", f"mlvicx={checkpoint}",
                      "--out", str(out), "--image-size", "32"])
    assert rc == 0
    for name in ("scratch", "mlvicx"):
        assert (out / f"{name}_umap.png").read_bytes()[:4] == b"\x89PNG"
        table = pd.read_csv(out / f"{name}_umap.csv")
        assert len(table) == 28 and {"row", "path", "modality", "anatomy", "pair", "x", "y"} <= set(table.columns)
        assert np.isfinite(table[["x", "y"]].to_numpy()).all()
        assert set(zip(table["modality"], table["anatomy"])) == DEMO_PAIRS
        assert np.load(out / f"{name}_features.npy").shape == (28, 512)
    config = (out / "projector" / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 2 and "scratch" in config and "mlvicx" in config
    metadata = next((out / "projector").rglob("scratch/metadata.tsv")).read_text().splitlines()
    assert metadata[0].split("\t")[:3] == ["pair", "modality", "anatomy"] and len(metadata) == 29
