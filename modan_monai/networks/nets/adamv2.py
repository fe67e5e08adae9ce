"""Adam-v2's student/teacher network: backbone + DINO head on both, composability and decomposability heads.

Hosseinzadeh Taher et al., "Representing Part-Whole Hierarchies in Foundation Models by Learning Localizability,
Composability, and Decomposability from Anatomy via Self-Supervision" (CVPR 2024; ``../shared/papers/adam-v2.txt``),
section 3, with the conventions of methods.md §3 "Networks".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_weights_file, state_dict_problems

__all__ = ["AdamV2Branch", "AdamV2Model", "CompositionHead", "DecompositionHead"]

TEACHER_BN_MODES = ("train", "eval")


def _two_layer(features_in: int, hidden: int, features_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, features_out))


class CompositionHead(nn.Sequential):
    """h_C: ``Linear(n*D -> D) - ReLU - Linear(D -> D)``, parts (concatenated, row-major) -> whole.

    Shapes: ``(B, n*D) -> (B, D)``.
    """

    def __init__(self, features: int = 512, num_parts: int = 4) -> None:
        super().__init__(*_two_layer(num_parts * features, features, features))
        self.features, self.num_parts = int(features), int(num_parts)


class DecompositionHead(nn.Sequential):
    """h_D: ``Linear(D -> D) - ReLU - Linear(D -> n*D)``, whole -> the n parts.

    Shapes: ``(B, D) -> (B, n*D)``.
    """

    def __init__(self, features: int = 512, num_parts: int = 4) -> None:
        super().__init__(*_two_layer(features, features, num_parts * features))
        self.features, self.num_parts = int(features), int(num_parts)


class AdamV2Branch(nn.Module):
    """One side (student or teacher): ``encoder`` (``(N, C, H, W) -> (N, D)``) and DINO ``head`` (``(N, D) -> (N, K)``)."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head


