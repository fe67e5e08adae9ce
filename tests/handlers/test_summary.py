"""The end-of-run summaries: pretraining (epoch-mean losses, k-NN first -> last), training (best validation epoch),
paths, next commands (:func:`bundle_run_command`), resume."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator

from modan_monai.handlers import KeepBestWeights, KNNMonitor, PretrainingSummary, TrainingSummary, bundle_run_command
from modan_monai.handlers import datalist_manifest


class FakeMonitor(KNNMonitor):
    """A monitor with a fixed history (no data, no encoder)."""

    def __init__(self, history: dict[int, float]) -> None:  # noqa: D107 - test double
        self.history = dict(history)
        self.query_split, self.bank_splits, self.k, self.temperature = "val", ["train"], 20, 0.07
        self.majority_rate = 0.25
        self.linear_probe, self.linear_probe_c, self.linear_probe_history = True, 1.0, {}


def losses_engine(losses: list[list[float]]) -> Engine:
    """An engine whose output["loss"] walks through ``losses`` (one list per epoch)."""
    flat = [v for epoch in losses for v in epoch]
    return Engine(lambda e, b: {"loss": torch.tensor(flat[e.state.iteration - 1]), "loss_terms": {}})


def test_summary_contents_json_and_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "encoder.pt").write_bytes(b"")
    summary = PretrainingSummary(
        tmp_path, knn_monitor=FakeMonitor({0: 0.4, 2: 0.7, 3: 0.9}), method="simclr",
        next_commands=["classify --init {encoder}", "look in {output_dir}"],
    )
    engine = losses_engine([[3.0, 2.0], [1.5, 1.5], [1.0, 0.5]])
    summary.attach(engine)
    with caplog.at_level("INFO", logger="modan_monai.summary"):
        engine.run([0, 1], max_epochs=3)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["method"] == "simclr" and data["epochs_completed"] == 3 and data["max_epochs"] == 3
    assert data["loss"]["first"] == {"epoch": 1, "value": 2.5} and data["loss"]["last"] == {"epoch": 3, "value": 0.75}
    assert data["loss"]["per_epoch"] == {"1": 2.5, "2": 1.5, "3": 0.75}
    knn = data["knn"]
    assert knn["first"] == {"epoch": 0, "accuracy": 0.4} and knn["last"] == {"epoch": 3, "accuracy": 0.9}
    assert knn["split"] == "val" and knn["k"] == 20 and knn["majority_rate"] == 0.25
    assert data["encoder"] == str(tmp_path.absolute() / "encoder.pt") and data["encoder_exists"]
    assert data["tensorboard"] == str(tmp_path.absolute())
    assert data["next"] == [f"classify --init {tmp_path.absolute() / 'encoder.pt'}", f"look in {tmp_path.absolute()}"]
    assert data["summary"] == str(tmp_path.absolute() / "summary.json")
    text = caplog.text
    assert f"summary file:       {tmp_path.absolute() / 'summary.json'}" in text
    assert "pretraining summary (simclr, 3/3 epochs)" in text
    assert "2.500 (epoch 1) -> 0.750 (epoch 3)" in text and "0.400 (epoch 0) -> 0.900 (epoch 3)" in text
    assert f"tensorboard --logdir {tmp_path.absolute()}" in text and "classify --init" in text


def test_without_monitor_and_missing_encoder(tmp_path: Path) -> None:
    summary = PretrainingSummary(tmp_path / "run", encoder_path=tmp_path / "elsewhere.pt")
    data = summary.summary(epochs_completed=0, max_epochs=2)
    assert data["knn"] is None and data["loss"]["first"] is None and not data["encoder_exists"]
    text = PretrainingSummary.format(data)
    assert "no epoch completed" in text and "(not written)" in text and "k-NN" not in text
    assert summary.write(data) == tmp_path / "run" / "summary.json"


def test_state_dict_round_trip_keeps_the_first_epoch(tmp_path: Path) -> None:
    first = PretrainingSummary(tmp_path)
    engine = losses_engine([[4.0], [2.0]])
    first.attach(engine)
    engine.run([0], max_epochs=2)
    resumed = PretrainingSummary(tmp_path)
    resumed.load_state_dict(first.state_dict())
    assert resumed.loss_history == {1: 4.0, 2: 2.0}
    later = losses_engine([[4.0], [2.0], [1.0]])
    later.load_state_dict({"epoch": 2, "max_epochs": 3, "epoch_length": 1})
    resumed.attach(later)
    later.run([0], max_epochs=3)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["loss"]["first"] == {"epoch": 1, "value": 4.0} and data["loss"]["last"] == {"epoch": 3, "value": 1.0}


def test_summary_is_written_after_other_completed_handlers(tmp_path: Path) -> None:
    """The encoder saver may be attached after the summary: its final write still comes first."""
    summary = PretrainingSummary(tmp_path)
    engine = losses_engine([[1.0]])
    summary.attach(engine)
    engine.add_event_handler(Events.COMPLETED, lambda e: (tmp_path / "encoder.pt").write_bytes(b"x"))
    engine.run([0], max_epochs=1)
    assert json.loads((tmp_path / "summary.json").read_text())["encoder_exists"]


def terms_engine(terms: list[list[dict[str, float]]]) -> Engine:
    """An engine whose output carries named loss terms (one list of per-iteration dicts per epoch)."""
    flat = [t for epoch in terms for t in epoch]

    def step(e: Engine, b: object) -> dict:
        named = {k: torch.tensor(v) for k, v in flat[e.state.iteration - 1].items()}
        return {"loss": named["loss"], "loss_terms": named}

    return Engine(step)


def test_terms_first_and_last_epoch_means_with_ln_k(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Adam-v2's terms: each term's epoch mean in the first and the last epoch, ln K beside L_loc; the total is
    ``loss``, not a term."""
    epochs = [
        [{"loss": 9.0, "loc": 8.0, "comp": 0.6, "ln_K": 8.3}, {"loss": 7.0, "loc": 6.0, "comp": 0.4, "ln_K": 8.3}],
        [{"loss": 6.0, "loc": 5.0, "comp": 0.3, "ln_K": 8.3}, {"loss": 4.0, "loc": 3.0, "comp": 0.1, "ln_K": 8.3}],
        [{"loss": 3.0, "loc": 2.0, "comp": 0.2, "ln_K": 8.3}, {"loss": 3.0, "loc": 2.0, "comp": 0.0, "ln_K": 8.3}],
    ]
    summary = PretrainingSummary(tmp_path, method="adamv2")
    engine = terms_engine(epochs)
    summary.attach(engine)
    with caplog.at_level("INFO", logger="modan_monai.summary"):
        engine.run([0, 1], max_epochs=3)
    terms = json.loads((tmp_path / "summary.json").read_text())["terms"]
    assert sorted(terms) == ["comp", "ln_K", "loc"]
    assert terms["loc"] == {"first": {"epoch": 1, "value": 7.0}, "last": {"epoch": 3, "value": 2.0}}
    assert terms["comp"]["first"]["value"] == pytest.approx(0.5)
    assert terms["comp"]["last"]["value"] == pytest.approx(0.1)
    assert terms["ln_K"]["first"]["value"] == pytest.approx(8.3) and terms["ln_K"]["last"]["epoch"] == 3
    assert "terms (epoch mean): comp 0.500 (epoch 1) -> 0.100 (epoch 3)" in caplog.text
    assert "loc 7.000 (epoch 1) -> 2.000 (epoch 3)" in caplog.text and "ln_K 8.300 (epoch 1)" in caplog.text

    resumed = PretrainingSummary(tmp_path)  # a resumed run keeps the terms of epoch 1
    resumed.load_state_dict(summary.state_dict())
    later = terms_engine(epochs + [[{"loss": 1.0, "loc": 1.0, "comp": 0.0, "ln_K": 8.3}] * 2])
    later.load_state_dict({"epoch": 3, "max_epochs": 4, "epoch_length": 2})
    resumed.attach(later)
    later.run([0, 1], max_epochs=4)
    terms = json.loads((tmp_path / "summary.json").read_text())["terms"]
    assert terms["loc"] == {"first": {"epoch": 1, "value": 7.0}, "last": {"epoch": 4, "value": 1.0}}


