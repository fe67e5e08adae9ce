"""Adam-v2's DINO head and student/teacher model (tiny: 32 px, K = 64)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from modan_monai.networks import AdamV2Model, DINOHead, ResNet18Encoder, build_encoder


def model(**kwargs: object) -> AdamV2Model:
    torch.manual_seed(0)
    return AdamV2Model(ResNet18Encoder(stem="7x7"), DINOHead(512, 32, 16, 64), **kwargs)


def views(batch: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"teacher": torch.rand(batch, 1, 1, 32, 32), "global": torch.rand(batch, 1, 1, 32, 32),
            "local": torch.rand(batch, 2, 1, 16, 16), "parts": torch.rand(batch, 4, 1, 32, 32)}


def test_dino_head_last_layer_has_unit_rows_and_a_fixed_norm() -> None:
    head = DINOHead(8, 16, 4, 10)
    assert head(torch.randn(3, 8)).shape == (3, 10)
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(10), atol=1e-6)
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    assert DINOHead(8, 16, 4, 10, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad
    with pytest.raises(ValueError, match="out_features"):
        DINOHead(8, 16, 4, 0)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_dino_head_use_bn_puts_batchnorm_after_each_hidden_linear(num_layers: int) -> None:
    torch.manual_seed(0)
    head = DINOHead(8, 16, 4, 10, num_layers=num_layers, use_bn=True).train()
    mlp = [head.mlp] if num_layers == 1 else list(head.mlp)
    expected = [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.GELU] * (num_layers - 1) + [torch.nn.Linear]
    assert [type(m) for m in mlp] == expected
    plain = DINOHead(8, 16, 4, 10, num_layers=num_layers)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    x = torch.randn(6, 8) * 3.0 + 5.0
    # reference: DINO's head with use_bn_in_head, written out (batch statistics in train mode, biased variance)
    h = x
    for m in mlp:
        if isinstance(m, torch.nn.Linear):
            h = h @ m.weight.T + m.bias
        elif isinstance(m, torch.nn.BatchNorm1d):
            h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + m.eps) * m.weight + m.bias
        else:
            h = torch.nn.functional.gelu(h)
    ref = torch.nn.functional.normalize(h, dim=-1) @ head.last_layer.weight.T
    torch.testing.assert_close(head(x), ref, rtol=1e-4, atol=1e-5)
    assert head.eval()(x[:1]).shape == (1, 10)
    net = AdamV2Model(ResNet18Encoder(stem="7x7"), DINOHead(512, 32, 16, 64, use_bn=True))
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.teacher.head.modules()) == 2
    assert net(views())["teacher_logits"].shape == (2, 1, 64)


def test_outputs_in_both_phases_and_the_teacher_gets_no_gradient() -> None:
    net = model()
    assert all(torch.equal(a, b) for a, b in zip(net.student.parameters(), net.teacher.parameters()))
    out = net(views())
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"student_logits": (2, 3, 64), "teacher_logits": (2, 1, 64), "composed": (2, 512),
                      "decomposed": (2, 4, 512), "teacher_whole": (2, 512), "teacher_parts": (2, 4, 512),
                      "student_global_features": (2, 1, 512)}
    sum(v.float().sum() for v in out.values() if v.requires_grad).backward()
    assert all(p.grad is None for p in net.teacher.parameters())
    assert any(p.grad is not None for p in net.composer.parameters())
    assert net.encoder is net.teacher.encoder

    dino = model(teacher_key="global", parts_key=None)
    v = views()
    v["global"] = torch.rand(2, 2, 1, 32, 32)
    out = dino(v)
    assert {k: tuple(t.shape) for k, t in out.items()} == {
        "student_logits": (2, 4, 64), "teacher_logits": (2, 2, 64), "student_global_features": (2, 2, 512)
    }
    with pytest.raises(KeyError, match="no view group 'local'"):
        dino({"global": v["global"]})


def test_composition_follows_the_part_order() -> None:
    net = model().eval()
    v = views()
    a = net(v)["composed"]
    v["parts"] = v["parts"].flip(1)
    assert not torch.allclose(a, net(v)["composed"])


def test_update_teacher_and_bn_mode() -> None:
    net = model()
    with torch.no_grad():
        for p in net.student.parameters():
            p.add_(1.0)
    before = copy.deepcopy(net.teacher.state_dict())
    net.update_teacher(1.0)
    assert all(torch.equal(before[k], v) for k, v in net.teacher.state_dict().items())
    net.update_teacher(0.5)
    s, t = next(net.student.parameters()), next(net.teacher.parameters())
    assert torch.allclose(t, (next(iter(before.values())) + s) / 2)
    net.update_teacher(0.0)
    assert all(torch.equal(a, b) for a, b in zip(net.student.parameters(), net.teacher.parameters()))
    assert model(teacher_bn="eval").train().teacher.training is False
    assert model().train().teacher.training is True


def test_teacher_backbone_is_what_a_training_checkpoint_exports(tmp_path: Path) -> None:
    net = model()
    with torch.no_grad():
        for p in net.teacher.parameters():
            p.mul_(0.5)
    path = tmp_path / "checkpoint_epoch=1.pt"
    torch.save({"network": net.state_dict()}, path)
    encoder = build_encoder(str(path))
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in net.teacher.encoder.state_dict().items())

    fresh = model()
    fresh.load_pretrained(path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))
    torch.save({"network": {"x": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: its network is not this AdamV2Model"):
        fresh.load_pretrained(tmp_path / "other.pt")
