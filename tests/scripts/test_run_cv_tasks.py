"""``scripts/run_cv.py --task multiclass / multilabel`` end to end on tiny written data (issue 21): a 3-class
manifest with K folds, and the MLVICX Table I protocol (``--test-split test``) on a ChestX-ray14-format tree."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from modan_monai.evaluation import result_columns

CLASSES = ["benign", "malignant", "normal"]
COMMON = ["--init", "scratch", "--modes", "finetune", "--repeats", "1", "--epochs", "1", "--batch-size", "8",
          "--image-size", "28"]


pytestmark = pytest.mark.usefixtures("single_thread_torch")


def write_three_class_manifest(root: Path, n_cases: int = 12, per_case: int = 2, size: int = 28) -> Path:
    """``n_cases`` cases (a third of each class) of ``per_case`` 8-bit PNGs: normal plain noise, benign a small
    bright disc, malignant a large one. Column ``label`` holds the class name."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    (root / "png").mkdir(parents=True, exist_ok=True)
    rows = []
    for case in range(n_cases):
        name = CLASSES[case % 3]
        for i in range(per_case):
            img = rng.normal(60, 10, (size, size))
            radius = {"benign": size // 8, "malignant": size // 3, "normal": 0}[name]
            img[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 < radius ** 2] = 200
            path = root / "png" / f"c{case:02d}_{i}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(path)
            rows.append({"path": str(path.relative_to(root)), "key": "", "index": "", "modality": "US",
                         "anatomy": "breast", "split": "train", "dataset": "toy", "case_id": f"case{case:02d}",
                         "label": name})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def macro_auc(block: pd.DataFrame, names: list[str]) -> float:
    """Mean one-vs-rest AUC of a fold's predictions, straight from scikit-learn."""
    return float(np.mean([roc_auc_score(block[f"label_{n}"], block[f"score_{n}"]) for n in names]))


def test_run_cv_multiclass_folds(tmp_path: Path, load_script: Callable, capsys: pytest.CaptureFixture) -> None:
    manifest = write_three_class_manifest(tmp_path / "data")
    out = tmp_path / "cv"
    args = ["--task", "multiclass", "--ordinal", "--manifest", str(manifest), "--label-column", "label",
            "--fractions", "50", "100", "--folds", "2", *COMMON, "--out", str(out)]
    run_cv = load_script("run_cv")
    assert run_cv.main(args) == 0

    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == list(result_columns("multiclass", CLASSES, ordinal=True))
    assert len(results) == 4 and set(results["fold"]) == {0, 1} and (results["n_test"] == 12).all()
    assert results[["accuracy", "balanced_accuracy"]].stack().between(0, 1).all() and results["kappa"].notna().all()
    predictions = pd.read_csv(out / "predictions.csv")
    scores = predictions[[f"score_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)  # softmax over the 3 classes
    onehot = predictions[[f"label_{c}" for c in CLASSES]].to_numpy()
    assert (onehot.sum(axis=1) == 1).all() and (np.array(CLASSES)[onehot.argmax(axis=1)] == predictions["label"]).all()
    for (fraction, fold), block in predictions.groupby(["fraction", "fold"]):
        row = results[(results["fraction"] == fraction) & (results["fold"] == fold)].iloc[0]
        assert row["auc"] == pytest.approx(macro_auc(block, CLASSES))  # auc: the macro AUC
        for c in CLASSES:
            assert row[f"auc_{c}"] == pytest.approx(roc_auc_score(block[f"label_{c}"], block[f"score_{c}"]))
        assert row["accuracy"] == pytest.approx((scores[block.index].argmax(axis=1) == onehot[block.index].argmax(
            axis=1)).mean())

    folds = pd.read_csv(out / "folds.csv", dtype={"case_id": str})
    assert (folds.groupby("case_id")["fold_r0"].nunique() == 1).all()  # grouped by case
    assert (folds.groupby("fold_r0")["label"].nunique() == 3).all()  # every class in every fold
    summary = (out / "summary.md").read_text()
    for text in ("multiclass: 3 classes", "## finetune: AUC\n", "## finetune: AUC per class",
                 "| init | fraction | macro | benign | malignant | normal |",
                 "## finetune: accuracy, balanced accuracy, kappa", "macro AUC (mean one-vs-rest AUC over the 3 "):
        assert text in summary, text
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["task"] == "multiclass" and settings["class_names"] == CLASSES and settings["ordinal"] is True

    before = (out / "results.csv").read_bytes()
    assert run_cv.main(args) == 0  # re-run: every fold done, nothing trained, folds.csv reused
    assert (out / "results.csv").read_bytes() == before
    capsys.readouterr()
    # bad input: a class with fewer cases than folds, named with its case count
    assert run_cv.main([*args[:-1], str(tmp_path / "five"), "--folds", "5"]) == 1  # the last --folds counts
    err = capsys.readouterr().err
    assert "error: cannot stratify 5 folds: class(es) ['benign', 'malignant', 'normal'] occur in only" in err
    assert "{'benign': 4, 'malignant': 4, 'normal': 4} case(s)" in err


#: ChestX-ray14 findings of patient p: 3 labels, each in 3 of every 8 patients; "No Finding" in 2 of 8.
PATTERNS = ["Cardiomegaly", "Effusion", "Mass", "Cardiomegaly|Effusion", "No Finding", "Effusion|Mass",
            "Cardiomegaly|Mass", "No Finding"]
LABELS = ["Cardiomegaly", "Effusion", "Mass"]


def test_run_cv_multilabel_chestxray14_test_split(tmp_path: Path, load_script: Callable,
                                                  chestxray14_tree: Callable, capsys: pytest.CaptureFixture) -> None:
    lines, train, test = {}, [], []
    for patient in range(1, 25):  # patients 1-16 in train_val_list.txt, 17-24 in test_list.txt; odd ones 2 images
        for i in range(1 + patient % 2):
            name = f"{patient:08d}_{i:03d}.png"
            lines[name] = f"{PATTERNS[patient % 8]},{i},{patient},50,F,PA,2500,2048,0.143,0.143"
            (test if patient > 16 else train).append(name)
    root = chestxray14_tree(tmp_path / "ChestX-ray14", lines=lines, train_val=train, test=test)
    manifest = tmp_path / "cxr14.csv"
    assert load_script("build_manifest").main(["chestxray14", str(root), "-o", str(manifest)]) == 0
    rows = pd.read_csv(manifest)

    out = tmp_path / "cv"
    run_cv = load_script("run_cv")
    assert run_cv.main(["--task", "multilabel", "--manifest", str(manifest), "--label-column", "Finding Labels",
                        "--test-split", "test", "--fractions", "50", "100", *COMMON, "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == list(result_columns("multilabel", LABELS))
    assert len(results) == 2 and set(results["fold"]) == {0} and (results["n_test"] == len(test)).all()
    full = results.set_index("fraction")
    assert full.loc[100.0, "n_train"] + full.loc[100.0, "n_val"] == len(train)  # every non-test row at 100 %
    assert full.loc[50.0, "n_train"] + full.loc[50.0, "n_val"] < len(train)
    assert not (out / "folds.csv").exists()  # the official split, no folds

    predictions = pd.read_csv(out / "predictions.csv")
    for fraction, block in predictions.groupby("fraction"):
        assert sorted(block["row"]) == rows.index[rows["split"] == "test"].tolist()  # tested on the test list only
        truth = rows.loc[block["row"], LABELS].to_numpy()
        np.testing.assert_array_equal(block[[f"label_{n}" for n in LABELS]].to_numpy(), truth)
        assert block[[f"score_{n}" for n in LABELS]].stack().between(0, 1).all()  # one sigmoid per label
        assert full.loc[fraction, "auc"] == pytest.approx(macro_auc(block, LABELS))  # mean AUC over the labels
    summary = (out / "summary.md").read_text()
    for text in ("multilabel: 3 labels", "## finetune: AUC per class", "| init | fraction | macro | Cardiomegaly | "
                 "Effusion | Mass |", "training on the rows outside split 'test' and testing on split 'test'"):
        assert text in summary, text
    settings = json.loads((out / "settings.json").read_text())
    assert settings["test_split"] == "test" and settings["folds"] is None and settings["class_names"] == LABELS

    capsys.readouterr()
    with pytest.raises(SystemExit):  # folds make no sense with the official split
        run_cv.main(["--task", "multilabel", "--manifest", str(manifest), "--label-column", "Finding Labels",
                     "--test-split", "test", "--folds", "3", *COMMON, "--out", str(tmp_path / "x")])
    assert "argument --folds: --test-split test tests on that split, without folds" in capsys.readouterr().err
    # a label the training rows of the fraction cannot keep twice: named, with its case count
    assert run_cv.main(["--task", "multilabel", "--manifest", str(manifest), "--label-column", "Finding Labels",
                        "--class-names", *LABELS, "Hernia", "--test-split", "test", *COMMON,
                        "--out", str(tmp_path / "hernia")]) == 1
    assert "label(s) 'Hernia' (no positive row)" in capsys.readouterr().err
