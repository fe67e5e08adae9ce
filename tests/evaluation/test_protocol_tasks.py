"""The protocol's multi-class / multi-label side (issue 21): result columns, per-class summary tables, per-class
ROC panels and the bad input it refuses before any training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from modan_monai.evaluation import (
    RESULT_COLUMNS,
    metric_table,
    plot_roc,
    result_columns,
    run_protocol,
    summary_markdown,
    summary_table,
)

CLASSES = ["0", "1", "2"]


def fold_results(n_repeats: int = 3, seed: int = 0) -> pd.DataFrame:
    """Multi-class results of two inits, 2 folds: per-class AUCs (class '2' undefined in fold 1), accuracy, kappa."""
    rng = np.random.default_rng(seed)
    rows = []
    for init, shift in (("scratch", 0.0), ("modan", 0.1)):
        for repeat in range(n_repeats):
            for fold in range(2):
                per_class = {f"auc_{c}": 0.6 + shift + 0.05 * j + 0.01 * rng.random() for j, c in enumerate(CLASSES)}
                if fold == 1:
                    per_class["auc_2"] = math.nan
                defined = [v for v in per_class.values() if not math.isnan(v)]
                rows.append({"init": init, "mode": "finetune", "fraction": 100.0, "repeat": repeat, "fold": fold,
                             "auc": float(np.mean(defined)), "auc_n_classes": len(defined), **per_class,
                             "accuracy": 0.5 + shift, "balanced_accuracy": 0.4 + shift, "kappa": 0.3 + shift})
    return pd.DataFrame(rows)


def test_result_columns_per_task() -> None:
    assert result_columns() == RESULT_COLUMNS  # binary: unchanged
    assert result_columns("multiclass", ["a", "b", "c"]) == (
        *RESULT_COLUMNS, "auc_n_classes", "auc_a", "auc_b", "auc_c", "accuracy", "balanced_accuracy")
    assert result_columns("multiclass", ["a", "b", "c"], ordinal=True)[-1] == "kappa"
    assert result_columns("multilabel", ["Edema", "Mass"])[-3:] == ("auc_n_classes", "auc_Edema", "auc_Mass")
    with pytest.raises(ValueError, match=r"class names \['n_classes', 'b'\] make the results column\(s\) "
                                         r"\['auc_n_classes'\] twice"):
        result_columns("multilabel", ["n_classes", "b"])
    with pytest.raises(ValueError, match="'task' is 'ordinal'"):
        result_columns("ordinal", ["a"])


def test_metric_table_over_repeat_means_skips_undefined_classes() -> None:
    results = fold_results()
    table = metric_table(results, ["auc_0", "auc_2", "kappa"]).set_index("init")
    for init in ("scratch", "modan"):
        block = results[results["init"] == init]
        means = block.groupby("repeat")["auc_0"].mean()
        assert table.loc[init, "auc_0_mean"] == pytest.approx(means.mean())
        assert table.loc[init, "auc_0_sd"] == pytest.approx(means.std(ddof=1))
        # class 2 has no AUC in fold 1: its repeat mean is fold 0's AUC alone
        only = block[block["fold"] == 0].set_index("repeat")["auc_2"]
        assert table.loc[init, "auc_2_mean"] == pytest.approx(only.mean())
        assert table.loc[init, "auc_2_n"] == 3 and table.loc[init, "n_repeats"] == 3
    assert table.loc["modan", "kappa_mean"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"results lack column\(s\) \['auc_7'\]"):
        metric_table(results, ["auc_7"])


def test_summary_markdown_adds_per_class_and_metric_tables() -> None:
    results = fold_results()
    text = summary_markdown(results, "scratch", title="t", class_names=CLASSES,
                            metrics=["accuracy", "balanced_accuracy", "kappa"])
    # the macro table and the Wilcoxon test on the macro AUC, as for binary tasks
    assert "## finetune: AUC\n" in text and "Wilcoxon signed-rank test vs `scratch`" in text
    macro = summary_table(results, "scratch").set_index("init")
    assert f"| modan | {macro.loc['modan', 'mean_auc']:.3f} ± {macro.loc['modan', 'sd_auc']:.3f} (n=3) |" in text
    assert "## finetune: AUC per class" in text and "| init | fraction | macro | 0 | 1 | 2 |" in text
    cells = metric_table(results, ["auc", "auc_0", "auc_1", "auc_2"]).set_index("init").loc["modan"]
    row = "| modan | 100% | " + " | ".join(f"{cells[f'{c}_mean']:.3f} ± {cells[f'{c}_sd']:.3f}"
                                          for c in ("auc", "auc_0", "auc_1", "auc_2")) + " |"
    assert row in text
    assert "## finetune: accuracy, balanced accuracy, kappa" in text
    assert "| modan | 100% | 0.600 ± 0.000 | 0.500 ± 0.000 | 0.400 ± 0.000 |" in text
    binary = summary_markdown(results, "scratch", title="t")
    assert "per class" not in binary and binary == text[: len(binary)]  # the binary tables come first, unchanged


def test_plot_roc_one_panel_per_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for init in ("scratch", "modan"):
        for fold in range(2):
            y = np.arange(30) % 3
            scores = rng.dirichlet(np.ones(3), 30) + 0.5 * np.eye(3)[y]
            for i in range(30):
                rows.append({"init": init, "mode": "finetune", "fraction": 100.0, "repeat": 0, "fold": fold,
                             **{f"label_{c}": int(y[i] == j) for j, c in enumerate(CLASSES)},
                             **{f"score_{c}": scores[i, j] for j, c in enumerate(CLASSES)}})
    frame = pd.DataFrame(rows)
    frame.loc[frame["fold"] == 1, "label_2"] = np.nan  # a label ignored in a fold is left out
    path = plot_roc(frame, tmp_path / "roc.png", class_names=CLASSES)
    image = Image.open(path)
    assert image.size[0] > 2.5 * image.size[1]  # three panels side by side
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def write_manifest(root: Path, classes: list[int], split: list[str] | None = None,
                   cases: list[str] | None = None) -> Path:
    """One 28 px PNG row per entry of ``classes`` (cases ``c<i>`` unless given)."""
    (root / "png").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, cls in enumerate(classes):
        path = root / "png" / f"{i}.png"
        Image.fromarray(np.full((28, 28), 40 * cls, np.uint8)).save(path)
        rows.append({"path": str(path), "key": "", "index": "", "modality": "US", "anatomy": "breast",
                     "split": split[i] if split else "train", "dataset": "toy",
                     "case_id": cases[i] if cases else f"c{i}", "grade": cls})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(task="multiclass", folds=5),
         r"cannot stratify 5 folds: class\(es\) \['2'\] occur in only \{'2': 3\} case\(s\)"),
        (dict(task="multiclass", class_names=["0", "1"]),
         r"label column 'grade' in manifest .* holds \['2'\], not among class_names \['0', '1'\]"),
        (dict(task="binary", ordinal=True), r"ordinal .* is for task 'multiclass', not 'binary'"),
        (dict(task="multiclass", level="exam"), r"task 'multiclass' is evaluated per image.*--level image"),
        (dict(task="multiclass", test_split="test"), r"has no rows in split 'test' \(splits: \['train'\]\)"),
        (dict(task="multiclass", splits=["train"], test_split="test"),
         r"test split 'test' is not among the selected splits \['train'\]"),
        (dict(task="binary"), r"label column 'grade' in manifest .* is not binary 0/1"),
    ],
)
def test_bad_task_input_refused_before_training(tmp_path: Path, options: dict, match: str) -> None:
    manifest = write_manifest(tmp_path / "data", [0] * 6 + [1] * 6 + [2] * 3)
    with pytest.raises(ValueError, match=match):
        run_protocol(manifest, "grade", {"scratch": "scratch"}, tmp_path / "out", **options)
    assert not (tmp_path / "out" / "results.csv").exists()


def test_test_split_refuses_a_case_on_both_sides(tmp_path: Path) -> None:
    classes = [0, 1, 2] * 4
    split = ["train"] * 9 + ["test"] * 3
    cases = [f"c{i}" for i in range(11)] + ["c0"]  # case c0 has a training and a test image
    manifest = write_manifest(tmp_path / "data", classes, split, cases)
    with pytest.raises(ValueError, match=r"1 case\(s\) have rows in split 'test' and in the training rows, e.g. "
                                         r"\['toy/c0'\]"):
        run_protocol(manifest, "grade", {"scratch": "scratch"}, tmp_path / "out", task="multiclass",
                     test_split="test")


def test_uncertain_labels_ignored_are_left_out_of_folds_and_auc(tmp_path: Path) -> None:
    """CheXpert-style 1 / 0 / -1 / blank columns under ``uncertain_policy="ignore"``: masked in the fold file,
    empty in predictions.csv, and left out of each label's AUC."""
    rng = np.random.default_rng(0)
    (tmp_path / "png").mkdir()
    rows = []
    for i in range(16):
        edema = "-1" if i % 5 == 3 else str(int(i % 2 == 0))
        effusion = "" if i % 7 == 1 and i % 5 != 3 else str(int(i % 3 == 0))
        path = tmp_path / "png" / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (28, 28)).astype(np.uint8)).save(path)
        rows.append({"path": str(path), "key": "", "index": "", "modality": "XR", "anatomy": "chest",
                     "split": "train", "dataset": "chexpert", "case_id": f"p{i}", "Edema": edema,
                     "Pleural Effusion": effusion})
    manifest = tmp_path / "chexpert.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    labels = ["Edema", "Pleural Effusion"]
    out = tmp_path / "cv"
    results = run_protocol(manifest, None, {"scratch": "scratch"}, out, task="multilabel", label_columns=labels,
                           uncertain_policy="ignore", modes=["finetune"], fractions=[100], repeats=1, folds=2,
                           epochs=1, batch_size=8, image_size=28)
    assert list(results.columns) == list(result_columns("multilabel", labels)) and len(results) == 2
    folds = pd.read_csv(out / "folds.csv", dtype={"label": str})
    assert folds.loc[3, "label"] == "?1" and folds.loc[1, "label"] == "0?" and folds.loc[0, "label"] == "11"
    predictions = pd.read_csv(out / "predictions.csv")
    for fold, block in predictions.groupby("fold"):
        row = results[results["fold"] == fold].iloc[0]
        for label in labels:
            known = block[f"label_{label}"].notna()
            assert (~known).sum() == sum(1 for r in block["row"] if rows[r][label] in ("-1", ""))
            truth, score = block.loc[known, f"label_{label}"], block.loc[known, f"score_{label}"]
            assert row[f"auc_{label}"] == pytest.approx(roc_auc_score(truth, score))
    with pytest.raises(ValueError, match=r"label column 'Edema' in manifest .* is uncertain \(-1\) in rows \[3, 8, 13\]"):
        run_protocol(manifest, None, {"scratch": "scratch"}, tmp_path / "strict", task="multilabel",
                     label_columns=labels)
