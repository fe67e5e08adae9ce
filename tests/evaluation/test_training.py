"""run_classify_bundle (the classify bundle in process), predict_proba, the label/datalist helpers, the demo task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.transforms import RandFlipd

from modan_monai.data import manifest_to_datalist, read_manifest
from modan_monai.data.demo_tasks import demo_classification_manifest
from modan_monai.evaluation.training import (
    binary_labels,
    classify_bundle_dir,
    predict_proba,
    run_classify_bundle,
    split_datalist,
)
from modan_monai.handlers import KeepBestWeights
from modan_monai.networks import ResNet18Encoder, save_encoder
from modan_monai.transforms import classification_transforms

TINY = {"image_size": 32, "batch_size": 8, "num_workers": 0}


@pytest.fixture(scope="module")
def demo_task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    manifest = demo_classification_manifest(tmp_path_factory.mktemp("demo_cls"), size=32, per_pair=4)
    rows = binary_labels(manifest_to_datalist(read_manifest(manifest)))
    return {s: [d for d in rows if d["split"] == s] for s in ("train", "val", "test")}


def test_demo_task_is_deterministic_stratified_and_grouped(tmp_path: Path) -> None:
    first = pd.read_csv(demo_classification_manifest(tmp_path, size=32, per_pair=4))
    second = pd.read_csv(demo_classification_manifest(tmp_path, size=32, per_pair=4))
    pd.testing.assert_frame_equal(first, second)
    for split in ("train", "val", "test"):
        assert set(first.loc[first["split"] == split, "label"]) == {0, 1}, split
    assert (first.groupby("case_id")["split"].nunique() == 1).all()
    chest = first["path"].str.contains("chest")
    assert (first.loc[chest, "label"] == 1).all() and (first.loc[~chest, "label"] == 0).all()


@pytest.mark.parametrize(
    "values, positive, expected",
    [
        ([0, 1, 1], None, [0, 1, 1]),
        (["0", "1.0", True], None, [0, 1, 1]),
        (["benign", "malignant", "benign"], "malignant", [0, 1, 0]),
        ([2, 5, 5], 5, [0, 1, 1]),
    ],
)
def test_binary_labels(values: list, positive: object, expected: list[int]) -> None:
    rows = [{"image": f"{i}.png", "finding": v, "row": i} for i, v in enumerate(values)]
    out = binary_labels(rows, "finding", positive)
    assert [d["label"] for d in out] == expected
    assert all("label" not in d for d in rows)  # input left alone


@pytest.mark.parametrize(
    "values, column, positive, match",
    [
        ([0, 1, 2], "label", None, r"label column 'label' in manifest m\.csv is not binary 0/1: values seen .*2"),
        (["a", "b", "c"], "label", "a", r"'label' .* 3 distinct values seen \{'a' \(x1\), 'b'"),
        (["a", "b"], "label", "z", r"positive_value 'z' not found in label column 'label'.*'b'"),
        ([0, 1], "nodule", None, r"label column 'nodule' not found in manifest m\.csv; columns: \["),
        ([0, None, 1, ""], "label", None, r"'label' in manifest m\.csv is empty in rows \[1, 3\]"),
    ],
)
def test_binary_labels_errors(values: list, column: str, positive: object, match: str) -> None:
    rows = [{"image": f"{i}.png", "label": v, "row": i, "manifest": "m.csv"} for i, v in enumerate(values)]
    with pytest.raises(ValueError, match=match):
        binary_labels(rows, column, positive)


def test_split_datalist() -> None:
    rows = [{"image": f"{i}.png", "label": i % 2, "split": s, "manifest": "m.csv"}
            for i, s in enumerate(["train", "train", "val", "test", "test"])]
    assert [d["image"] for d in split_datalist(rows, "train")] == ["0.png", "1.png"]
    with pytest.raises(ValueError, match=r"no row of manifest m\.csv has split 'valid'; splits present: "
                                         r"\['test', 'train', 'val'\]"):
        split_datalist(rows, "valid")
    with pytest.raises(ValueError, match=r"split 'val' data \(manifest m\.csv\) needs both classes .*only \[0\]"):
        split_datalist(rows, "val")


def test_bundle_dir_and_bad_inputs_are_named(demo_task: dict[str, list[dict]], tmp_path: Path) -> None:
    assert (classify_bundle_dir() / "configs" / "linear_probe.json").is_file()
    with pytest.raises(FileNotFoundError, match=r"classify bundle not found: .*nowhere/configs/train\.json"):
        classify_bundle_dir(tmp_path / "nowhere")
    raw = [{**d, "label": "yes"} for d in demo_task["train"]]
    with pytest.raises(ValueError, match=r"training data .* int 0/1 labels under 'label'.*'yes'"):
        run_classify_bundle(raw, demo_task["val"], tmp_path / "run", epochs=1, **TINY)
    one_class = [d for d in demo_task["val"] if d["label"] == 0]
    with pytest.raises(ValueError, match=r"validation data .* needs both classes.*only \[0\]"):
        run_classify_bundle(demo_task["train"], one_class, tmp_path / "run", epochs=1, **TINY)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        run_classify_bundle(demo_task["train"], demo_task["val"], tmp_path / "run", epochs=0, **TINY)
    with pytest.raises(ValueError, match=r"override id\(s\) \['droput', 'optimiser#lr'\] not in the classify bundle "
                                         r"config \[.*train\.json'\]; top-level ids: \[.*'dropout'"):
        run_classify_bundle(demo_task["train"], demo_task["val"], tmp_path / "run", epochs=1, **TINY,
                            overrides={"droput": 0.1, "optimiser#lr": 0.1, "train#dataset#cache_rate": 0.5})


def test_transforms_shapes(demo_task: dict[str, list[dict]]) -> None:
    item = classification_transforms(32, augment=True, keep_keys=["source", "case_id"])(demo_task["train"][0])
    assert set(item) == {"image", "label", "source", "case_id"}
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0 + 1e-6
    flips = [t for t in classification_transforms(32, augment=True, flip_axis=0).transforms if isinstance(t, RandFlipd)]
    assert [f.flipper.spatial_axis for f in flips] == [0]
    with pytest.raises(ValueError, match="flip_axis must be 0 or 1"):
        classification_transforms(32, augment=True, flip_axis=2)


class ScriptedKeepBestWeights(KeepBestWeights):
    """The bundle's best-weights handler fed a fixed AUC sequence, recording the weights after every epoch."""

    sequence = [0.9, 0.4]
    snapshots: list[dict[str, torch.Tensor]] = []

    def __call__(self, engine) -> None:  # noqa: ANN001 - ignite engine
        type(self).snapshots.append({k: v.detach().clone() for k, v in self.network.state_dict().items()})
        engine.state.metrics[self.metric_name] = self.sequence[engine.state.epoch - 1]
        super().__call__(engine)