def test_linear_probe_first_and_last_like_knn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monitor = FakeMonitor({0: 0.4, 2: 0.7})
    monitor.linear_probe_history = {0: 0.5, 2: 0.875}
    summary = PretrainingSummary(tmp_path, knn_monitor=monitor)
    engine = losses_engine([[1.0], [0.5]])
    summary.attach(engine)
    with caplog.at_level("INFO", logger="modan_monai.summary"):
        engine.run([0], max_epochs=2)
    data = json.loads((tmp_path / "summary.json").read_text())
    probe = data["linear_probe"]
    assert probe["first"] == {"epoch": 0, "accuracy": 0.5} and probe["last"] == {"epoch": 2, "accuracy": 0.875}
    assert probe["per_epoch"] == {"0": 0.5, "2": 0.875} and probe["split"] == "val" and probe["c"] == 1.0
    assert data["terms"] == {}  # a loss without named terms
    assert "linear probe:       0.500 (epoch 0) -> 0.875 (epoch 2)  ['val', logistic regression]" in caplog.text
    monitor.linear_probe = False
    monitor.linear_probe_history = {}
    assert summary.summary()["linear_probe"] is None
    assert PretrainingSummary(tmp_path).summary()["linear_probe"] is None


# --- TrainingSummary (classify / segment bundles) and the command lines it prints ---------------------------------


