from __future__ import annotations

import json

import numpy as np
import pytest

from modan_monai.data.vocabulary import MetadataVocabulary, default_vocabulary_path

TOY = {"modality": {"XR": ["CR", "DX"], "CT": [], "US": ["ultrasound"]}, "anatomy": {"chest": ["LUNG"], "head": []}}


@pytest.fixture(scope="module")
def default_vocab() -> MetadataVocabulary:
    return MetadataVocabulary.from_file()


@pytest.mark.parametrize(
    "group,raw,expected",
    [
        ("modality", "CR", "XR"),
        ("modality", "dx", "XR"),
        ("modality", "DR", "XR"),
        ("modality", " x-ray ", "XR"),
        ("modality", "MG", "MG"),
        ("modality", "MRI", "MR"),
        ("modality", "CT", "CT"),
        ("modality", "Ultrasound", "US"),
        ("anatomy", "LUNG", "chest"),
        ("anatomy", "CHEST", "chest"),
        ("anatomy", "thorax", "chest"),
        ("anatomy", "BRAIN", "head"),
        ("anatomy", "SKULL", "head"),
        ("anatomy", "BREAST", "breast"),
        ("anatomy", "KNEE", "knee"),
        ("anatomy", "ABDOMEN", "abdomen"),
        # RadImageNet anatomy folder names
        ("anatomy", "abd", "abdomen"),
        ("anatomy", "af", "ankle"),
        ("anatomy", "lung", "chest"),
        ("anatomy", "spine", "spine"),
        ("anatomy", "shoulder", "shoulder"),
        ("anatomy", "hip", "hip"),
        ("anatomy", "thyroid", "thyroid"),
        ("anatomy", "brain", "head"),
        # modalities and anatomies outside radiology
        ("modality", "PT", "PT"),
        ("modality", "pet", "PT"),
        ("modality", "SPECT", "NM"),
        ("modality", "OP", "OP"),
        ("modality", "fundus photography", "OP"),
        ("modality", "OPT", "OCT"),
        ("modality", "OPTENF", "OCT"),
        ("modality", "oct", "OCT"),
        ("modality", "DMS", "DMS"),
        ("modality", "Dermoscopy", "DMS"),
        ("modality", "dermatoscopy", "DMS"),
        ("modality", "XC", "XC"),
        ("modality", "ES", "ES"),
        ("modality", "colonoscopy", "ES"),
        ("modality", "SM", "SM"),
        ("modality", "WSI", "SM"),
        ("modality", "whole slide image", "SM"),
        ("anatomy", "SKIN", "skin"),
        ("anatomy", "retina", "eye"),
        ("anatomy", "FUNDUS", "eye"),
        ("anatomy", "EYE", "eye"),
        ("anatomy", "COLON", "gastrointestinal"),
        ("anatomy", "stomach", "gastrointestinal"),
        ("anatomy", "GI tract", "gastrointestinal"),
        ("anatomy", "BLOOD", "blood"),
        ("anatomy", "peripheral blood smear", "blood"),
    ],
)
def test_default_synonyms(default_vocab, group, raw, expected):
    assert default_vocab.canonical(group, raw) == expected


@pytest.mark.parametrize(
    "concept,expected",
    [
        ("PositronEmissionTomography", "PT"),
        ("NuclearMedicine", "NM"),
        ("OphthalmicPhotography", "OP"),
        ("OphthalmicTomography", "OCT"),
        ("OphthalmicTomographyEnFace", "OCT"),
        ("OpticalCoherenceTomography", "OCT"),
        ("IntravascularOpticalCoherenceTomography", "OCT"),
        ("Dermoscopy", "DMS"),
        ("ExternalCameraPhotography", "XC"),
        ("Endoscopy", "ES"),
        ("SlideMicroscopy", "SM"),
    ],
)
def test_dicom_acquisition_modality_codes(default_vocab, concept, expected):
    """The DICOM Modality values (PS3.16 CID 29, from pydicom's code dictionary) map to their class."""
    from pydicom.sr.codedict import codes

    code = getattr(codes.DCM, concept)
    assert default_vocab.canonical("modality", code.value) == expected
    assert default_vocab.canonical("modality", code.meaning) == expected


def test_default_radiology_classes_keep_their_order(default_vocab):
    """Classes added later come after the radiology ones: the radiology order inside each block is unchanged."""
    assert default_vocab.classes("modality")[:7] == ["XR", "MG", "CT", "MR", "US", "PT", "NM"]
    assert default_vocab.classes("anatomy")[:12] == ["chest", "head", "breast", "abdomen", "pelvis", "spine", "knee",
                                                     "shoulder", "hip", "ankle", "hand", "thyroid"]
    assert {"OP", "OCT", "DMS", "XC", "ES", "SM"} <= set(default_vocab.classes("modality"))
    assert {"skin", "eye", "gastrointestinal", "blood"} <= set(default_vocab.classes("anatomy"))
    label = default_vocab.encode({"modality": "OPT", "anatomy": "retina"})
    assert label.shape == (default_vocab.num_classes,) and label.sum() == 2
    assert {default_vocab.class_names[i] for i in np.flatnonzero(label)} == {"modality:OCT", "anatomy:eye"}


