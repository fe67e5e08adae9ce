"""The classify bundle's ``task`` id: multiclass and multilabel training, evaluation and inference; binary unchanged."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.bundle import run as bundle_run
from PIL import Image

from modan_monai.data.demo_tasks import demo_classification_manifest
from modan_monai.evaluation.training import predict_proba, run_classify_bundle, task_labels
from modan_monai.data import load_datalist
from modan_monai.losses import MaskedBCEWithLogitsLoss
from modan_monai.networks import read_model_settings

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "classify"
CONFIGS = BUNDLE / "configs"
TINY = {"epochs": 1, "image_size": 32, "batch_size": 8, "log_interval": 1}
CLASSES = ["benign", "malignant", "normal"]
#: split of the i-th image of each class: 4 train, 2 val, 2 test
SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2


def _image(pattern: str, i: int, size: int = 32) -> np.ndarray:
    """A ``size`` px grey image with a class pattern: a bright left half, right half, centre square or top band."""
    rng = np.random.default_rng(i)
    x = rng.uniform(0, 60, (size, size))
    h = size // 2
    if "left" in pattern:
        x[:, :h] += 150
    if "right" in pattern:
        x[:, h:] += 150
    if "centre" in pattern:
        x[h // 2:h + h // 2, h // 2:h + h // 2] += 180
    return np.clip(x, 0, 255).astype(np.uint8)


def _rows(root: Path, patterns: dict[str, str], per_class: int = 8) -> list[dict]:
    rows = []
    for name, pattern in patterns.items():
        for i in range(per_class):
            path = root / "png" / f"{name.replace('|', '+')}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(pattern, i + 100 * len(rows))).save(path)
            rows.append({"path": str(path.relative_to(root)), "modality": "US", "anatomy": "breast",
                         "split": SPLITS[i % len(SPLITS)], "dataset": "synthetic", "case_id": path.stem})
    return rows


@pytest.fixture(scope="module")
def multiclass_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes of 8 synthetic 32 px PNGs (left half / right half / centre square bright), column ``finding``."""
    root = tmp_path_factory.mktemp("multiclass")
    rows = _rows(root, dict(zip(CLASSES, ["left", "right", "centre"])))
    for row in rows:
        row["finding"] = row["case_id"].split("_")[0]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def multilabel_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Findings ``Mass`` (left half) / ``Edema`` (right half): ``Finding Labels`` (``|``-joined, ``No Finding``) and
    CheXpert-style 1 / 0 / -1 / blank columns ``Mass`` and ``Edema``."""
    root = tmp_path_factory.mktemp("multilabel")
    rows = _rows(root, {"Mass": "left", "Edema": "right", "Edema|Mass": "left right", "No Finding": ""})
    for k, row in enumerate(rows):
        name = row["case_id"].rsplit("_", 1)[0].replace("+", "|")
        row["Finding Labels"] = name
        row["Mass"], row["Edema"] = int("Mass" in name), int("Edema" in name)
        if k % 8 == 1:  # a training row with an uncertain Edema (CheXpert's -1)
            row["Edema"] = -1
        if k % 8 == 2:  # a training row with a blank Mass (not mentioned)
            row["Mass"] = ""
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_multiclass_train_evaluate_infer(
    tmp_path: Path, multiclass_manifest: Path, bundle_cli: Callable[..., str], tensorboard_tags: Callable
) -> None:
    out = tmp_path / "models"
    log = bundle_cli("classify", "run", "--config_file", "configs/train.json", "--logging_file",
                     "configs/logging.conf", manifest=multiclass_manifest, task="multiclass", label_column="finding",
                     ordinal=True, output_dir=out, **TINY)
    for name in ("val_auc", *(f"val_auc_{c}" for c in CLASSES), "val_accuracy", "val_balanced_accuracy", "val_kappa"):
        assert re.search(rf"{name}: \d", log), name  # the console (StatsHandler)
    tags = set(tensorboard_tags(out / "logs")["scalars"])
    assert {"val_auc", "val_auc_benign", "val_auc_normal", "val_balanced_accuracy", "val_kappa"} <= tags
    settings = read_model_settings(out / "model.pt")
    assert settings["label_type"] == "multiclass" and settings["class_names"] == CLASSES

    # evaluate: the trained task and classes are read from model.pt (no --task here)
    bundle_run(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], bundle_root=str(BUNDLE),
               manifest=str(multiclass_manifest), label_column="finding", output_dir=str(out), logging_file=False)
    metrics = dict(read_csv(out / "metrics.csv"))
    assert {"test_auc", "test_accuracy", "test_balanced_accuracy"} | {f"test_auc_{c}" for c in CLASSES} <= set(metrics)
    per_class = [float(metrics[f"test_auc_{c}"]) for c in CLASSES]
    assert float(metrics["test_auc"]) == pytest.approx(np.mean(per_class))  # the macro mean
    header, *rows = read_csv(out / "test_predictions.csv")
    assert header == ["file"] + [f"p({c})" for c in CLASSES] and len(rows) == 6
    assert all(abs(sum(float(v) for v in r[1:]) - 1.0) < 1e-5 for r in rows)  # softmax
    assert (out / "roc.png").stat().st_size > 0

    inferred = tmp_path / "infer"
    bundle_run(config_file=str(CONFIGS / "inference.json"), bundle_root=str(BUNDLE),
               dataset_dir=str(multiclass_manifest.parent), image_pattern="png/*.png", ckpt_path=str(out / "model.pt"),
               output_dir=str(inferred), logging_file=False)
    header, *rows = read_csv(inferred / "predictions.csv")
    assert header == ["file"] + [f"p({c})" for c in CLASSES] and len(rows) == 24


def test_multilabel_findings_column_with_balanced_pos_weight(tmp_path: Path, multilabel_manifest: Path) -> None:
    out = tmp_path / "models"
    common = {"bundle_root": str(BUNDLE), "logging_file": False, "manifest": str(multilabel_manifest),
              "output_dir": str(out), "task": "multilabel", "label_column": "Finding Labels"}
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), workflow_type="train", pos_weight="balanced",
                              **common, **TINY)
    workflow.initialize()
    assert workflow.parser.get_parsed_content("output_classes") == ["Edema", "Mass"]  # sorted, No Finding left out
    loss = workflow.parser.get_parsed_content("loss")
    train = workflow.parser.get_parsed_content("train_datalist")
    y = np.array([d["label"] for d in train])
    assert isinstance(loss, MaskedBCEWithLogitsLoss)
    np.testing.assert_allclose(loss.pos_weight.numpy(), (1 - y).sum(0) / y.sum(0), rtol=1e-6)
    workflow.run()
    workflow.finalize()
    assert read_model_settings(out / "model.pt")["label_type"] == "multilabel"

    bundle_run(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], **common)
    metrics = dict(read_csv(out / "metrics.csv"))
    assert {"test_auc", "test_auc_Edema", "test_auc_Mass"} <= set(metrics) and "test_accuracy" not in metrics
    header, *rows = read_csv(out / "test_predictions.csv")
    assert header == ["file", "p(Edema)", "p(Mass)"] and len(rows) == 8
    assert (out / "roc.png").stat().st_size > 0


def test_multilabel_columns_ignore_policy_masks_uncertain_labels(tmp_path: Path, multilabel_manifest: Path) -> None:
    """0/1/-1/blank columns under ``ignore``: NaN targets, left out of the loss; run_classify_bundle reads no
    manifest of its own (the bundle's ``manifest`` points nowhere); predict_proba gives one sigmoid per label."""
    labelled = task_labels(load_datalist(multilabel_manifest), "multilabel", label_columns=["Mass", "Edema"],
                           uncertain_policy="ignore")
    assert labelled.class_names == ["Mass", "Edema"]
    masked = [d for d in labelled.datalist if any(math.isnan(v) for v in d["label"])]
    assert len(masked) == 8 and all(d["split"] == "train" and sum(map(math.isnan, d["label"])) == 1 for d in masked)
    train = [d for d in labelled.datalist if d["split"] == "train"]
    val = [d for d in labelled.datalist if d["split"] == "val"]
    run = run_classify_bundle(train, val, tmp_path / "fold", task="multilabel", class_names=labelled.class_names,
                              epochs=1, batch_size=8, image_size=32,
                              overrides={"manifest": str(tmp_path / "absent.csv")})
    assert run.best_val_auc is None or 0.0 <= run.best_val_auc <= 1.0
    p = predict_proba(run.network, val, run.preprocessing, task="multilabel")
    assert p.shape == (len(val), 2) and ((p > 0) & (p < 1)).all()
    assert predict_proba(run.network, val, run.preprocessing).shape == (len(val),)  # binary: column 1 of a softmax


@pytest.mark.parametrize(
    "override, match",
    [({"task": "multi-class"}, r"config id 'task' is 'multi-class': choose one of \['binary', 'multiclass', "
                               r"'multilabel'\]"),
     ({"label_column": "finding"}, r"label column 'finding' in manifest .* is not binary 0/1: values seen .*task: "
                                   r"multiclass"),
     ({"task": "multiclass", "label_column": "finding", "class_names": ["benign", "malignant"]},
      r"label column 'finding' in manifest .* holds \['normal'\], not among class_names \['benign', 'malignant'\], in "
      r"rows \[16, 17"),
     ({"task": "multiclass", "label_column": "grade"}, r"label column 'grade' in manifest .* is empty in rows \[3\]"),
     ({"task": "multilabel", "label_column": "finding", "pos_weight": [1.0]},
      r"config id 'pos_weight' gives 1 weights \[1.0\] for 3 labels"),
     ({"task": "multiclass", "label_column": "finding", "val_level": "exam"}, r"config id 'val_level' is 'exam'")],
)
def test_bad_task_settings_are_named(tmp_path: Path, multiclass_manifest: Path, override: dict, match: str) -> None:
    frame = pd.read_csv(multiclass_manifest)
    frame["grade"] = frame.index % 3
    frame.loc[3, "grade"] = None  # an empty cell under multiclass
    manifest = multiclass_manifest.parent / "graded.csv"
    frame.to_csv(manifest, index=False)
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
                              manifest=str(manifest), output_dir=str(tmp_path), **override)
    with pytest.raises(RuntimeError) as err:  # the config parser wraps the ValueError
        workflow.initialize()
        workflow.parser.get_parsed_content("loss")
        workflow.parser.get_parsed_content("validate#key_metric")
    assert isinstance(err.value.__cause__, ValueError) and re.search(match, str(err.value.__cause__))
    assert not (tmp_path / "logs").exists()


