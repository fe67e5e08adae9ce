from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from modan_monai.data.vocabulary import MetadataVocabulary
from modan_monai.transforms.labels import CombinedClassd, MultiHotLabeld

TOY = {"modality": {"XR": ["CR", "DX"], "CT": []}, "anatomy": {"chest": ["LUNG", "CHEST"], "head": ["BRAIN"]}}


def _dicom_image(modality: str, body_part: str) -> MetaTensor:
    return MetaTensor(torch.zeros(1, 4, 4), meta={"Modality": modality, "BodyPartExamined": body_part})


@pytest.mark.parametrize(
    "data,expected",
    [
        ({"modality": "DX", "anatomy": "chest"}, [1, 0, 1, 0]),
        ({"modality": "CT", "anatomy": "BRAIN"}, [0, 1, 0, 1]),
        ({"modality": "", "anatomy": None, "image": _dicom_image("CT", "LUNG")}, [0, 1, 1, 0]),
        ({"modality": float("nan"), "anatomy": "head", "image": _dicom_image("CR", "LUNG")}, [1, 0, 0, 1]),
        ({"image": _dicom_image("CT", "CHEST")}, [0, 1, 1, 0]),
    ],
)
def test_multi_hot(data, expected):
    out = MultiHotLabeld(vocabulary=MetadataVocabulary(TOY))(data)
    assert out["label"].dtype == torch.float32 and out["label"].shape == (4,)
    np.testing.assert_allclose(out["label"].numpy(), expected)


def test_meta_dict_fallback_and_groups():
    data = {"image": np.zeros((1, 2, 2)), "image_meta_dict": {"Modality": "CT", "BodyPartExamined": "BRAIN"}}
    out = MultiHotLabeld(groups=["anatomy"], vocabulary=MetadataVocabulary(TOY), label_key="y")(data)
    np.testing.assert_allclose(out["y"].numpy(), [0, 1])


def test_default_vocabulary_and_file(tmp_path):
    out = MultiHotLabeld()({"modality": "CR", "anatomy": "LUNG"})
    vocab = MetadataVocabulary.from_file()
    assert out["label"].shape == (vocab.num_classes,)
    assert out["label"][vocab.class_names.index("modality:XR")] == 1
    assert out["label"][vocab.class_names.index("anatomy:chest")] == 1
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"groups": {**TOY, "view": {"PA": [], "AP": []}}}))
    out = MultiHotLabeld(vocabulary=str(path))({"modality": "CT", "anatomy": "head", "view": "AP"})
    np.testing.assert_allclose(out["label"].numpy(), [0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize(
    "data,expected", [({"modality": "XR", "anatomy": "chest"}, 0), ({"modality": "CT", "anatomy": "BRAIN"}, 3),
                      ({"image": _dicom_image("CT", "LUNG")}, 2)]
)
def test_combined_class(data, expected):
    out = CombinedClassd(vocabulary=MetadataVocabulary(TOY))(data)
    assert out["class"].dtype == torch.int64 and out["class"].ndim == 0
    assert int(out["class"]) == expected


def test_errors_name_manifest_row():
    data = {"modality": "PET", "anatomy": "chest", "manifest": "/x/m.csv", "row": 7}
    with pytest.raises(ValueError, match=r"manifest /x/m.csv row 7: unknown modality value 'PET'.*XR"):
        MultiHotLabeld(vocabulary=MetadataVocabulary(TOY))(data)
    with pytest.raises(ValueError, match="row 7"):
        CombinedClassd(vocabulary=MetadataVocabulary(TOY))(data)
    with pytest.raises(ValueError, match="empty anatomy value"):
        MultiHotLabeld(vocabulary=MetadataVocabulary(TOY))({"modality": "CT", "row": 1, "manifest": "m"})


def test_unknown_empty_override():
    out = MultiHotLabeld(vocabulary=MetadataVocabulary(TOY), unknown="empty")({"modality": "PET", "anatomy": "chest"})
    np.testing.assert_allclose(out["label"].numpy(), [0, 0, 1, 0])