def _views(views: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in views:
        raise KeyError(f"AdamV2Model: no view group {key!r}; groups given: {sorted(views)}.")
    x = views[key]
    if x.ndim != 5:
        raise ValueError(f"AdamV2Model: view group {key!r} must be (B, V, C, H, W), got {tuple(x.shape)}.")
    return x


class AdamV2Model(nn.Module):
    """Student g_S and EMA teacher g_T (same backbone, DINO heads), plus h_C and h_D on the student.

    The teacher is a ``deepcopy`` of the student whose parameters never require gradients; it moves only through
    :meth:`update_teacher` (called after each optimiser step by :class:`~modan_monai.handlers.EMATeacherUpdate`).
    Teacher BatchNorm stays in train mode, using batch statistics, like the official release (``teacher_bn="train"``);
    ``"eval"`` uses its running statistics instead.

    Args:
        encoder: backbone from the encoder registry (``forward``: ``(N, C, H, W) -> (N, D)``, ``out_features = D``).
        head: DINO head for the student (:class:`~modan_monai.networks.DINOHead`, ``(N, D) -> (N, K)``).
        num_parts: n, the parts per whole (4: the 2x2 quadrants).
        teacher_bn: ``"train"`` or ``"eval"``.
        teacher_key: view group the teacher sees (joint phase: ``"teacher"``, the whole resized; DINO phase:
            ``"global"``).
        global_key: student global view(s).
        local_key: student local views.
        parts_key: the n parts (joint phase); ``None`` for the localizability-only (DINO) phase.

    Forward:
        ``views``: ``{key: (B, V, C, H, W)}`` view groups. Returns a dict:

        - ``"student_logits"`` ``(B, Vs, K)``: the student on its global views, then its local views;
        - ``"teacher_logits"`` ``(B, Vt, K)``: the teacher on ``teacher_key``;
        - ``"student_global_features"`` ``(B, Vg, D)``: the student backbone features of its global views (no
          head), which the optional KoLeo term of ``modan_monai.losses.AdamV2Loss`` spreads (DINOv2);
        - joint phase only: ``"composed"`` ``(B, D)`` = h_C(student features of the n parts, concatenated
          row-major), ``"decomposed"`` ``(B, n, D)`` = h_D(student feature of the whole), ``"teacher_whole"``
          ``(B, D)`` and ``"teacher_parts"`` ``(B, n, D)`` (teacher backbone features, no head).

        Same-size images go through one encoder call per side; no view is forwarded twice.

    Example:
        >>> from modan_monai.networks import DINOHead, ResNet18Encoder
        >>> model = AdamV2Model(ResNet18Encoder(stem="7x7"), DINOHead(512, 32, 16, 64))
        >>> views = {"teacher": torch.rand(2, 1, 1, 32, 32), "global": torch.rand(2, 1, 1, 32, 32),
        ...          "local": torch.rand(2, 2, 1, 16, 16), "parts": torch.rand(2, 4, 1, 32, 32)}
        >>> {k: tuple(v.shape) for k, v in model(views).items()}["decomposed"]
        (2, 4, 512)
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        num_parts: int = 4,
        teacher_bn: str = "train",
        teacher_key: str = "teacher",
        global_key: str = "global",
        local_key: str = "local",
        parts_key: str | None = "parts",
    ) -> None:
        super().__init__()
        if teacher_bn not in TEACHER_BN_MODES:
            raise ValueError(f"AdamV2Model: teacher_bn must be one of {TEACHER_BN_MODES}, got {teacher_bn!r}.")
        features = int(getattr(encoder, "out_features", 0))
        if features < 1:
            raise ValueError(f"AdamV2Model: the encoder {type(encoder).__name__} has no out_features.")
        head_in = getattr(head, "in_features", features)
        if head_in != features:
            raise ValueError(
                f"AdamV2Model: the DINO head takes {head_in} features but the encoder gives {features}; set the "
                "head's in_features to the encoder's out_features."
            )
        self.student = AdamV2Branch(encoder, head)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.composer = CompositionHead(features, num_parts)
        self.decomposer = DecompositionHead(features, num_parts)
        self.features, self.num_parts = features, int(num_parts)
        self.num_prototypes = int(getattr(head, "out_features", 0))
        self.teacher_bn = teacher_bn
        self.teacher_key, self.global_key, self.local_key, self.parts_key = teacher_key, global_key, local_key, parts_key

    @property
    def encoder(self) -> nn.Module:
        """The teacher's backbone: what ``encoder.pt`` exports and the k-NN monitor embeds with."""
        return self.teacher.encoder

    def train(self, mode: bool = True) -> AdamV2Model:
        """Set the mode; while training, the teacher follows ``teacher_bn``."""
        super().train(mode)
        if mode and self.teacher_bn == "eval":
            self.teacher.eval()
        return self

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student``, over the parameters (buffers untouched)."""
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The student DINO head's last-layer parameters (not updated during the first epoch)."""
        last = getattr(self.student.head, "last_layer", self.student.head)
        return [p for p in last.parameters() if p.requires_grad]

    def load_pretrained(self, path: str | Path) -> None:
        """Load the network of a training checkpoint (the localizability-only phase's) into this model, strictly.

        Raises:
            ValueError: when the checkpoint's network does not match, naming the file and the keys.
        """
        checkpoint = load_weights_file(path)
        state = checkpoint.get("network", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
        missing, unexpected, mismatched = state_dict_problems(self.state_dict(), state)
        if missing or unexpected or mismatched:
            raise ValueError(
                f"pretrained_checkpoint {path}: its network is not this AdamV2Model (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, shape-mismatched {mismatched[:5]}); give a checkpoint_epoch=*.pt of "
                "the same bundle settings (configs/adamv2_dino.json with the same encoder and head ids)."
            )
        self.load_state_dict(state)

    def forward(self, views: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = [self.teacher_key, self.global_key, self.local_key] + ([self.parts_key] if self.parts_key else [])
        groups = {k: _views(views, k) for k in dict.fromkeys(keys)}
        sizes = {k: int(v.shape[0]) for k, v in groups.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"AdamV2Model: view groups disagree on the batch size: {sizes}.")
        batch = next(iter(sizes.values()))

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(-1, *x.shape[2:])

        def per_image(x: torch.Tensor, views_per_image: int) -> torch.Tensor:
            # rows were flattened image-major ((B, V) -> B*V), so this restores (B, V, ...)
            return x.reshape(batch, views_per_image, *x.shape[1:])

        glob, local = groups[self.global_key], groups[self.local_key]
        out: dict[str, torch.Tensor] = {}
        if self.parts_key is None:
            student_big = per_image(self.student.encoder(flat(glob)), glob.shape[1])
        else:
            whole, parts = groups[self.teacher_key], groups[self.parts_key]
            if parts.shape[1] != self.num_parts:
                raise ValueError(f"AdamV2Model: {parts.shape[1]} parts given, num_parts is {self.num_parts}.")
            same_size = torch.cat([whole, glob, parts], dim=1)  # (B, 1 + Vg + n, C, H, W)
            feats = per_image(self.student.encoder(flat(same_size)), same_size.shape[1])
            v_whole, v_glob = whole.shape[1], glob.shape[1]
            student_whole = feats[:, 0]
            student_big = feats[:, v_whole : v_whole + v_glob]
            student_parts = feats[:, v_whole + v_glob :]
            out["composed"] = self.composer(student_parts.reshape(batch, -1))
            out["decomposed"] = self.decomposer(student_whole).reshape(batch, self.num_parts, self.features)
        out["student_global_features"] = student_big
        student_local = per_image(self.student.encoder(flat(local)), local.shape[1])
        student_feats = torch.cat([student_big, student_local], dim=1)
        out["student_logits"] = per_image(self.student.head(flat(student_feats)), student_feats.shape[1])
        with torch.no_grad():
            if self.parts_key is None:
                teacher_in = groups[self.teacher_key]
                teacher_feats = per_image(self.teacher.encoder(flat(teacher_in)), teacher_in.shape[1])
            else:
                both = torch.cat([groups[self.teacher_key], groups[self.parts_key]], dim=1)
                all_feats = per_image(self.teacher.encoder(flat(both)), both.shape[1])
                v_t = groups[self.teacher_key].shape[1]
                teacher_feats = all_feats[:, :v_t]
                out["teacher_whole"] = teacher_feats[:, 0]
                out["teacher_parts"] = all_feats[:, v_t:]
            out["teacher_logits"] = per_image(self.teacher.head(flat(teacher_feats)), teacher_feats.shape[1])
        return out