def test_multilabel_row_all_uncertain_under_ignore_is_named(tmp_path: Path, multilabel_manifest: Path) -> None:
    frame = pd.read_csv(multilabel_manifest, dtype=str, keep_default_na=False)
    frame.loc[5, ["Mass", "Edema"]] = ["-1", ""]
    manifest = multilabel_manifest.parent / "all_uncertain.csv"
    frame.to_csv(manifest, index=False)
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
                              manifest=str(manifest), output_dir=str(tmp_path), task="multilabel",
                              label_columns=["Mass", "Edema"], uncertain_policy="ignore")
    with pytest.raises(RuntimeError) as err:
        workflow.initialize()
    assert re.search(r"rows \[5\] of manifest .*all_uncertain\.csv have every label of \['Mass', 'Edema'\] uncertain "
                     r"or empty, all ignored", str(err.value.__cause__))


#: test_predictions.csv of the demo binary task (demo_classification_manifest(size=32, per_pair=4), 2 epochs, 32 px,
#: batch 8, seed 0) written by the classify bundle at commit 0102623, before the task id: p(negative), p(positive)
HEAD_BINARY_PREDICTIONS = {
    "dicom/ct_chest/000.dcm": (0.4671361744403839, 0.5328638553619385),
    "dicom/ct_head/002.dcm": (0.45313018560409546, 0.5468698143959045),
    "dicom/dx_chest/003.dcm": (0.46067216992378235, 0.53932785987854),
    "png/us_breast/000.png": (0.457288533449173, 0.5427114963531494),
}


