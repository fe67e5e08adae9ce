"""The pretraining bundle's k-NN monitor and run summary, run in process on a tiny demo corpus (1 epoch, then resumed)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from monai.bundle import ConfigWorkflow

from modan_monai.data import ensure_demo_corpus

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "pretrain"
TINY = {"image_size": 32, "batch_size": 8, "log_interval": 100, "knn_interval": 1}


def run_bundle(demo: Path, out: Path, **overrides: object) -> ConfigWorkflow:
    flow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        bundle_root=str(BUNDLE),
        dataset_dir=str(demo),
        manifest=str(demo / "manifest.csv"),
        output_dir=str(out),
        **{**TINY, **overrides},
    )
    flow.initialize()
    flow.run()
    flow.finalize()
    return flow


def test_tiny_run_prints_summary_writes_json_and_resume_keeps_epoch_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, load_script: Callable[[str], ModuleType]
) -> None:
    demo = tmp_path / "demo"
    ensure_demo_corpus(demo, size=32, per_pair=4)
    out = tmp_path / "run"
    with caplog.at_level("INFO"):
        run_bundle(demo, out, epochs=1)
    log = caplog.text
    assert "k-NN accuracy epoch 0:" in log and "k-NN accuracy epoch 1:" in log and "'val' images" in log
    assert "pretraining summary (modan_mulsupcon, 1/1 epochs)" in log
    assert "loss (epoch mean):" in log and "k-NN accuracy:" in log
    assert f"encoder:            {out.absolute() / 'encoder.pt'}" in log
    assert "--init " + str(out.absolute() / "encoder.pt") + " --image_size 32" in log
    assert f"summary file:       {out.absolute() / 'summary.json'}" in log
    # the next commands run as printed from any folder: absolute paths to the classify bundle and run_cv.py
    next_commands = json.loads((out / "summary.json").read_text())["next"]
    assert next_commands[0].startswith(f"cd {BUNDLE.parent / 'classify'} && python -m monai.bundle run ")
    assert next_commands[1].startswith(f"python {BUNDLE.parents[1] / 'scripts' / 'run_cv.py'} --manifest ")
    assert all(Path(c.split()[1]).exists() for c in next_commands)
    # on the demo corpus run_cv's command names the demo's downstream task, and runs as printed (small settings added)
    words = shlex.split(next_commands[1].replace("{encoder}", str(out.absolute() / "encoder.pt")))
    assert words[words.index("--manifest") + 1] == str(demo.absolute() / "classification_chest.csv")
    assert load_script("run_cv").main(words[2:] + ["--epochs", "1", "--folds", "2", "--repeats", "1", "--modes",
                                                   "linear_probe", "--batch-size", "8"]) == 0
    assert (out / "run_cv" / "results.csv").is_file()
    first = json.loads((out / "summary.json").read_text())
    assert first["encoder_exists"] and first["loss"]["first"]["epoch"] == 1
    assert sorted(first["knn"]["per_epoch"]) == ["0", "1"] and first["knn"]["split"] == "val"
    assert "linear-probe accuracy epoch 0:" in log and "linear probe:       " in log
    assert sorted(first["linear_probe"]["per_epoch"]) == ["0", "1"] and first["linear_probe"]["split"] == "val"
    assert first["linear_probe"]["first"]["epoch"] == 0 and 0.0 <= first["linear_probe"]["last"]["accuracy"] <= 1.0
    assert first["terms"] == {}  # ModAn-MulSupCon's loss has no named terms besides the total

    caplog.clear()
    with caplog.at_level("INFO"):
        run_bundle(demo, out, epochs=2)
    log = caplog.text
    assert "resuming from" in log
    assert "k-NN accuracy epoch 0:" not in log and "k-NN accuracy epoch 2:" in log  # epoch 0 came from the checkpoint
    second = json.loads((out / "summary.json").read_text())
    assert second["knn"]["per_epoch"]["0"] == first["knn"]["per_epoch"]["0"]
    assert second["linear_probe"]["per_epoch"]["0"] == first["linear_probe"]["per_epoch"]["0"]
    assert second["loss"]["first"] == first["loss"]["first"] and second["loss"]["last"]["epoch"] == 2
    assert "pretraining summary (modan_mulsupcon, 2/2 epochs)" in log

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[int]] = {"knn/accuracy": [], "linear_probe/accuracy": []}
    for events in sorted(out.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag, steps in scalars.items():
            if tag in acc.Tags()["scalars"]:
                steps += [e.step for e in acc.Scalars(tag)]
    assert sorted(scalars["knn/accuracy"]) == [0, 1, 2] and sorted(scalars["linear_probe/accuracy"]) == [0, 1, 2]


def test_missing_held_out_split_names_the_config_id(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    ensure_demo_corpus(demo, size=32, per_pair=4)
    with pytest.raises(Exception) as err:
        run_bundle(demo, tmp_path / "run", epochs=1, knn_split="holdout")
    message = f"{err.value} {err.value.__cause__}"
    # refused in initialize by modan_monai.engines.check_datalist, before the k-NN monitor is built
    assert "k-NN query data (split 'holdout'" in message and "has no rows" in message
    assert "'knn_split'" in message and "knn_interval" in message


def test_monitors_read_a_labelled_manifest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """monitor_manifest / monitor_label: the monitors judge a downstream task's labels (chest vs not) instead."""
    from modan_monai.data import demo_classification_manifest, load_datalist

    demo = tmp_path / "demo"
    ensure_demo_corpus(demo, size=32, per_pair=4)
    labelled = demo_classification_manifest(demo, size=32, per_pair=4)
    out = tmp_path / "run"
    with caplog.at_level("INFO"):
        run_bundle(demo, out, epochs=1, monitor_manifest=labelled, monitor_label="label")
    queries = [int(r["label"]) for r in load_datalist(labelled) if r["split"] == "val"]
    summary = json.loads((out / "summary.json").read_text())
    majority = max(queries.count(0), queries.count(1)) / len(queries)
    assert summary["knn"]["majority_rate"] == pytest.approx(majority)  # two classes, not modality x anatomy
    assert sorted(summary["linear_probe"]["per_epoch"]) == ["0", "1"]
    assert f"{len(queries)} 'val' images" in caplog.text


def test_bad_monitor_manifest_names_file_column_and_split(tmp_path: Path) -> None:
    from modan_monai.data import demo_classification_manifest

    demo = tmp_path / "demo"
    ensure_demo_corpus(demo, size=32, per_pair=4)
    labelled = demo_classification_manifest(demo, size=32, per_pair=4)
    with pytest.raises(Exception) as err:
        run_bundle(demo, tmp_path / "run", epochs=1, monitor_manifest=labelled, monitor_label="tumour")
    message = f"{err.value} {err.value.__cause__}"
    assert f"monitor manifest {labelled}" in message and "no label column 'tumour'" in message
    assert "'monitor_label'" in message
    with pytest.raises(Exception) as err:  # every image of the task's manifest has dataset 'demo_chest'
        run_bundle(demo, tmp_path / "run", epochs=1, monitor_manifest=labelled, monitor_label="dataset")
    message = f"{err.value} {err.value.__cause__}"
    assert f"k-NN query data (split 'val', manifest {labelled})" in message and "a single class" in message
    assert "(label 'dataset')" in message and "'monitor_manifest', 'monitor_label'" in message
    assert not (tmp_path / "run" / "summary.json").exists()