class ScriptedMetric(Metric):
    """A key metric whose evaluations give ``values`` in turn."""

    def __init__(self, values: list[float]) -> None:  # noqa: D107 - test double
        self.values = list(values)
        super().__init__()

    def reset(self) -> None:
        pass

    def update(self, output: object) -> None:
        pass

    def compute(self) -> float:
        return self.values.pop(0)


def evaluator(values: list[float], handlers: list | None = None) -> SupervisedEvaluator:
    """A MONAI evaluator (one batch) whose key metric ``val_auc`` takes ``values`` in turn."""
    batch = {"image": torch.zeros(1, 2), "label": torch.zeros(1, 1)}
    return SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=[batch], network=torch.nn.Linear(2, 1),
        key_val_metric={"val_auc": ScriptedMetric(values)}, val_handlers=handlers,
    )


def validated_trainer(validator: SupervisedEvaluator) -> Engine:
    """A trainer that validates after each epoch, as the bundles' ValidationHandler does."""
    trainer = Engine(lambda e, b: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run(e.state.epoch))
    return trainer


def test_training_summary_reads_the_evaluators_best_epoch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "models").mkdir()
    validator = evaluator([0.6, 0.9, 0.7])
    summary = TrainingSummary(
        tmp_path / "models", validator, final_model_path=tmp_path / "models" / "model_final.pt",
        tensorboard_dir=tmp_path / "models" / "logs", task="classification",
        next_commands=["evaluate --ckpt {model}", "ls {output_dir}"],
    )
    trainer = validated_trainer(validator)
    summary.attach(trainer)
    # the weights are written by handlers that may come after the summary: they still come first
    trainer.add_event_handler(Events.COMPLETED, lambda e: (tmp_path / "models" / "model.pt").write_bytes(b"x"))
    with caplog.at_level("INFO", logger="modan_monai.summary"):
        trainer.run([0], max_epochs=3)
    models = tmp_path.absolute() / "models"
    data = json.loads((models / "summary.json").read_text())
    assert data["task"] == "classification" and data["metric"] == "val_auc"
    assert data["epochs_completed"] == 3 and data["max_epochs"] == 3
    assert data["best"] == {"epoch": 2, "value": 0.9} and data["last"] == {"epoch": 3, "value": 0.7}
    assert data["model"] == str(models / "model.pt") and data["model_exists"]
    assert data["final_model"] == str(models / "model_final.pt") and data["final_model_exists"] is False
    assert data["tensorboard"] == str(models / "logs") and data["summary"] == str(models / "summary.json")
    assert data["next"] == [f"evaluate --ckpt {models / 'model.pt'}", f"ls {models}"]
    text = caplog.text
    assert "classification summary (3/3 epochs)" in text
    assert "  best val_auc:       0.900 (epoch 2)  [last 0.700, epoch 3]" in text
    assert f"  model:              {models / 'model.pt'}  (weights of the best val_auc epoch)" in text
    assert f"  final model:        {models / 'model_final.pt'}  (not written)" in text
    assert f"  TensorBoard:        tensorboard --logdir {models / 'logs'}" in text
    assert f"  summary file:       {models / 'summary.json'}" in text
    assert f"  next:               evaluate --ckpt {models / 'model.pt'}\n                      ls {models}" in text