def test_binary_results_are_unchanged(tmp_path: Path) -> None:
    """The default (binary) run and an explicit ``task=binary`` run train the same weights, and their test
    predictions are those the bundle gave before the task id existed."""
    root = tmp_path / "demo"
    manifest = demo_classification_manifest(root, size=32, per_pair=4)
    predictions = []
    for name, task in (("default", {}), ("binary", {"task": "binary"})):
        out = tmp_path / name
        common = {"bundle_root": str(BUNDLE), "logging_file": False, "dataset_dir": str(root),
                  "manifest": str(manifest), "output_dir": str(out), "image_size": 32}
        bundle_run(config_file=str(CONFIGS / "train.json"), epochs=2, batch_size=8, **common, **task)
        bundle_run(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], **common)
        header, *rows = read_csv(out / "test_predictions.csv")
        assert header == ["file", "p(negative)", "p(positive)"]
        predictions.append({str(Path(r[0]).relative_to(root)): tuple(map(float, r[1:])) for r in rows})
        assert read_model_settings(out / "model.pt")["label_type"] == "binary"
        assert (out / "roc.png").stat().st_size > 0  # one curve: the positive class
    default = torch.load(tmp_path / "default" / "model.pt", weights_only=True)
    explicit = torch.load(tmp_path / "binary" / "model.pt", weights_only=True)
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    assert predictions[0] == predictions[1]
    assert predictions[0].keys() == HEAD_BINARY_PREDICTIONS.keys()
    for key, expected in HEAD_BINARY_PREDICTIONS.items():
        np.testing.assert_allclose(predictions[0][key], expected, rtol=1e-5, atol=1e-6)
