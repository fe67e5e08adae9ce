"""The embedded demo corpus: formats, header tags, labels from DICOM headers, idempotent writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from modan_monai.data import MetadataVocabulary, ensure_demo_corpus, manifest_to_datalist, read_manifest
from modan_monai.transforms import LoadManifestImaged, MultiHotLabeld, NormalizeByModalityd


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(ensure_demo_corpus(tmp_path_factory.mktemp("demo"), size=32, per_pair=4))


def test_manifest_covers_formats_and_pairs(demo: Path) -> None:
    frame = read_manifest(demo)
    suffixes = {Path(p).suffix for p in frame["path"]}
    assert {".dcm", ".gz", ".png"} <= suffixes
    assert len(frame) == 7 * 4
    dicom_rows = frame[frame["path"].str.endswith(".dcm")]
    assert (dicom_rows["modality"].fillna("") == "").all()  # labels come from the headers


def test_dicom_headers_are_real_tags(demo: Path) -> None:
    files = sorted(demo.parent.glob("dicom/*/*.dcm"))
    tags = {(ds.Modality, ds.BodyPartExamined) for ds in map(pydicom.dcmread, files)}
    assert tags == {("CT", "CHEST"), ("CT", "HEAD"), ("DX", "CHEST")}
    photometric = {pydicom.dcmread(f).PhotometricInterpretation for f in demo.parent.glob("dicom/dx_chest/*.dcm")}
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    ct = pydicom.dcmread(files[0])
    assert ct.RescaleIntercept == -1024


def test_labels_from_headers_and_normalised_images(demo: Path) -> None:
    vocabulary = MetadataVocabulary.from_file()
    load, norm, label = LoadManifestImaged(keys="image"), NormalizeByModalityd(keys="image"), MultiHotLabeld(vocabulary=vocabulary)
    pairs = set()
    for row in manifest_to_datalist(read_manifest(demo)):
        item = label(norm(load(row)))
        image = np.asarray(item["image"])
        assert image.shape == (1, 32, 32) and np.isfinite(image).all()
        assert 0.0 <= image.min() and image.max() <= 1.0
        active = [vocabulary.class_names[i] for i in np.flatnonzero(np.asarray(item["label"]))]
        assert len(active) == 2
        pairs.add(tuple(active))
    assert len(pairs) == 7
    assert ("modality:XR", "anatomy:chest") in pairs  # DX mapped to XR through the vocabulary


def test_ensure_is_idempotent_and_rewrites_on_other_settings(demo: Path) -> None:
    stamp = (demo.parent / "VERSION").stat().st_mtime_ns
    assert ensure_demo_corpus(demo.parent, size=32, per_pair=4) == str(demo)
    assert (demo.parent / "VERSION").stat().st_mtime_ns == stamp
    ensure_demo_corpus(demo.parent, size=32, per_pair=8)
    assert len(pd.read_csv(demo)) == 7 * 8


def test_per_pair_too_small(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_pair"):
        ensure_demo_corpus(tmp_path, per_pair=2)


def test_val_split_holds_out_whole_cases_of_every_pair(tmp_path: Path) -> None:
    frame = read_manifest(ensure_demo_corpus(tmp_path, size=32, per_pair=8))
    assert set(frame["split"]) == {"train", "val"}
    assert frame.groupby("case_id")["split"].nunique().max() == 1  # the slices of a volume stay together
    pair = frame["case_id"].str.rsplit("-", n=1).str[0]
    held_out = {name: int((rows.drop_duplicates("case_id")["split"] == "val").sum()) for name, rows in frame.groupby(pair)}
    # 8 images per DICOM/PNG pair: round(0.25 * 8) = 2 held out; 2 NIfTI volumes per pair: 1 (at least one)
    assert held_out == {"CT-CHEST": 2, "CT-HEAD": 2, "DX-CHEST": 2, "US-breast": 2, "MR-knee": 1, "MR-head": 1,
                        "CT-abdomen": 1}
    every = read_manifest(ensure_demo_corpus(tmp_path / "all", size=32, per_pair=4, val_fraction=0.0))
    assert set(every["split"]) == {"train"}
    with pytest.raises(ValueError, match="val_fraction"):
        ensure_demo_corpus(tmp_path / "bad", size=32, per_pair=4, val_fraction=1.0)


def test_acquisition_settings_vary_within_a_class(demo: Path) -> None:
    """Images of one class differ in noise and field of view, not only by a shape jitter."""
    load, norm = LoadManifestImaged(keys="image"), NormalizeByModalityd(keys="image")
    rows = [r for r in manifest_to_datalist(read_manifest(demo)) if "us_breast" in r["image"]]
    images = [np.asarray(norm(load(r))["image"])[0] for r in rows]
    roughness = [float(np.abs(np.diff(im, axis=1)).mean()) for im in images]
    assert max(roughness) > 1.5 * min(roughness)
