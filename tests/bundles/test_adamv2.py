"""``bundles/pretrain`` with ``configs/adamv2.json`` (joint L+C+D) and ``configs/adamv2_dino.json`` (localizability only).

Tiny settings (32 px, 2 locals, K = 64, a 32/16 DINO head, batch 4) through ``python -m monai.bundle run`` and
``ConfigWorkflow``: the properties, the per-term TensorBoard scalars, the teacher export, the DINO phase whose
checkpoint starts the joint run, and the config checks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from modan_monai.data import ensure_demo_corpus
from modan_monai.losses import AdamV2Loss
from modan_monai.networks import AdamV2Model, load_encoder
from modan_monai.transforms import AdamV2Viewsd, DINOViewsd

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "pretrain"
TINY = {
    "image_size": 32, "batch_size": 4, "num_locals": 2, "num_prototypes": 64, "head_hidden_features": 32,
    "head_bottleneck_features": 16, "log_interval": 1, "stem": "7x7", "knn_interval": 1,
}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo_adamv2")
    ensure_demo_corpus(root, size=32, per_pair=4)
    return root


def configs(*names: str) -> str:
    return "[" + ",".join(f"'configs/{n}'" for n in ("train.json", *names)) + "]"


def run(bundle_cli: Callable[..., str], out: Path, demo_dir: Path, *names: str, check: bool = True, **overrides: object) -> str:
    return bundle_cli(
        "pretrain", "run", "--config_file", configs(*names), "--logging_file", "configs/logging.conf", check=check,
        **{"dataset_dir": demo_dir, "manifest": demo_dir / "manifest.csv", "output_dir": out, **TINY, **overrides},
    )


def workflow(demo_dir: Path, out: Path, *names: str, **overrides: object) -> ConfigWorkflow:
    flow = ConfigWorkflow(
        config_file=[str(BUNDLE / "configs" / n) for n in ("train.json", *names)],
        meta_file=str(BUNDLE / "configs" / "metadata.json"), logging_file=False, workflow_type="train",
        bundle_root=str(BUNDLE), dataset_dir=str(demo_dir), manifest=str(demo_dir / "manifest.csv"),
        output_dir=str(out), **{**TINY, **overrides},
    )
    flow.initialize()
    return flow


@pytest.mark.parametrize(("names", "joint"), [(("adamv2.json",), True), (("adamv2.json", "adamv2_dino.json"), False)])
def test_properties_and_phase_ids(tmp_path: Path, demo_dir: Path, names: tuple[str, ...], joint: bool) -> None:
    flow = workflow(demo_dir, tmp_path / "p", *names)
    assert flow.check_properties() == []
    get = flow.parser.get_parsed_content
    network, loss, views = get("network_def"), get("loss"), get("train#augment_transforms#0")
    assert isinstance(network, AdamV2Model) and isinstance(loss, AdamV2Loss)
    assert isinstance(get("optimizer"), torch.optim.AdamW)
    assert get("learning_rate") == pytest.approx(0.0005 * 4 / 256)
    if joint:
        assert isinstance(views, AdamV2Viewsd) and get("epochs") == 3 and get("load_size") == 32 * 4
        assert network.parts_key == "parts" and not loss.dino.skip_same_index
        assert loss.composition is not None and loss.decomposition is not None
    else:
        assert isinstance(views, DINOViewsd) and get("epochs") == 3 and get("load_size") == 32
        assert network.parts_key is None and loss.dino.skip_same_index
        assert loss.composition is None and loss.decomposition is None


@pytest.mark.parametrize("names", [("adamv2.json",), ("adamv2.json", "adamv2_dino.json")])
def test_head_use_bn_id_puts_batchnorm_in_both_dino_heads(tmp_path: Path, demo_dir: Path, names: tuple[str, ...]) -> None:
    def norms(flow: ConfigWorkflow) -> list[int]:
        net = flow.parser.get_parsed_content("network_def")
        return [sum(isinstance(m, torch.nn.BatchNorm1d) for m in b.head.modules()) for b in (net.student, net.teacher)]

    assert norms(workflow(demo_dir, tmp_path / "off", *names)) == [0, 0]
    assert norms(workflow(demo_dir, tmp_path / "on", *names, head_use_bn=True)) == [2, 2]


def test_joint_run_logs_every_term_and_exports_the_teacher(
    tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str], tensorboard_tags: Callable
) -> None:
    out = tmp_path / "joint"
    run(bundle_cli, out, demo_dir, "adamv2.json", level_schedule="[[0, 1], [1, 1]]")
    checkpoint = torch.load(out / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "loss", "random_states", "trainer"} <= set(checkpoint)
    assert any(k.startswith("teacher.") for k in checkpoint["network"])
    assert any("center" in k for k in checkpoint["loss"])
    encoder = load_encoder(out / "encoder.pt")
    teacher = {k.removeprefix("teacher.encoder."): v for k, v in checkpoint["network"].items()
               if k.startswith("teacher.encoder.")}
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in teacher.items())
    assert encoder(torch.zeros(2, 1, 32, 32)).shape == (2, 512)
    scalars = set(tensorboard_tags(out)["scalars"])
    assert {"train_loss", "loss_terms/loc", "loss_terms/comp", "loss_terms/dec", "loss_terms/ln_K"} <= scalars
    assert {"adamv2/ema_momentum", "adamv2/level", "adamv2/weight_decay"} <= scalars


def test_dino_phase_checkpoint_starts_the_joint_run(
    tmp_path: Path, demo_dir: Path, bundle_cli: Callable[..., str]
) -> None:
    dino = tmp_path / "dino"
    run(bundle_cli, dino, demo_dir, "adamv2.json", "adamv2_dino.json", dino_epochs=1, knn_interval=0)
    start = dino / "checkpoint_epoch=1.pt"
    flow = workflow(demo_dir, tmp_path / "joint", "adamv2.json", pretrained_checkpoint=str(start))
    stored = torch.load(start, map_location="cpu", weights_only=True)["network"]
    loaded = flow.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in stored.items())


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"skip_same_index": True}, ["skip_same_index"]),
        ({"loss#dino#out_dim": 32}, ["loss#dino#out_dim", "num_prototypes"]),
        ({"load_size": 64}, ["manifest", "row", "too small for max_level=2", "image_size"]),
        ({"teacher_centering": "mean"}, ["centering", "sinkhorn_knopp", "'mean'"]),
    ],
)
def test_bad_ids_are_refused_naming_them(tmp_path: Path, demo_dir: Path, overrides: dict, named: list) -> None:
    with pytest.raises(Exception) as err:
        flow = workflow(demo_dir, tmp_path / "x", "adamv2.json", **overrides)
        flow.run()
    text, cause = "", err.value
    while cause is not None:  # MONAI wraps the cause in RuntimeErrors (the CLI prints it last)
        text, cause = text + str(cause), cause.__cause__
    for word in named:
        assert word in text
