"""Override ids and config files a bundle run is given: unknown ids, values of another type, two method files.

``modan_monai.bundle.check_overrides`` on the bundles' own config files, and the check the bundles run first in
``initialize`` under ``monai.bundle.run`` (the same ``run`` as ``python -m monai.bundle run``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from monai.bundle import run as bundle_run

from modan_monai.bundle import check_method_files, check_overrides, defined_ids
from modan_monai.data import ensure_demo_corpus

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
PRETRAIN = BUNDLES / "pretrain" / "configs"
TRAIN = [str(PRETRAIN / "train.json")]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    ensure_demo_corpus(root, size=32, per_pair=4)
    return root


@pytest.mark.parametrize(
    "files, overrides, named",
    [
        ([], {"epochz": 1}, ["config id 'epochz' is not defined", "closest defined id is 'epochs'", "--new_ids"]),
        ([], {"epochs": "abc"}, ["config id 'epochs' expects an integer", "'abc'"]),
        ([], {"learning_rate": "nan"}, ["config id 'learning_rate' expects a number", "'nan'"]),
        ([], {"threshold": "high"}, ["config id 'threshold' expects a number", "'high'"]),
        (["mlvicx.json", "simclr.json"], {},
         ["two method override files", "mlvicx.json selects method 'mlvicx'", "simclr.json selects method 'simclr'"]),
    ],
)
def test_bundle_run_refuses_bad_overrides(
    tmp_path: Path, demo_dir: Path, files: list[str], overrides: dict, named: list[str]
) -> None:
    """Before: ``epochz`` and the second method file were ignored (a run, rc 0), ``abc`` a TypeError mid-training."""
    out = tmp_path / "out"
    with pytest.raises(RuntimeError) as err:  # the config parser wraps the ValueError of the initialize item
        bundle_run(
            config_file=TRAIN + [str(PRETRAIN / f) for f in files], bundle_root=str(PRETRAIN.parent),
            logging_file=False, dataset_dir=str(demo_dir), manifest=str(demo_dir / "manifest.csv"),
            output_dir=str(out), **{"epochs": 1, "image_size": 32, "batch_size": 8, "knn_interval": 0, **overrides},
        )
    cause = err.value.__cause__
    assert isinstance(cause, ValueError), repr(err.value)
    for text in named:
        assert text in str(cause)
    assert not out.exists()  # refused before the lock, the writer or a checkpoint


def test_args_file_overrides_are_checked(tmp_path: Path) -> None:
    """Overrides read from ``--args_file`` are checked as those given on the command line."""
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": TRAIN, "logging_file": False, "bundle_root": str(PRETRAIN.parent),
                                "output_dir": str(tmp_path / "out"), "knn_intervall": 0}))
    with pytest.raises(RuntimeError) as err:
        bundle_run(args_file=str(args))
    assert "'knn_intervall' is not defined" in str(err.value.__cause__)
    assert "closest defined id is 'knn_interval'" in str(err.value.__cause__)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"epochs": 1.5}, "expects an integer"),
        ({"save_interval": True}, "expects an integer"),
        ({"learning_rate": math.inf}, "the non-finite number inf"),
        ({"channels_last": "false"}, "expects true or false"),
        ({"stem": 7}, "expects text"),
        ({"splits": "train"}, "expects a list"),
        ({"train#dataloader#shuffle": "yes"}, "'train#dataloader#shuffle' expects true or false"),
        ({"train::dataloader::batchsize": 2}, "closest defined id is 'train#dataloader#batch_size'"),
    ],
)
def test_wrong_type_or_unknown_id_is_named(overrides: dict, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        check_overrides(TRAIN, overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        {"epochs": 2, "learning_rate": 1, "stem": "7x7", "splits": ["train", "val"], "channels_last": True},
        {"base_temperature": 0.1, "vocabulary_file": "v.json", "amp": "bf16"},  # null defaults take any value
        {"epochs": "$1 + 1", "target_key": "$None", "network": "@model", "run_id": "run", "meta_file": "m.json"},
        {"train#dataloader#batch_size": 4, "+initialize": ["$print()"], "new_ids": ["my_id"]},
    ],
)
def test_matching_overrides_pass(overrides: dict) -> None:
    check_overrides(TRAIN, overrides, new_ids=overrides.get("new_ids"))


def test_new_ids_on_purpose(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'my_id' is not defined"):
        check_overrides(TRAIN, {"my_id": 3})
    check_overrides(TRAIN, {"my_id": 3}, new_ids=["my_id"])  # listed in the new_ids config id
    extra = tmp_path / "extra.json"  # or defined in an extra config file
    extra.write_text(json.dumps({"my_id": 1}))
    check_overrides(TRAIN + [str(extra)], {"my_id": 3})
    with pytest.raises(ValueError, match="config id 'my_id' expects an integer"):
        check_overrides(TRAIN + [str(extra)], {"my_id": "three"})


def test_method_files() -> None:
    files = [str(PRETRAIN / n) for n in ("train.json", "adamv2.json", "adamv2_dino.json")]
    check_method_files(files)  # adamv2_dino.json refines adamv2.json
    check_method_files([str(PRETRAIN / n) for n in ("train.json", "simclr.json", "multi_gpu_train.json")])
    with pytest.raises(ValueError, match=r"adamv2_dino.json \(method 'adamv2_dino'\) refines method 'adamv2'"):
        check_method_files([str(PRETRAIN / n) for n in ("train.json", "simclr.json", "adamv2_dino.json")])
    with pytest.raises(ValueError, match="supervised.json selects method 'supervised' and .*adamv2.json"):
        check_method_files([str(PRETRAIN / n) for n in ("train.json", "supervised.json", "adamv2.json")])


def test_defined_ids_reads_path_keys_and_lists() -> None:
    ids = defined_ids({"a": {"b": [1, {"c": 2}]}, "train#x::y": 3, "+initialize": ["$f()"]})
    assert ids["a#b#1#c"] == 2 and ids["train#x#y"] == 3 and ids["initialize#0"] == "$f()"
