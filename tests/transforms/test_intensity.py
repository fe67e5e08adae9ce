"""Tests for modan_monai.transforms.intensity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from modan_monai.transforms.intensity import NormalizeByModality, NormalizeByModalityd


def meta(**kw):
    base = {"intensity_unit": "", "source_format": "", "source_dtype": "", "Modality": ""}
    return {**base, **kw}


@pytest.mark.parametrize(
    "window, values, expected",
    [
        ((-1000.0, 1000.0), [-3000.0, -1000.0, 0.0, 500.0, 4000.0], [0.0, 0.0, 0.5, 0.75, 1.0]),
        ((-160.0, 240.0), [-1000.0, -160.0, 40.0, 240.0], [0.0, 0.0, 0.5, 1.0]),
    ],
)
def test_ct_window(window, values, expected):
    img = np.array([values], dtype=np.float32)
    out = NormalizeByModality(ct_window=window)(img, "CT", meta(intensity_unit="HU"))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [expected], atol=1e-6)


@pytest.mark.parametrize(
    "modality, m, rule",
    [
        (None, meta(intensity_unit="HU"), "ct_window"),
        ("ct", meta(source_format="nifti", source_dtype="int16"), "ct_window"),
        ("CT", meta(source_format="pil", source_dtype="uint8"), "uint8"),  # head CT PNG: already windowed
        ("MR", meta(source_format="dicom", source_dtype="int16"), "percentile"),
        (None, meta(source_format="npz", source_dtype="uint8"), "uint8"),
    ],
)
def test_rule_selection(modality, m, rule):
    assert NormalizeByModality().rule(modality, m) == rule


def test_uint8_divides_by_255():
    img = torch.tensor([[[0.0, 51.0, 255.0]]])
    out = NormalizeByModality()(img, "XR", meta(source_dtype="uint8"))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), [[[0.0, 0.2, 1.0]]], atol=1e-6)


def test_percentile_minmax():
    img = np.arange(1001, dtype=np.float32).reshape(1, 7, 143)
    out = NormalizeByModality(percentiles=(0.0, 100.0))(img, "MR", meta(source_dtype="uint16"))
    np.testing.assert_allclose(out, img / 1000.0, atol=1e-6)
    clipped = NormalizeByModality(percentiles=(10.0, 90.0))(img, "MR", meta(source_dtype="uint16"))
    assert clipped.min() == 0.0 and clipped.max() == 1.0
    np.testing.assert_allclose(clipped.ravel()[500], 0.5, atol=1e-6)


@pytest.mark.parametrize(
    "m, value, expected",
    [(meta(source_dtype="float32"), 7.0, 0.0), (meta(source_dtype="uint8"), 128.0, 128.0 / 255.0),
     (meta(intensity_unit="HU"), 0.0, 0.5)],
)
def test_constant_image_keeps_the_value_of_its_rule(m, value, expected):
    """The documented rule: zero under percentile min-max, the scaled value under /255 and the CT window."""
    out = NormalizeByModality()(torch.full((1, 8, 8), value), None, m)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="ct_window"):
        NormalizeByModality(ct_window=(100.0, -100.0))
    with pytest.raises(ValueError, match="percentiles"):
        NormalizeByModality(percentiles=(99.0, 1.0))


def test_dict_uses_vocabulary_and_dicom_tag():
    hu = MetaTensor(torch.tensor([[[-1000.0, 0.0, 1000.0]]]), meta=meta(source_format="dicom", source_dtype="int16"))
    norm = NormalizeByModalityd(keys="image")
    # empty manifest modality -> DICOM tag; not CT -> percentile
    out = norm({"image": hu, "modality": "", "row": 0})
    np.testing.assert_allclose(out["image"].numpy(), [[[0.0, 0.5, 1.0]]], atol=2e-2)
    hu.meta["Modality"] = "CT"
    tag = norm({"image": hu, "modality": None})["image"]
    np.testing.assert_allclose(tag.numpy(), [[[0.0, 0.5, 1.0]]], atol=1e-6)
    assert isinstance(tag, MetaTensor) and tag.meta["Modality"] == "CT"
    # an unknown modality is not an error
    img8 = MetaTensor(torch.tensor([[[0.0, 255.0]]]), meta=meta(source_dtype="uint8"))
    unk = norm({"image": img8, "modality": "???"})
    np.testing.assert_allclose(unk["image"].numpy(), [[[0.0, 1.0]]])


def test_dict_canonicalises_synonyms():
    norm = NormalizeByModalityd(keys="image")
    ct = norm.canonical_modality("ct")
    assert ct == "CT"
    assert norm.canonical_modality("") is None and norm.canonical_modality("not-a-modality") is None
