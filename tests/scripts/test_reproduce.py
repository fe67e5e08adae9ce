"""scripts/reproduce.py: the --quick evidence run on ../shared/datasets, its resume and its refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

# two methods keep the module near 2 minutes on two busy cores: SimCLR (the generic recipe) and Adam-v2 (its own
# level schedule); the other methods differ from SimCLR only in their config files (reproduce.METHODS)
METHODS = ["simclr", "adamv2"]
NUMERIC = ["BUSI linear-probe AUC", "BUSI fine-tune AUC", "JSRT few-shot Dice", "landmark NC acc",
           "composability matched-mismatched", "interpolation gain"]


@pytest.fixture(scope="module")
def reproduce(load_script):
    return load_script("reproduce")


@pytest.fixture(scope="module")
def quick_run(reproduce, shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("evidence")
    argv = ["--shared", str(shared_datasets), "--out", str(out), "--quick", "--methods", *METHODS]
    assert reproduce.main(argv) == 0
    return out, argv


def test_quick_run_writes_every_file_row_and_column(quick_run):
    out, _ = quick_run
    for name in ("table.md", "table.csv", "results.json", "stages.csv"):
        assert (out / name).is_file(), name
    text = (out / "table.md").read_text()
    assert "NOT evidence" in text.splitlines()[0]
    for label in ("scratch", "SimCLR", "Adam-v2"):
        assert f"| {label} |" in text
    table = pd.read_csv(out / "table.csv").set_index("init")
    assert list(table.index) == ["scratch", *METHODS]
    for column in NUMERIC:
        assert table[column].map(math.isfinite).all(), column
    for method in METHODS:
        for key in ("corpus k-NN epoch 0", "corpus k-NN last", "corpus probe epoch 0", "corpus probe last"):
            assert 0.0 <= table.loc[method, key] <= 1.0, (method, key)
        assert table.loc[method, "BUSI fine-tune AUC pairs"] == 2  # 1 repeat x 2 folds, paired with scratch
        assert math.isfinite(table.loc[method, "BUSI fine-tune AUC p"])
        low, high = json.loads(table.loc[method, "landmark NC acc ci"])  # 95 % bootstrap interval
        assert math.isfinite(low) and math.isfinite(high) and low <= high
    stages = pd.read_csv(out / "stages.csv")
    assert list(stages["stage"]) == ["manifests", "pretrain_simclr", "pretrain_adamv2", "busi", "jsrt", "zero_shot"]
    assert (stages["seconds"] > 0).all() and (stages["status"] == "ran").all()
    for stage in stages["stage"]:
        assert (out / stage / "done.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert set(results["rows"]) == {"scratch", *METHODS}


def test_rerun_skips_done_stages(reproduce, quick_run, capsys):
    out, argv = quick_run
    before = (out / "table.md").read_text()
    assert reproduce.main(argv) == 0
    printed = capsys.readouterr().out
    stages = pd.read_csv(out / "stages.csv")
    assert (stages["status"] == "skipped").all()
    assert printed.count("done with the same settings, skipped") == len(stages)
    assert (out / "table.md").read_text() == before


def test_changed_setting_is_refused_naming_the_stage(reproduce, quick_run, capsys):
    out, argv = quick_run
    assert reproduce.main([*argv, "--epochs", "2"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(out / "pretrain_simclr") in last and "epochs: 1 -> 2" in last and "--force-stage" in last
    assert json.loads((out / "pretrain_simclr" / "done.json").read_text())["settings"]["epochs"] == 1


def test_unknown_method_and_missing_shared_are_refused(reproduce, tmp_path, capsys):
    assert reproduce.main(["--out", str(tmp_path / "a"), "--methods", "simclr", "byol"]) == 1
    assert "unknown method 'byol'" in capsys.readouterr().err.strip().splitlines()[-1]
    missing = tmp_path / "no_shared"
    assert reproduce.main(["--shared", str(missing), "--out", str(tmp_path / "b")]) == 1
    assert str(missing) in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_force_stage_redoes_the_stages_that_use_it(reproduce):
    stages = [("manifests", {}, []), ("pretrain_simclr", {}, ["manifests"]), ("pretrain_adamv2", {}, ["manifests"]),
              ("busi", {}, ["manifests", "pretrain_simclr", "pretrain_adamv2"])]
    assert reproduce.forced_closure(stages, ["pretrain_simclr"]) == {"pretrain_simclr", "busi"}
    with pytest.raises(reproduce.ReproduceError, match="no such stage"):
        reproduce.forced_closure(stages, ["pretrain_byol"])


def test_adamv2_level_schedule_spends_the_shared_epochs(reproduce):
    for epochs in (1, 2, 3, 4, 7):
        schedule = reproduce.level_schedule(epochs)
        assert sum(e for _, e in schedule) == epochs
        assert [level for level, _ in schedule] == list(range(min(3, epochs)))