def scalars(log_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_bundle_restores_the_best_weights_not_the_final(demo_task: dict[str, list[dict]], tmp_path: Path) -> None:
    """Best epoch 1 of 2 (scripted AUCs): the returned network and model.pt hold epoch 1, model_final.pt epoch 2."""
    ScriptedKeepBestWeights.snapshots = []
    out = tmp_path / "run"
    (out / "stale").mkdir(parents=True)  # what an interrupted fold left behind is removed
    run = run_classify_bundle(
        demo_task["train"], demo_task["val"], out, epochs=2, step_size=1, seed=3, save_models=True,
        overrides={"best_weights#_target_": ScriptedKeepBestWeights}, **TINY,
    )
    best, final = ScriptedKeepBestWeights.snapshots
    assert run.best_epoch == 1 and run.best_val_auc == pytest.approx(0.9)
    state = run.network.state_dict()
    on_disk = torch.load(out / "model.pt", weights_only=True)
    for k, v in best.items():
        assert torch.equal(state[k], v) and torch.equal(on_disk[k], v), k
    final_on_disk = torch.load(out / "model_final.pt", weights_only=True)
    for k, v in final.items():
        assert torch.equal(final_on_disk[k], v), k
    assert not torch.equal(state["classifier.weight"], final["classifier.weight"])
    assert not torch.equal(best["encoder.bn1.running_mean"], final["encoder.bn1.running_mean"])  # BN stats move
    assert not run.network.training and not (out / "stale").exists()
    np.testing.assert_allclose(sorted(set(scalars(out / "logs", "lr")), reverse=True), [1e-4, 1e-5])  # StepLR(1)
    probs = predict_proba(run.network, demo_task["test"], run.preprocessing, device=run.device)
    assert probs.shape == (len(demo_task["test"]),) and ((probs >= 0) & (probs <= 1)).all()


def test_linear_probe_leaves_encoder_and_batchnorm_statistics_unchanged(
    demo_task: dict[str, list[dict]], tmp_path: Path
) -> None:
    encoder = ResNet18Encoder()
    path = save_encoder(encoder, tmp_path / "encoder.pt", method="test")
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    assert any("running_mean" in k for k in before)
    ScriptedKeepBestWeights.snapshots = []
    run = run_classify_bundle(
        demo_task["train"], demo_task["val"], tmp_path / "run", init=str(path), linear_probe=True, epochs=2,
        overrides={"best_weights#_target_": ScriptedKeepBestWeights}, **TINY,
    )
    assert run.network.freeze_encoder
    for snapshot in [*ScriptedKeepBestWeights.snapshots, run.network.state_dict()]:
        for k, v in before.items():  # weights, running_mean/var and num_batches_tracked, after every epoch
            assert torch.equal(snapshot[f"encoder.{k}"], v), k
    first, second = ScriptedKeepBestWeights.snapshots
    assert not torch.equal(first["classifier.weight"], second["classifier.weight"])  # the head trains
    assert not (tmp_path / "run" / "model.pt").exists()  # the protocol's runs write no model files


class NanLoss(torch.nn.Module):
    """Cross-entropy times NaN: a non-finite loss at the first iteration."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(pred, target) * float("nan")


def test_non_finite_loss_stops_the_fold_naming_its_files(demo_task: dict[str, list[dict]], tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"loss term 'loss' is nan at epoch 1, iteration 1 .*Files of this "
                                                 r"batch: manifest .* row \d+: "):
        run_classify_bundle(demo_task["train"], demo_task["val"], tmp_path / "run", epochs=1,
                            overrides={"loss": NanLoss()}, **TINY)


def test_errors_inside_the_bundle_are_raised_as_themselves(demo_task: dict[str, list[dict]], tmp_path: Path) -> None:
    """Not as MONAI's RuntimeError("Failed to evaluate ..."): run_cv.py prints ValueError / FileNotFoundError."""
    missing = tmp_path / "missing_encoder.pt"
    with pytest.raises(FileNotFoundError, match="missing_encoder.pt") as err:
        run_classify_bundle(demo_task["train"], demo_task["val"], tmp_path / "run", init=str(missing), epochs=1,
                            **TINY)
    assert any("while running the classify bundle" in note for note in getattr(err.value, "__notes__", []))


def test_a_damaged_init_checkpoint_surfaces_the_projects_message(demo_task: dict[str, list[dict]],
                                                                  tmp_path: Path) -> None:
    # the chain is MONAI's "Failed to evaluate" <- the project's "encoder checkpoint ... truncated" <- torch's
    # "PytorchStreamReader failed": the project's explanation, naming the file, is what comes out
    path = save_encoder(ResNet18Encoder(), tmp_path / "encoder.pt", method="modan")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated") as err:
        run_classify_bundle(demo_task["train"], demo_task["val"], tmp_path / "run", init=str(path), epochs=1, **TINY)
    assert str(path) in str(err.value) and "PytorchStreamReader" not in str(err.value).splitlines()[0]
