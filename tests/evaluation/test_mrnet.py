"""Exam-level scoring of MRNet-format volumes: aggregation, planes, exam-level validation, the protocol per exam."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp

from data_manifests import mrnet
from modan_monai.data import expand_volume_slices, manifest_to_datalist, read_manifest, write_manifest
import modan_monai.evaluation.protocol as protocol
from modan_monai.evaluation import (
    aggregate_exam_scores,
    auc,
    binary_labels,
    exam_level_auc,
    predict_proba,
    run_classify_bundle,
    run_protocol,
    select_planes,
)

N_EXAMS = 12


def write_mrnet(root: Path, planes: tuple[str, ...] = ("axial", "sagittal"), seed: int = 0) -> Path:
    """MRNet-v1.0 layout: train/<plane>/NNNN.npy (slices, 256, 256) uint8 and train-acl.csv 'case,label'."""
    rng = np.random.default_rng(seed)
    labels = {case: case % 2 for case in range(N_EXAMS)}
    for plane in planes:
        (root / "train" / plane).mkdir(parents=True, exist_ok=True)
        for case, label in labels.items():
            n_slices = int(rng.integers(3, 6))
            vol = rng.integers(0, 80, (n_slices, 256, 256)).astype(np.uint8)
            if label:
                vol[n_slices // 2, 96:160, 96:160] = 250  # a lesion on the central slice
            np.save(root / "train" / plane / f"{case:04d}.npy", vol)
    pd.DataFrame(sorted(labels.items())).to_csv(root / "train-acl.csv", header=False, index=False)
    return root


@pytest.fixture(scope="module")
def mrnet_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_mrnet(tmp_path_factory.mktemp("MRNet-v1.0"))
    frame = mrnet.build(root, planes=("axial", "sagittal"), folders=("train",))
    return write_manifest(frame, root / "mrnet.csv")


@pytest.mark.parametrize("method", ["mean", "max", "lse"])
def test_aggregate_exam_scores(method: str) -> None:
    rng = np.random.default_rng(0)
    cases = np.repeat(["b", "a", "c"], [3, 5, 1])
    probs = rng.random(len(cases))
    scores = aggregate_exam_scores(cases, probs, method, sharpness=4.0)
    assert list(scores.index) == ["b", "a", "c"]  # order of first appearance
    for case in ("a", "b", "c"):
        p = probs[cases == case]
        expected = {"mean": p.mean(), "max": p.max(), "lse": (logsumexp(4.0 * p) - np.log(len(p))) / 4.0}[method]
        np.testing.assert_allclose(scores[case], expected, rtol=1e-12)
        assert p.mean() - 1e-12 <= scores[case] <= p.max() + 1e-12
    with pytest.raises(ValueError, match="must be one of"):
        aggregate_exam_scores(cases, probs, "median")


def test_exam_level_auc_and_conflicting_labels() -> None:
    cases = ["a", "a", "b", "b", "c", "c"]
    value, table = exam_level_auc(cases, [1, 1, 0, 0, 1, 1], [0.9, 0.1, 0.6, 0.5, 0.4, 0.4], "max")
    assert list(table["case_id"]) == ["a", "b", "c"] and list(table["n_slices"]) == [2, 2, 2]
    np.testing.assert_allclose(value, 0.5)  # max: a 0.9 > b 0.6 > c 0.4 -> one of the two positives beats b
    value, _ = exam_level_auc(cases, [1, 1, 0, 0, 1, 1], [0.9, 0.1, 0.6, 0.5, 0.4, 0.4], "mean")
    np.testing.assert_allclose(value, 0.0)
    with pytest.raises(ValueError, match=r"exam\(s\) \['a'\] have slices with different labels"):
        exam_level_auc(cases, [1, 0, 0, 0, 1, 1], np.zeros(6))


@pytest.mark.parametrize("method", ["mean", "max", "lse"])
def test_exam_aggregation_on_mrnet_volumes(mrnet_manifest: Path, method: str) -> None:
    """Slices of the written volumes, scored by their mean intensity, aggregate to the per-exam numpy values."""
    df = select_planes(read_manifest(mrnet_manifest), ["axial", "sagittal"])
    slices = expand_volume_slices(manifest_to_datalist(df), mode="all")
    assert len(slices) == sum(np.load(p, mmap_mode="r").shape[0] for p in df["path"])
    probs = [float(np.load(s["image"], mmap_mode="r")[s["index"]].mean() / 255.0) for s in slices]
    scores = aggregate_exam_scores([s["case_id"] for s in slices], probs, method)
    assert len(scores) == N_EXAMS
    for case, score in scores.items():
        per_slice = np.concatenate(
            [np.load(p).mean(axis=(1, 2)) / 255.0 for p in df.loc[df["case_id"] == case, "path"]]
        )
        expected = {"mean": per_slice.mean(), "max": per_slice.max(),
                    "lse": (logsumexp(5.0 * per_slice) - np.log(len(per_slice))) / 5.0}[method]
        np.testing.assert_allclose(score, expected, rtol=1e-6)


def test_select_planes_errors(mrnet_manifest: Path) -> None:
    df = read_manifest(mrnet_manifest)
    assert set(select_planes(df, ["sagittal"])["plane"]) == {"sagittal"}
    with pytest.raises(ValueError, match=r"plane\(s\) \['coronal'\] not in the manifest's 'plane' column"):
        select_planes(df, ["coronal"])
    with pytest.raises(ValueError, match="no 'plane' column"):
        select_planes(df.drop(columns="plane"), ["axial"])


def test_validation_picks_the_best_epoch_per_exam(mrnet_manifest: Path, tmp_path: Path) -> None:
    """With val_level "exam" the best-epoch AUC is the exam-level AUC (max of slice scores) of the kept weights."""
    df = select_planes(read_manifest(mrnet_manifest), ["sagittal"])
    rows = binary_labels(expand_volume_slices(manifest_to_datalist(df), mode="all"), "acl")
    train = [r for r in rows if int(r["case_id"][-4:]) < N_EXAMS // 2]
    val = [r for r in rows if int(r["case_id"][-4:]) >= N_EXAMS // 2]
    run = run_classify_bundle(train, val, tmp_path / "run", epochs=2, batch_size=16, image_size=32,
                              val_level="exam", aggregation="max", seed=1)
    probs = predict_proba(run.network, val, run.preprocessing, device=run.device)
    exams = [f"{r['dataset']}/{r['case_id']}" for r in val]
    expected, table = exam_level_auc(exams, [r["label"] for r in val], probs, "max")
    assert len(table) == N_EXAMS // 2 < len(val)  # scored over exams, not over the slices
    assert run.best_epoch in (1, 2) and run.best_val_auc == pytest.approx(expected, abs=1e-9)
    assert auc([r["label"] for r in val], probs) != pytest.approx(expected)  # per slice: another value


def test_protocol_scores_exams(mrnet_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return run_classify_bundle(*args, **kwargs)

    monkeypatch.setattr(protocol, "run_classify_bundle", spy)
    results = run_protocol(
        mrnet_manifest, "acl", {"scratch": "scratch"}, tmp_path, modes=["finetune"], fractions=[50, 100],
        repeats=1, folds=2, epochs=1, batch_size=16, image_size=32, aggregation="max", planes=["sagittal"],
        slice_mode="central", central_slices=2,
    )
    assert len(results) == 4 and set(results["level"]) == {"exam"}
    assert results.loc[results["fraction"] == 100, "n_test"].sum() == N_EXAMS  # every exam tested once
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    full = predictions[predictions["fraction"] == 100]
    assert len(full) == N_EXAMS and full["case_id"].nunique() == N_EXAMS  # one score per exam
    folds = pd.read_csv(tmp_path / "folds.csv")
    assert len(folds) == N_EXAMS  # one sagittal volume per exam
    assert "max of slice probabilities per exam" in (tmp_path / "summary.md").read_text()
    # the inner validation that picks the best epoch is scored like the test: per exam, max of slice scores
    assert len(calls) == 4 and all(c["val_level"] == "exam" and c["aggregation"] == "max" for c in calls)
    calls.clear()
    run_protocol(mrnet_manifest, "acl", {"scratch": "scratch"}, tmp_path / "image", modes=["finetune"], repeats=1,
                 folds=2, epochs=1, batch_size=16, image_size=32, level="image", planes=["sagittal"],
                 slice_mode="central")
    assert len(calls) == 2 and all(c["val_level"] == "image" for c in calls)
