"""Checks run before training: ``check_datalist`` (rows, batches, classes) and ``check_world_size`` (torchrun)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modan_monai.engines import MULTI_GPU_CONFIG, check_datalist, check_world_size


def rows(labels: list[int], split: str = "val") -> list[dict]:
    return [{"split": split, "label": y, "manifest": "m.csv", "row": i} for i, y in enumerate(labels)]


@pytest.mark.parametrize(
    "data, kwargs, named",
    [
        ([], {"all_rows": rows([0, 1], "test")}, ["validation data (split 'val', manifest m.csv) has no rows",
                                                   "rows per split: test 2", "'val_split', 'manifest'"]),
        (rows([0, 1, 0], "train"), {"batch_size": 4, "drop_last": True},
         ["gives no batch: 3 items, batch_size 4, drop_last True", "Lower config id 'batch_size' to at most 3"]),
        (rows([1, 1]), {"label_key": "label", "context": "fold 2: "},
         ["fold 2: validation data (split 'val', manifest m.csv) holds a single class in its 2 rows: {1: 2}",
          "'val_split', 'manifest'"]),
    ],
)
def test_check_datalist_names_split_counts_and_ids(data: list, kwargs: dict, named: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        check_datalist(data, "validation", ["val_split", "manifest"], split="val", **kwargs)
    for text in named:
        assert text in str(err.value)
    assert str(err.value).endswith("Nothing has been trained or written.")


def test_check_datalist_counts_batches_and_skips_unknown_classes() -> None:
    assert check_datalist(rows([0, 1] * 5), "training", ["splits"], batch_size=4, drop_last=True) == 2
    assert check_datalist(rows([0, 1]), "training", ["splits"], batch_size=32, label_key="label") == 1

    def needs_image(row: dict) -> dict:
        raise ValueError("modality is empty and the image is not loaded")

    # classes that need the image (DICOM tags) are left to the run's own check
    assert check_datalist(rows([0, 0]), "k-NN query", ["knn_split"], label_key="c", label_transform=needs_image) == 2


@pytest.mark.parametrize("has_config", [False, True])
def test_torchrun_without_multi_gpu_config_is_refused(tmp_path: Path, has_config: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    if has_config:
        (tmp_path / MULTI_GPU_CONFIG).parent.mkdir(parents=True)
        (tmp_path / MULTI_GPU_CONFIG).write_text("{}")
    with pytest.raises(ValueError) as err:
        check_world_size(tmp_path)
    message = str(err.value)
    assert "WORLD_SIZE=2, RANK=0" in message and "config id 'multi_gpu' is false" in message
    if has_config:
        assert "--config_file \"['configs/train.json','configs/multi_gpu_train.json']\"" in message
    else:
        assert "this bundle has no multi-GPU config" in message and "run one process" in message
    assert check_world_size(tmp_path, multi_gpu=True) == 2
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert check_world_size(tmp_path) == 1