def test_training_summary_after_a_resume_keeps_the_best_epoch_before_it(tmp_path: Path) -> None:
    """A run resumed after epoch 2 (best 0.9 at epoch 2, kept by KeepBestWeights in the checkpoint) that scores
    0.7 at epoch 3: the evaluator of the new process reports the run's best, not the best since the resume."""
    net = torch.nn.Linear(2, 1)
    first = KeepBestWeights(net, metric_name="val_auc")
    validator = evaluator([0.6, 0.9], handlers=[first])
    trainer = validated_trainer(validator)
    TrainingSummary(tmp_path, validator).attach(trainer)
    trainer.run([0], max_epochs=2)
    checkpoint = {"trainer": trainer.state_dict(), "best_weights": first.state_dict()}

    kept = KeepBestWeights(net, metric_name="val_auc")
    resumed_validator = evaluator([0.7], handlers=[kept])  # a new process: a fresh evaluator
    resumed = validated_trainer(resumed_validator)
    TrainingSummary(tmp_path, resumed_validator).attach(resumed)
    resumed.load_state_dict({**checkpoint["trainer"], "max_epochs": 3})
    kept.load_state_dict(checkpoint["best_weights"])  # what ResumeFromCheckpoint does at Events.STARTED
    resumed.run([0], max_epochs=3)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["best"] == {"epoch": 2, "value": 0.9} and data["last"] == {"epoch": 3, "value": 0.7}
    assert data["epochs_completed"] == 3 and kept.best_epoch == 2


