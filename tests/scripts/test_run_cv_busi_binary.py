"""Issue 21's guarantee for binary tasks: run_cv.py's BUSI benign-vs-malignant predictions are those it gave before
the multi-class / multi-label tasks existed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests import build_manifest
from modan_monai.data import write_manifest

#: predictions.csv scores (manifest row -> p(malignant)) of the command below at commit 0102623, before the task
#: id: 10 benign + 10 malignant BUSI images (first by path), 1 repeat x 2 folds, 1 epoch, 32 px, batch 8, seed 0.
BEFORE_TASKS = {
    0: 0.5028733015060425, 1: 0.5088850855827332, 2: 0.5059291124343872, 3: 0.5148395895957947,
    4: 0.5038102865219116, 5: 0.5074625015258789, 6: 0.5104644298553467, 7: 0.49738240242004395,
    8: 0.5075247883796692, 9: 0.5124682784080505, 10: 0.5083194971084595, 11: 0.4993494153022766,
    12: 0.5026969909667969, 13: 0.5081011652946472, 14: 0.5070925951004028, 15: 0.5104771256446838,
    16: 0.5061144828796387, 17: 0.5013118982315063, 18: 0.5145766139030457, 19: 0.5009781122207642,
}


def test_busi_binary_predictions_are_unchanged(shared_datasets: Path, tmp_path: Path, load_script: Callable,
                                               single_thread_torch: None) -> None:
    frame = build_manifest("busi", shared_datasets / "busi", classes=("benign", "malignant")).sort_values("path")
    subset = frame.groupby("label", group_keys=False).head(10).sort_values("path").reset_index(drop=True)
    manifest = write_manifest(subset, tmp_path / "busi.csv")
    args = ["--manifest", str(manifest), "--label-column", "label", "--positive", "malignant", "--init", "scratch",
            "--modes", "finetune", "--fractions", "100", "--repeats", "1", "--folds", "2", "--epochs", "1",
            "--batch-size", "8", "--image-size", "32", "--out", str(tmp_path / "cv")]
    assert load_script("run_cv").main(args) == 0
    predictions = pd.read_csv(tmp_path / "cv" / "predictions.csv")
    assert predictions.columns.tolist() == ["init", "mode", "fraction", "repeat", "fold", "level", "row", "index",
                                            "case_id", "label", "score"]
    scores = dict(zip(predictions["row"].astype(int), predictions["score"]))
    assert scores.keys() == BEFORE_TASKS.keys()
    np.testing.assert_allclose([scores[r] for r in BEFORE_TASKS], list(BEFORE_TASKS.values()), rtol=1e-5, atol=1e-6)
