"""End-to-end tests of ``bundles/classify``: train (``python -m monai.bundle run``), evaluate, infer, export."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.bundle import run as bundle_run

from modan_monai.data.demo_tasks import demo_classification_manifest
from modan_monai.handlers import ExamROCAUC, KeepBestWeights
from modan_monai.networks import build_classifier, read_model_settings
from modan_monai.utils import RunLockError

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "classify"
CONFIGS = BUNDLE / "configs"
SCHEMA = BUNDLE.parent / "meta_schema.json"
TINY = {"epochs": 1, "image_size": 32, "batch_size": 8, "log_interval": 1}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("demo")
    return root, Path(demo_classification_manifest(root, size=32, per_pair=4))


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_train_evaluate_infer_and_export(
    tmp_path: Path, demo: tuple[Path, Path], bundle_cli: Callable[..., str], tensorboard_tags: Callable,
    caplog: pytest.LogCaptureFixture, run_summary_command: Callable[[Path, Path], str],
) -> None:
    root, manifest = demo
    out = tmp_path / "models"
    log = bundle_cli(
        "classify", "run", "--config_file", "configs/train.json", "--logging_file", "configs/logging.conf",
        dataset_dir=root, manifest=manifest, output_dir=out, **TINY,
    )
    assert "epoch 1/1" in log and "val_auc" in log
    resuming = [line for line in log.splitlines() if "Engine run resuming from iteration 0" in line]
    assert resuming and all("Evaluator" not in line for line in resuming)  # the trainer's line only, no validation's
    assert (out / "model.pt").is_file() and (out / "model_final.pt").is_file()
    assert {"train_loss", "val_auc", "lr"} <= set(tensorboard_tags(out / "logs")["scalars"])

    # the run ends with its summary (best validation AUC and epoch, model.pt, the next command) and summary.json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "classification" and summary["metric"] == "val_auc" and summary["best"]["epoch"] == 1
    assert summary["epochs_completed"] == summary["max_epochs"] == 1 and 0.0 <= summary["best"]["value"] <= 1.0
    assert summary["model"] == str(out / "model.pt") and summary["model_exists"] and summary["final_model_exists"]
    assert summary["tensorboard"] == str(out / "logs") and summary["summary"] == str(out / "summary.json")
    assert "classification summary (1/1 epochs)" in log and f"best val_auc:       {summary['best']['value']:.3f}" in log
    assert f"summary file:       {out / 'summary.json'}" in log and f"next:               {summary['next'][0]}" in log
    assert summary["next"] == [
        f"cd {BUNDLE} && python -m monai.bundle run --config_file \"['configs/train.json','configs/evaluate.json']\" "
        f"--logging_file configs/logging.conf --manifest {manifest} --output_dir {out}"
    ]

    # evaluate models/model.pt on the test split: the summary's next command, run as printed from another folder
    header = ["file", "p(negative)", "p(positive)"]
    evaluated = run_summary_command(out / "summary.json", tmp_path)
    metrics = dict(read_csv(out / "metrics.csv"))
    assert 0.0 <= float(metrics["test_auc"]) <= 1.0
    n_test = sum(1 for r in read_csv(manifest)[1:] if r[read_csv(manifest)[0].index("split")] == "test")
    predictions = read_csv(out / "test_predictions.csv")
    assert predictions[0] == header and len(predictions) == 1 + n_test
    # the model is built for the weights it restores, not announced as a random one; no ignite "resuming" line
    assert f"encoder built for the weights restored from {out / 'model.pt'}" in evaluated
    assert "from scratch (random)" not in evaluated and "Engine run resuming" not in evaluated

    # inference on a folder of files, then the checks MONAI Label / the model zoo run
    inferred = tmp_path / "infer"
    caplog.clear()
    with caplog.at_level("INFO"):
        bundle_run(config_file=str(CONFIGS / "inference.json"), bundle_root=str(BUNDLE), dataset_dir=str(root),
                   image_pattern="png/**/*.png", ckpt_path=str(out / "model.pt"), output_dir=str(inferred),
                   image_size=32, logging_file=False)
    assert f"encoder built for the weights restored from {out / 'model.pt'}" in caplog.text
    assert "from scratch (random)" not in caplog.text and "Engine run resuming" not in caplog.text
    header_row, *rows = read_csv(inferred / "predictions.csv")
    assert header_row == header
    assert len(rows) == len(list(root.glob("png/**/*.png"))) and rows[0][0].endswith(".png")
    assert all(abs(float(r[1]) + float(r[2]) - 1.0) < 1e-5 for r in rows)

    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.json"), bundle_root=str(BUNDLE))
    ts = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts), ckpt_file=str(out / "model.pt"),
                meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json"),
                bundle_root=str(BUNDLE), use_trace=True)
    scripted = torch.jit.load(str(ts))
    eager = build_classifier()
    eager.load_state_dict(torch.load(out / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(3, 1, 64, 64)
    torch.testing.assert_close(scripted(x), eager.eval()(x), rtol=1e-4, atol=1e-5)


def test_evaluate_takes_the_trained_settings_and_refuses_contradicting_ones(
    tmp_path: Path, demo: tuple[Path, Path]
) -> None:
    """A model trained at 32 px: evaluate.json (default 64 px) scores it at 32 px, and refuses --image_size 64."""
    root, manifest = demo
    out = tmp_path / "models"
    common = {"bundle_root": str(BUNDLE), "logging_file": False, "dataset_dir": str(root), "manifest": str(manifest),
              "output_dir": str(out)}
    bundle_run(config_file=str(CONFIGS / "train.json"), **common, **TINY)
    expected = {"task": "classification", "image_size": 32, "arch": "resnet18", "stem": "3x3",
                "class_names": ["negative", "positive"], "label_type": "binary"}
    assert read_model_settings(out / "model.pt") == expected == read_model_settings(out / "model_final.pt")
    build_classifier().load_state_dict(torch.load(out / "model.pt", weights_only=True))  # still a plain state dict

    evaluate = [str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")]
    for override, named in [({"image_size": 64}, "image_size is 64 here (config id 'image_size') but 32 in training"),
                            ({"stem": "7x7"}, "stem is '7x7' here (config id 'stem') but '3x3' in training")]:
        with pytest.raises(RuntimeError) as err:  # the parser wraps the ValueError of the initialize item
            bundle_run(config_file=evaluate, **common, **override)
        assert isinstance(err.value.__cause__, ValueError) and named in str(err.value.__cause__)
        assert str(out / "model.pt") in str(err.value.__cause__)
        assert not (out / "metrics.csv").exists()  # nothing scored
    workflow = ConfigWorkflow(config_file=evaluate, workflow_type="eval", **common)
    workflow.initialize()
    assert workflow.parser.get_parsed_content("image_size") == 32  # no override: the trained size
    resize = [t for t in workflow.parser.get_parsed_content("validate#preprocessing").transforms
              if type(t).__name__ == "Resized"]
    assert [tuple(t.resizer.spatial_size) for t in resize] == [(32, 32)]
    workflow.run()
    assert 0.0 <= float(dict(read_csv(out / "metrics.csv"))["test_auc"]) <= 1.0


@pytest.mark.parametrize(
    "files, workflow_type",
    [(["train.json"], "train"), (["train.json", "linear_probe.json"], "train"), (["inference.json"], "infer")],
)
def test_check_properties(tmp_path: Path, demo: tuple[Path, Path], files: list[str], workflow_type: str) -> None:
    root, manifest = demo
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / f) for f in files],
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=str(BUNDLE),
        dataset_dir=str(root),
        output_dir=str(tmp_path),
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_linear_probe_override_freezes_encoder(tmp_path: Path, demo: tuple[Path, Path]) -> None:
    root, manifest = demo
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "linear_probe.json")], workflow_type="train",
        bundle_root=str(BUNDLE), dataset_dir=str(root), manifest=str(manifest), output_dir=str(tmp_path),
    )
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network")
    optimizer = workflow.parser.get_parsed_content("optimizer")
    assert network.freeze_encoder and not network.train().encoder.training
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in network.classifier.parameters()}


@pytest.mark.parametrize(
    "override, match",
    [({"label_column": "nodule"}, "label column 'nodule' not found"),
     ({"label_column": "anatomy"}, "label column 'anatomy' .* is empty in rows")],
)
def test_bad_label_column_is_named(tmp_path: Path, demo: tuple[Path, Path], override: dict, match: str) -> None:
    root, manifest = demo
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
        dataset_dir=str(root), manifest=str(manifest), output_dir=str(tmp_path), **override,
    )
    with pytest.raises(RuntimeError) as err:  # initialize checks the datalists; the parser wraps the ValueError
        workflow.initialize()
    assert isinstance(err.value.__cause__, ValueError) and re.search(match, str(err.value.__cause__))


def test_verify_metadata() -> None:
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))


@pytest.mark.parametrize("level, aggregation", [("image", "mean"), ("exam", "max")])
def test_val_level_sets_the_validation_metric(tmp_path: Path, demo: tuple[Path, Path], level: str,
                                              aggregation: str) -> None:
    root, manifest = demo
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
        dataset_dir=str(root), manifest=str(manifest), output_dir=str(tmp_path), val_level=level,
        exam_aggregation=aggregation,
    )
    workflow.initialize()
    metric = workflow.parser.get_parsed_content("validate#key_metric")["val_auc"]
    assert isinstance(metric, ExamROCAUC) and (metric.level, metric.aggregation) == (level, aggregation)
    keep = workflow.parser.get_parsed_content("best_weights")
    assert isinstance(keep, KeepBestWeights) and keep.network is workflow.parser.get_parsed_content("network")
    assert keep.save_path == tmp_path / "model.pt"
    assert keep in workflow.parser.get_parsed_content("validate#handlers")


@pytest.mark.parametrize(
    "one_class_val, override, item, match",
    [(False, {"val_level": "slice"}, "validate#key_metric", r"level must be one of \('exam', 'image'\), got 'slice'"),
     (True, {}, None, r"output_dir .*: validation data \(split 'val', manifest .*one_class_val\.csv\) holds a "
                      r"single class in its \d+ rows: \{0: \d+\} .*config id\(s\) 'manifest', 'label_column'")],
)
def test_bad_settings_are_named(tmp_path: Path, demo: tuple[Path, Path], one_class_val: bool, override: dict,
                                item: str | None, match: str) -> None:
    root, manifest = demo
    if one_class_val:  # the positive validation cases moved to the test split: refused before training
        frame = pd.read_csv(manifest)
        frame.loc[(frame["split"] == "val") & (frame["label"] == 1), "split"] = "test"
        manifest = root / "one_class_val.csv"  # beside the original: its relative paths still resolve
        frame.to_csv(manifest, index=False)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
        dataset_dir=str(root), manifest=str(manifest), output_dir=str(tmp_path), **override,
    )
    with pytest.raises(RuntimeError) as err:  # the config parser wraps the ValueError
        workflow.initialize()
        workflow.parser.get_parsed_content(item)
    assert isinstance(err.value.__cause__, ValueError) and re.search(match, str(err.value.__cause__))
    assert not (tmp_path / "logs").exists()  # nothing written


def test_second_run_into_one_output_dir_is_refused(tmp_path: Path, demo: tuple[Path, Path]) -> None:
    root, manifest = demo
    holder = subprocess.Popen(  # another run holding the folder (its lock taken, as the bundle's initialize does)
        [sys.executable, "-c", "import sys, time; from modan_monai.utils import RunLock; RunLock(sys.argv[1])"
         ".acquire(); print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=BUNDLE.parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        workflow = ConfigWorkflow(
            config_file=str(CONFIGS / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
            dataset_dir=str(root), manifest=str(manifest), output_dir=str(tmp_path),
        )
        with pytest.raises(RuntimeError) as err:
            workflow.initialize()
    finally:
        holder.kill()
        holder.wait()
    cause = err.value.__cause__
    assert isinstance(cause, RunLockError)
    assert f"output_dir {tmp_path} is in use by another run: pid {holder.pid}" in str(cause)
    assert not (tmp_path / "logs").exists()
