"""End-to-end tests of ``bundles/segment``: train (``python -m monai.bundle run``), evaluate, infer, export."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.bundle import run as bundle_run
from PIL import Image

from modan_monai.data.demo_segmentation import demo_segmentation_manifest
from modan_monai.networks import save_encoder
from modan_monai.networks.nets.cb_resnet_encoder import CBResNet18Encoder
from modan_monai.networks.nets.flexunet_encoders import SegmentationUNet

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "segment"
CONFIGS = BUNDLE / "configs"
SCHEMA = BUNDLE.parent / "meta_schema.json"
TINY = {"epochs": 1, "image_size": 32, "batch_size": 4, "log_interval": 1, "few_shot": 3, "overlay_images": 2}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("segdemo")
    return root, Path(demo_segmentation_manifest(root, size=32, n_images=10))


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_train_evaluate_infer_and_export(
    tmp_path: Path, demo: tuple[Path, Path], bundle_cli: Callable[..., str], tensorboard_tags: Callable,
    run_summary_command: Callable[[Path, Path], str],
) -> None:
    root, manifest = demo
    out = tmp_path / "models"
    log = bundle_cli(
        "segment", "run", "--config_file", "configs/train.json", "--logging_file", "configs/logging.conf",
        dataset_dir=root, manifest=manifest, output_dir=out, **TINY,
    )
    assert "epoch 1/1" in log and "val_dice_heart" in log and "val_mean_dice" in log
    assert (out / "model.pt").is_file() and (out / "model_final.pt").is_file()
    tags = tensorboard_tags(out / "logs")
    assert {"train_loss", "val_mean_dice", "val_dice_heart", "val_dice_left_lung", "val_dice_right_lung"} <= set(
        tags["scalars"]
    )
    assert "val_overlay" in tags["images"]

    # the run ends with its summary (best validation mean Dice and epoch, model.pt, the next command) and summary.json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "segmentation" and summary["metric"] == "val_mean_dice"
    assert summary["best"]["epoch"] == 1 and 0.0 <= summary["best"]["value"] <= 1.0 and summary["model_exists"]
    assert summary["model"] == str(out / "model.pt") and summary["final_model"] == str(out / "model_final.pt")
    assert "segmentation summary (1/1 epochs)" in log and "best val_mean_dice: " in log
    assert f"summary file:       {out / 'summary.json'}" in log and f"next:               {summary['next'][0]}" in log
    assert summary["next"] == [
        f"cd {BUNDLE} && python -m monai.bundle run --config_file \"['configs/train.json','configs/evaluate.json']\" "
        f"--logging_file configs/logging.conf --manifest {manifest} --output_dir {out}"
    ]

    # per-image Dice of models/model.pt on the test split: the summary's next command, run as printed elsewhere
    run_summary_command(out / "summary.json", tmp_path)
    metrics = dict(read_csv(out / "metrics.csv"))
    assert {"test_mean_dice", "test_dice_heart", "test_dice_left_lung", "test_dice_right_lung"} <= set(metrics)
    rows = read_csv(out / "test_dice_per_image.csv")
    n_test = sum(1 for r in read_csv(manifest)[1:] if r[read_csv(manifest)[0].index("split")] == "test")
    assert rows[0] == ["filename", "heart", "left_lung", "right_lung", "mean"] and len(rows) == n_test + 1
    assert all(0.0 <= float(v) <= 1.0 for r in rows[1:] for v in r[1:])

    # inference: a network size other than the trained one is refused; without one, the trained size (32) is used;
    # one mask per structure, at the image's own size
    inferred = tmp_path / "infer"
    infer = {"config_file": str(CONFIGS / "inference.json"), "bundle_root": str(BUNDLE), "dataset_dir": str(root),
             "ckpt_path": str(out / "model.pt"), "output_dir": str(inferred)}
    with pytest.raises(RuntimeError) as err:
        bundle_run(**infer, image_size=64)
    assert "image_size is 64 here (config id 'image_size') but 32 in training" in str(err.value.__cause__)
    bundle_run(**infer)
    masks = sorted(inferred.glob("*/*.png"))
    assert len(masks) == 3 * len(list(root.glob("images/*.png")))
    assert {m.stem.split("_", 1)[1] for m in masks} == {"heart", "left_lung", "right_lung"}
    mask = np.array(Image.open(masks[0]))
    assert mask.shape == (32, 32) and set(np.unique(mask).tolist()) <= {0, 255}

    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.json"), bundle_root=str(BUNDLE))
    ts = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts), ckpt_file=str(out / "model.pt"),
                meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json"),
                bundle_root=str(BUNDLE), use_trace=True)
    traced = torch.jit.load(str(ts))
    eager = SegmentationUNet(in_channels=1, out_channels=3)
    eager.load_state_dict(torch.load(out / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(traced(x), eager.eval()(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "files, workflow_type", [(["train.json"], "train"), (["inference.json"], "infer")]
)
def test_check_properties(tmp_path: Path, demo: tuple[Path, Path], files: list[str], workflow_type: str) -> None:
    root, manifest = demo
    overrides = {"manifest": str(manifest)} if workflow_type == "train" else {}
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / f) for f in files], meta_file=str(CONFIGS / "metadata.json"),
        workflow_type=workflow_type, bundle_root=str(BUNDLE), dataset_dir=str(root), output_dir=str(tmp_path),
        **overrides,
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_frozen_encoder_and_few_shot_override(tmp_path: Path, demo: tuple[Path, Path]) -> None:
    root, manifest = demo
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
        dataset_dir=str(root), manifest=str(manifest), output_dir=str(tmp_path), freeze_encoder=True, few_shot=3,
        image_size=32, samples_per_epoch=10,
    )
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network")
    optimizer = workflow.parser.get_parsed_content("optimizer")
    assert not network.train().encoder.training
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised.isdisjoint(id(p) for p in network.encoder.parameters()) and optimised
    train = workflow.parser.get_parsed_content("train_datalist")
    assert len(train) == 3 and train == workflow.parser.get_parsed_content("train_datalist")
    # samples_per_epoch: an epoch of the 3 cases draws 10 samples (each case 3 or 4 times), batch 8 -> 2 iterations
    loader = workflow.parser.get_parsed_content("train#dataloader")
    assert len(loader.sampler) == 10 and len(loader) == 2
    for _ in range(3):
        counts = torch.bincount(torch.as_tensor(list(loader.sampler)), minlength=3).tolist()
        assert sorted(counts) == [3, 3, 4]


def test_checkpoint_of_another_backbone_is_refused(tmp_path: Path, demo: tuple[Path, Path]) -> None:
    root, manifest = demo
    path = save_encoder(CBResNet18Encoder(), tmp_path / "cb_encoder.pt")
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
        dataset_dir=str(root), manifest=str(manifest), output_dir=str(tmp_path), init=str(path), arch="resnet18",
    )
    workflow.initialize()
    with pytest.raises(RuntimeError) as err:  # the config parser wraps the ValueError
        workflow.parser.get_parsed_content("network_def")
    cause = str(err.value.__cause__)
    assert isinstance(err.value.__cause__, ValueError) and "unexpected keys [context_blocks" in cause


def test_verify_metadata() -> None:
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))


def test_inference_serves_request_keys_label_maps_and_no_demo(
    tmp_path: Path, demo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the MONAI Label app relies on: request keys survive preprocessing, the label-map post-processing
    gives one map in the input's size, and giving data generates no demo corpus."""
    from monai.bundle import ConfigParser

    from modan_monai.apps.monailabel.lib.bundle import write_initial_weights

    root, _ = demo
    demo_dir = tmp_path / "no_demo_here"
    monkeypatch.setenv("MODAN_MONAI_DEMO_DIR", str(demo_dir))
    ckpt = write_initial_weights(BUNDLE, tmp_path / "model.pt", {"image_size": 32})
    bundle_run(config_file=str(CONFIGS / "inference.json"), bundle_root=str(BUNDLE), dataset_dir=str(root),
               ckpt_path=str(ckpt), output_dir=str(tmp_path / "infer"), image_size=32)
    assert len(list((tmp_path / "infer").glob("*/*.png"))) == 3 * len(list(root.glob("images/*.png")))
    assert not demo_dir.exists()

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "image_size": 32, "dataset_dir": str(root), "label_order": [2, 1, 0]})
    image = str(sorted(root.glob("images/*.png"))[0])
    d = parser.get_parsed_content("preprocessing")({"image": image, "image_path": image, "result_extension": ".png"})
    assert d["image_path"] == image and d["result_extension"] == ".png"
    logits = torch.full((3, 32, 32), -5.0)
    logits[0, :10] = 5.0
    logits[2, :20] = 5.0  # channel 2 under channel 0 where both are set: label_order paints 0 last
    label_map = parser.get_parsed_content("label_map_postprocessing")({"image": d["image"], "pred": logits})["pred"]
    assert label_map.shape == (1, 32, 32) and label_map.dtype == torch.uint8
    assert set(torch.unique(label_map).tolist()) == {0, 1, 3}
    assert parser.get_parsed_content("label_names") == {"heart": 1, "left_lung": 2, "right_lung": 3}
    assert not demo_dir.exists()
    # saved by monai.bundle run inference when pointed at the label map: one file per image
    from modan_monai.evaluation.segmentation import segmentation_postprocessing

    save = segmentation_postprocessing(preprocessing=parser.get_parsed_content("preprocessing"), label_map=True,
                                       label_order=[2, 1, 0], output_dir=tmp_path / "maps")
    save({"image": d["image"], "pred": logits})
    saved = np.array(Image.open(next((tmp_path / "maps").glob("*/*_labels.png"))))
    assert saved.shape == (32, 32) and set(np.unique(saved).tolist()) == {0, 1, 3}


def test_start_from_loads_a_whole_segmentation_model(tmp_path: Path, demo: tuple[Path, Path]) -> None:
    from modan_monai.apps.monailabel.lib.bundle import write_initial_weights

    root, manifest = demo
    start = write_initial_weights(BUNDLE, tmp_path / "start.pt", {"image_size": 32})
    saved = torch.load(start, weights_only=True)
    for structures, ok in [(["heart", "left_lung", "right_lung"], True), (["heart"], False)]:
        workflow = ConfigWorkflow(
            config_file=str(CONFIGS / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
            dataset_dir=str(root), manifest=str(manifest), output_dir=str(tmp_path / str(ok)), start_from=str(start),
            structures=structures, image_size=32, arch="resnet18", stem="3x3",
        )
        workflow.initialize()
        if ok:
            state = workflow.parser.get_parsed_content("network").state_dict()
            assert all(torch.equal(state[k].cpu(), v) for k, v in saved.items())
        else:
            with pytest.raises(RuntimeError) as err:
                workflow.parser.get_parsed_content("network")
            assert "start_from weights" in str(err.value.__cause__) and "shape-mismatched" in str(err.value.__cause__)
        workflow.finalize()