def test_training_summary_without_validation_and_on_other_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    validator = evaluator([])
    summary = TrainingSummary(tmp_path / "run", validator, model_path=tmp_path / "elsewhere.pt", task="segmentation")
    data = summary.summary(epochs_completed=0, max_epochs=2)
    assert data["best"] is None and data["last"] is None and data["metric"] == "val_auc"
    assert data["model"] == str(tmp_path.absolute() / "elsewhere.pt") and not data["model_exists"]
    assert data["final_model"] is None and data["next"] == []
    text = TrainingSummary.format(data)
    assert text.startswith("segmentation summary (0/2 epochs)") and "best val_auc:       no validation ran" in text
    assert "(not written)" in text and "final model" not in text and "next:" not in text
    assert TrainingSummary.rank_zero_only  # rank_zero_handlers drops it on ranks > 0 ...
    monkeypatch.setattr("modan_monai.handlers.summary.is_rank_zero", lambda: False)
    trainer = Engine(lambda e, b: None)
    summary.attach(trainer)
    trainer.run([0], max_epochs=1)
    assert not (tmp_path / "run" / "summary.json").exists()  # ... and, attached there anyway, it writes nothing


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle folder with two config files: train.json and an evaluate.json that turns ``task`` into an
    expression."""
    configs = tmp_path / "my bundle" / "configs"
    configs.mkdir(parents=True)
    train = {"output_dir": "$os.path.join(@bundle_root, 'models')", "manifest": "$make()", "label_column": "label",
             "task": "binary", "positive_value": None, "ct_window": [-1000.0, 1000.0], "ordinal": False, "epochs": 10}
    (configs / "train.json").write_text(json.dumps(train))
    (configs / "evaluate.json").write_text(json.dumps({"task": "$read('task')"}))
    return configs.parent


def parsed_ids(command: str) -> dict[str, object]:
    """The ``--id value`` pairs of a ``monai.bundle run`` command as python-fire (its argument parser) reads them."""
    from fire.parser import DefaultParseValue

    words = shlex.split(command.split(" && ", 1)[1])
    assert words[:4] == ["python", "-m", "monai.bundle", "run"]
    pairs = dict(zip(words[4::2], words[5::2]))
    return {k[2:]: v if k in ("--config_file", "--logging_file") else DefaultParseValue(v) for k, v in pairs.items()}


def test_bundle_run_command_reads_back_the_values_and_leaves_out_defaults(bundle: Path) -> None:
    ids = {
        "manifest": "/data/my manifests/x.csv",  # a space: quoted
        "output_dir": "/runs/a'b",  # a quote
        "label_column": "1",  # text that reads as a number: quoted as text
        "task": "binary",  # evaluate.json's default is an expression: kept
        "positive_value": "True",
        "ct_window": (-1000.0, 1000.0),  # the default (a tuple reads as the JSON list): left out
        "ordinal": True,
        "epochs": 10,  # the default: left out
        "structures": ["heart", "left_lung"],
        "pos_weight": None,  # null: '$None'
        "seed": 3,
    }
    command = bundle_run_command(bundle, ["configs/train.json", "configs/evaluate.json"], ids)
    cd, _ = command.split(" && ", 1)
    assert shlex.split(cd) == ["cd", str(bundle.absolute())]
    read = parsed_ids(command)
    assert read.pop("config_file") == "['configs/train.json','configs/evaluate.json']"
    assert read.pop("logging_file") == "configs/logging.conf"
    assert read.pop("pos_weight") == "$None"  # monai.bundle evaluates '$None' to null
    expected = {k: v for k, v in ids.items() if k not in ("ct_window", "epochs", "pos_weight")}
    assert read == expected and isinstance(read["label_column"], str)
    assert "--config_file \"['configs/train.json','configs/evaluate.json']\"" in command  # as the docs write it
    assert "--structures \"['heart', 'left_lung']\"" in command and "--seed 3" in command

    single = bundle_run_command(bundle, "configs/train.json", {"task": "binary", "epochs": 2}, logging_file=None)
    assert single.endswith(" && python -m monai.bundle run --config_file configs/train.json --epochs 2")


def test_bundle_run_command_errors_name_the_file_and_the_id(bundle: Path) -> None:
    with pytest.raises(ValueError, match=r"config file 'configs/evaluate\.yaml' not found"):
        bundle_run_command(bundle, ["configs/train.json", "configs/evaluate.yaml"])
    with pytest.raises(ValueError, match=r"config id 'learning_rate': nan cannot be given on a command line"):
        bundle_run_command(bundle, "configs/train.json", {"learning_rate": float("nan")})


def test_datalist_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rows = [{"image": "a.png", "manifest": "m.csv"}, {"image": "b.png", "manifest": "m.csv"}]
    assert datalist_manifest(rows) == str(tmp_path / "m.csv")
    assert datalist_manifest(rows + [{"image": "c.png", "manifest": "other.csv"}]) is None
    assert datalist_manifest([{"image": "a.png"}]) is None and datalist_manifest([]) is None


def test_run_cv_command_reads_the_monitor_manifest_or_the_demo_task(tmp_path: Path) -> None:
    import pandas as pd

    from modan_monai.data import ensure_demo_corpus
    from modan_monai.handlers import run_cv_command

    grades = tmp_path / "knee.csv"
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "grade": ["KL0", "KL1", "KL2"]}).to_csv(grades, index=False)
    binary = tmp_path / "busi.csv"
    pd.DataFrame({"path": ["a.png", "b.png"], "malignant": [0, 1]}).to_csv(binary, index=False)
    script, out = tmp_path / "run_cv.py", tmp_path / "cv"

    (command,) = run_cv_command(script, "simclr", 32, out, grades, "grade", tmp_path / "own.csv")
    words = shlex.split(command.replace("{encoder}", "/enc.pt"))
    assert words[:2] == ["python", str(script)] and words[words.index("--task") + 1] == "multiclass"
    assert words[words.index("--manifest") + 1] == str(grades) and "simclr=/enc.pt" in words
    assert words[words.index("--out") + 1] == str(out)
    (command,) = run_cv_command(script, "simclr", 32, out, binary, "malignant")
    assert "--task" not in command and "--label-column malignant" in command
    # no monitor manifest: the demo corpus's downstream task, written with the corpus's own settings
    demo = tmp_path / "demo"
    manifest = ensure_demo_corpus(demo, size=32, per_pair=4)
    stamp = (demo / "VERSION").read_text()
    (command,) = run_cv_command(script, "modan_mulsupcon", 32, out, manifest=manifest)
    assert f"--manifest {demo / 'classification_chest.csv'} --label-column label " in command
    assert (demo / "VERSION").read_text() == stamp  # the corpus was not rewritten with other settings
    # a user's own manifest and no labelled one: no command to print
    assert run_cv_command(script, "simclr", 32, out, manifest=binary) == []