def test_default_path_and_layout(default_vocab):
    assert default_vocabulary_path().is_file()
    assert default_vocab.group_names[:2] == ["modality", "anatomy"]
    assert default_vocab.num_classes == sum(len(default_vocab.classes(g)) for g in default_vocab.group_names)
    assert len(default_vocab.class_names) == default_vocab.num_classes
    assert default_vocab.class_names[0] == "modality:XR"


def test_encode_multi_hot():
    vocab = MetadataVocabulary(TOY)
    label = vocab.encode({"modality": "DX", "anatomy": "LUNG"})
    assert label.dtype == np.float32
    np.testing.assert_allclose(label, [1, 0, 0, 1, 0])
    assert vocab.class_names == ["modality:XR", "modality:CT", "modality:US", "anatomy:chest", "anatomy:head"]


@pytest.mark.parametrize(
    "meta,index",
    [({"modality": "XR", "anatomy": "chest"}, 0), ({"modality": "XR", "anatomy": "head"}, 1),
     ({"modality": "CT", "anatomy": "chest"}, 2), ({"modality": "ultrasound", "anatomy": "head"}, 5)],
)
def test_combined_index(meta, index):
    vocab = MetadataVocabulary(TOY)
    assert vocab.num_combined == 6
    assert vocab.combined_index(meta) == index
    assert vocab.combined_class_names[index].split("/")[0] == vocab.canonical("modality", meta["modality"])


@pytest.mark.parametrize("value", ["elbow", "", None, float("nan")])
def test_unknown_value_lists_known_values(value):
    vocab = MetadataVocabulary(TOY)
    with pytest.raises(ValueError, match="manifest m.csv row 3") as err:
        vocab.canonical("anatomy", value, context="manifest m.csv row 3")
    assert "chest" in str(err.value) and "head" in str(err.value) and "LUNG" in str(err.value)
    with pytest.raises(ValueError, match="known anatomy values"):
        vocab.encode({"modality": "CT", "anatomy": value})


def test_unknown_empty_policy():
    vocab = MetadataVocabulary(TOY, unknown="empty")
    assert vocab.canonical("anatomy", "elbow") is None
    np.testing.assert_allclose(vocab.encode({"modality": "CT", "anatomy": "elbow"}), [0, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="combined class needs a known anatomy"):
        vocab.combined_index({"modality": "CT", "anatomy": "elbow"})


@pytest.mark.parametrize(
    "groups,unknown,match",
    [
        ({}, "error", "at least one group"),
        (TOY, "ignore", "unknown must be one of"),
        ({"modality": {}}, "error", "has no classes"),
        ({"modality": {"XR": ["CT"], "CT": []}}, "error", "maps to both"),
        ({"modality": {"XR": "CR"}}, "error", "must be a list"),
    ],
)
def test_invalid_definitions(groups, unknown, match):
    with pytest.raises(ValueError, match=match):
        MetadataVocabulary(groups, unknown=unknown)


def test_unknown_group():
    with pytest.raises(ValueError, match="unknown metadata group 'view'"):
        MetadataVocabulary(TOY).classes("view")


def test_extra_groups_from_json_without_code(tmp_path):
    """A user adds 'view' and 'laterality' groups only by writing a JSON file."""
    definition = {
        "groups": {
            **TOY,
            "view": {"PA": ["POSTERO-ANTERIOR"], "AP": [], "LAT": ["LATERAL", "LL"]},
            "laterality": {"left": ["L"], "right": ["R"]},
        }
    }
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(definition))
    vocab = MetadataVocabulary.from_file(path)
    assert vocab.group_names == ["modality", "anatomy", "view", "laterality"]
    assert vocab.num_classes == 3 + 2 + 3 + 2
    assert vocab.num_combined == 3 * 2 * 3 * 2
    label = vocab.encode({"modality": "CR", "anatomy": "chest", "view": "lateral", "laterality": "R"})
    np.testing.assert_allclose(label, [1, 0, 0, 1, 0, 0, 0, 1, 0, 1])
    sub = vocab.subset(["modality", "view"])
    np.testing.assert_allclose(sub.encode({"modality": "CT", "view": "PA"}), [0, 1, 0, 1, 0, 0])


@pytest.mark.parametrize(
    "content,exc,match",
    [(None, FileNotFoundError, "not found"), ("{not json", ValueError, "not valid JSON"),
     ('{"modality": {}}', ValueError, "'groups' mapping")],
)
def test_bad_files(tmp_path, content, exc, match):
    path = tmp_path / "v.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(exc, match=match):
        MetadataVocabulary.from_file(path)
