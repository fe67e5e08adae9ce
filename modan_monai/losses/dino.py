"""DINO self-distillation loss (the localizability term L_loc of Adam-v2) from small pure functions.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, as used by Adam-v2
(Taher et al., "Representing Part-Whole Hierarchies in Foundation Models by Learning Localizability,
Composability, and Decomposability from Anatomy via Self-Supervision", CVPR 2024, Eq. 1) with the conventions
fixed in methods.md section 3:

1. :func:`teacher_probabilities`: ``t = softmax((g_T - centre) / T_t)`` with ``T_t = 0.04``, no gradient.
2. :func:`student_log_probabilities`: ``s = log_softmax(g_S / T_s)`` with ``T_s = 0.1``.
3. :func:`dino_cross_entropy`: the mean over the (teacher view i, student view j) pairs of the batch mean of
   ``-Σ_K t_i · s_j``. Every pair counts in the joint phase; ``skip_same_index`` drops the pairs ``i == j``
   for the localizability-only (plain DINO) phase, where the teacher sees the two global views that are also
   the first two student views. (lightly's ``DINOLoss`` always drops them, which is wrong for the joint phase.)
4. :func:`batch_center` / :func:`updated_center`: the centre is a buffer of zeros updated AFTER the loss with
   ``c = m · c + (1 − m) · mean of the raw teacher logits``, the mean summed and counted over all ranks when a
   process group is initialised (never required, unlike the official release).
5. :func:`teacher_temperature`: optional linear teacher-temperature warm-up (official default: none).
6. :func:`sinkhorn_knopp_probabilities`: an opt-in replacement of steps 1 and 4 (``centering="sinkhorn_knopp"``):
   the teacher distribution is the Sinkhorn-Knopp equipartition of ``exp(g_T / T_t)`` over the batch (SwAV,
   Caron et al., NeurIPS 2020; DINOv2, Oquab et al., TMLR 2024, ``sinkhorn_knopp_teacher``, 3 iterations), so
   no single prototype can take the whole batch however small it is. The default stays the running centre.

A uniform student gives ``ln K`` whatever the teacher: the collapse signature.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CENTERINGS",
    "DINOLoss",
    "batch_center",
    "dino_cross_entropy",
    "sinkhorn_knopp_probabilities",
    "student_log_probabilities",
    "teacher_probabilities",
    "teacher_temperature",
    "updated_center",
]


CENTERINGS = ("center", "sinkhorn_knopp")
"""The teacher normalisations of :class:`DINOLoss`: the running centre (DINO) or Sinkhorn-Knopp (SwAV, DINOv2)."""


def teacher_probabilities(teacher_logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """Centred, sharpened teacher distribution ``softmax((teacher_logits − center) / temperature)``, detached.

    Args:
        teacher_logits: ``(..., K)`` raw teacher head outputs.
        center: ``(1, K)`` or ``(K,)`` centre, broadcast over the leading dimensions.
        temperature: teacher temperature ``> 0``.

    Returns:
        float32 probabilities of the shape of ``teacher_logits``, summing to 1 over the last dimension, with no
        gradient (the teacher is a stop-gradient branch).
    """
    logits = teacher_logits.detach().float() - center.detach().float().reshape(-1)
    return F.softmax(logits / temperature, dim=-1)


def student_log_probabilities(student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log_softmax(student_logits / temperature)`` over the last dimension, in float32.

    Args:
        student_logits: ``(..., K)`` raw student head outputs.
        temperature: student temperature ``> 0``.

    Returns:
        float32 log-probabilities of the shape of ``student_logits``.
    """
    return F.log_softmax(student_logits.float() / temperature, dim=-1)


def dino_cross_entropy(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    student_temp: float = 0.1,
    skip_same_index: bool = False,
) -> torch.Tensor:
    """Mean over (teacher view, student view) pairs of the batch-mean cross-entropy ``−Σ_K t_i · s_j``.

    Args:
        student_logits: ``(B, Vs, K)`` raw student logits (global views first, then the locals).
        teacher_probs: ``(B, Vt, K)`` teacher probabilities (see :func:`teacher_probabilities`).
        student_temp: student temperature ``> 0``.
        skip_same_index: drop the pairs ``i == j`` for ``i < min(Vt, Vs)`` (plain DINO phase).

    Returns:
        float32 scalar.

    Raises:
        ValueError: on shapes that do not match, or when ``skip_same_index`` leaves no pair (``Vt = Vs = 1``).
    """
    _check_logits(student_logits, teacher_probs, "teacher_probs")
    num_teacher, num_student = teacher_probs.shape[1], student_logits.shape[1]
    keep = torch.ones(num_teacher, num_student, dtype=torch.bool, device=student_logits.device)
    if skip_same_index:
        keep.fill_diagonal_(False)
    if not bool(keep.any()):
        raise ValueError(
            f"dino_cross_entropy: skip_same_index=True with {num_teacher} teacher view(s) and {num_student} "
            f"student view(s) leaves no (teacher, student) pair; teacher_probs {tuple(teacher_probs.shape)}, "
            f"student_logits {tuple(student_logits.shape)}."
        )
    log_probs = student_log_probabilities(student_logits, student_temp)
    # pair_losses[i, j] = mean_b −Σ_K t[b, i] · s[b, j]
    pair_losses = -torch.einsum("bik,bjk->ij", teacher_probs.float(), log_probs) / student_logits.shape[0]
    return pair_losses[keep].mean()


def batch_center(teacher_logits: torch.Tensor, gather_distributed: bool = True) -> torch.Tensor:
    """Mean of the raw teacher logits over all ``B · Vt`` rows (over all ranks when distributed), no gradient.

    When ``gather_distributed`` and ``torch.distributed`` is initialised, the row sum and the row count are
    all-reduced, so the result equals the mean of one process holding every rank's batch (ranks may hold
    different batch sizes). Without a process group this is the local mean.

    Args:
        teacher_logits: ``(B, Vt, K)`` or ``(N, K)`` raw teacher logits.
        gather_distributed: all-reduce the sum and count when a process group is initialised.

    Returns:
        float32 ``(1, K)``.
    """
    with torch.no_grad():
        rows = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1])
        total = torch.cat([rows.sum(dim=0), rows.new_full((1,), float(rows.shape[0]))])
        if gather_distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
        return (total[:-1] / total[-1]).unsqueeze(0)


def updated_center(center: torch.Tensor, batch_mean: torch.Tensor, momentum: float) -> torch.Tensor:
    """Momentum update of the centre: ``momentum · center + (1 − momentum) · batch_mean``.

    Args:
        center: ``(1, K)`` current centre.
        batch_mean: ``(1, K)`` batch mean of the raw teacher logits (see :func:`batch_center`).
        momentum: in ``[0, 1)``.

    Returns:
        float32 ``(1, K)``, no gradient.
    """
    return (momentum * center.detach().float() + (1.0 - momentum) * batch_mean.detach().float()).reshape(1, -1)


def sinkhorn_knopp_probabilities(
    teacher_logits: torch.Tensor, temperature: float, iterations: int = 3, gather_distributed: bool = True
) -> torch.Tensor:
    """Sinkhorn-Knopp teacher assignments of SwAV / DINOv2 (``sinkhorn_knopp_teacher``), detached, float32.

    ``Q = exp(teacher_logits / temperature)`` over the ``N = B · Vt`` rows is scaled to sum to 1, then
    ``iterations`` times its prototype (column) sums are set to ``1 / K`` and its row sums to ``1 / N``; the
    result is ``N · Q``, so every row is a distribution over the K prototypes and the prototypes share the batch
    about equally (Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
    NeurIPS 2020, Algorithm 1; Oquab et al., "DINOv2", TMLR 2024, Sec. 4). The logits are shifted by their
    maximum before ``exp`` (the first scaling cancels any constant factor, so the result is unchanged). When
    ``gather_distributed`` and ``torch.distributed`` is initialised, the total, the prototype sums, the row
    count and the maximum are all-reduced as in DINOv2, so every rank's rows equal the matching rows of one
    process holding all ranks' batches (ranks may hold different batch sizes).

    Args:
        teacher_logits: ``(B, Vt, K)`` or ``(N, K)`` raw teacher logits.
        temperature: teacher temperature ``> 0``.
        iterations: Sinkhorn-Knopp iterations ``>= 1`` (3, as DINOv2).
        gather_distributed: all-reduce the statistics when a process group is initialised (True).

    Returns:
        float32 probabilities of the shape of ``teacher_logits``, each row summing to 1, with no gradient
        (computed in float64).

    Raises:
        ValueError: on a non-positive ``iterations`` or an empty input.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"sinkhorn_knopp_probabilities: iterations must be an integer >= 1, got {iterations!r}.")
    if teacher_logits.numel() == 0:
        raise ValueError(f"sinkhorn_knopp_probabilities: empty teacher_logits {tuple(teacher_logits.shape)}.")
    distributed = gather_distributed and torch.distributed.is_available() and torch.distributed.is_initialized()

    def _all_reduce(value: torch.Tensor, op: Any = None) -> torch.Tensor:
        if distributed:
            torch.distributed.all_reduce(value, op=op or torch.distributed.ReduceOp.SUM)
        return value

    with torch.no_grad():
        # float64 so that exp underflows only for logits ~700 temperatures below the maximum
        logits = teacher_logits.detach().double().reshape(-1, teacher_logits.shape[-1]) / temperature
        peak = _all_reduce(logits.max().reshape(1), torch.distributed.ReduceOp.MAX if distributed else None)
        q = torch.exp(logits - peak).t()  # (K, N): prototypes x rows, as in the papers
        num_prototypes = q.shape[0]
        num_rows = _all_reduce(q.new_full((1,), float(q.shape[1])))
        tiny = torch.finfo(q.dtype).tiny  # a prototype with no mass at all keeps 0 instead of 0 / 0
        q /= _all_reduce(q.sum().reshape(1))
        for _ in range(iterations):
            q /= _all_reduce(q.sum(dim=1, keepdim=True)).clamp_min(tiny)
            q /= num_prototypes
            q /= q.sum(dim=0, keepdim=True)
            q /= num_rows
        q *= num_rows
        return q.t().reshape(teacher_logits.shape).float()


def teacher_temperature(
    epoch: int, teacher_temp: float, warmup_teacher_temp: float | None = None, warmup_epochs: int = 0
) -> float:
    """Teacher temperature at a 0-based ``epoch``: linear warm-up, then constant (the official DINO schedule).

    During the warm-up the value is ``numpy.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs)[epoch]``
    (the last warm-up epoch already reaches ``teacher_temp``); from epoch ``warmup_epochs`` on, and always when
    ``warmup_teacher_temp`` is None or ``warmup_epochs`` is 0, it is ``teacher_temp``.

    Args:
        epoch: 0-based epoch ``>= 0``.
        teacher_temp: final teacher temperature.
        warmup_teacher_temp: starting temperature, or None for no warm-up.
        warmup_epochs: number of warm-up epochs ``>= 0``.

    Returns:
        The temperature (float).

    Raises:
        ValueError: on a negative ``epoch``.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (0-based), got {epoch}.")
    if warmup_teacher_temp is None or epoch >= warmup_epochs:
        return float(teacher_temp)
    if warmup_epochs == 1:
        return float(warmup_teacher_temp)
    fraction = epoch / (warmup_epochs - 1)
    return float(warmup_teacher_temp + (teacher_temp - warmup_teacher_temp) * fraction)


def _check_logits(student_logits: torch.Tensor, teacher: torch.Tensor, teacher_name: str) -> None:
    if student_logits.ndim != 3 or teacher.ndim != 3:
        raise ValueError(
            f"DINO loss expects student_logits (B, Vs, K) and {teacher_name} (B, Vt, K), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher.shape)}."
        )
    if student_logits.shape[0] != teacher.shape[0] or student_logits.shape[2] != teacher.shape[2]:
        raise ValueError(
            f"DINO loss: student_logits {tuple(student_logits.shape)} and {teacher_name} {tuple(teacher.shape)} "
            "must share the batch size B (dim 0) and the output dimension K (dim 2)."
        )
    if min(student_logits.shape) < 1:
        raise ValueError(
            f"DINO loss: empty input, student_logits {tuple(student_logits.shape)}, "
            f"{teacher_name} {tuple(teacher.shape)}."
        )


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


class DINOLoss(nn.Module):
    """DINO self-distillation loss with a momentum centre (L_loc of Adam-v2; Caron et al., ICCV 2021).

    ``t = softmax((teacher_logits − centre) / T_t)``, ``s = log_softmax(student_logits / T_s)``; the loss is
    the mean over the (teacher view i, student view j) pairs of ``mean_b −Σ_K t_i · s_j``. With
    ``skip_same_index`` the pairs ``i == j`` are dropped (plain DINO phase: the teacher's views are the first
    student views); in Adam-v2's joint phase every pair counts (default). Inputs are cast to float32.

    The centre (buffer ``center``, ``(1, K)`` zeros, saved in the state dict) is updated after the loss value
    is computed, so the loss of a batch uses the centre of the previous batches:
    ``c = center_momentum · c + (1 − center_momentum) · mean of the raw teacher logits over B · Vt rows``.
    With ``gather_distributed`` and an initialised process group the mean is taken over every rank's rows (the
    centre is then identical on all ranks); the loss itself stays this rank's batch mean, as in the official
    DINO (the loss is a per-sample mean, so DDP's gradient averaging over equal shards gives the global
    gradient). The centre is not updated in ``eval()`` mode. With ``centering="sinkhorn_knopp"`` the teacher
    distribution comes from :func:`sinkhorn_knopp_probabilities` instead and the centre is neither read nor
    updated.

    Args:
        out_dim: K, the head's output dimension (must match the logits).
        student_temp: student temperature (0.1).
        teacher_temp: teacher temperature (0.04), reached after the warm-up.
        center_momentum: centre momentum in ``[0, 1)`` (0.9).
        skip_same_index: drop the same-index (teacher i, student i) pairs (False; True for the DINO phase).
        warmup_teacher_temp: starting teacher temperature of a linear warm-up, or None (official: no warm-up).
        warmup_teacher_temp_epochs: warm-up length in epochs (0); see :func:`teacher_temperature`.
        gather_distributed: all-reduce the centre statistics when a process group is initialised (True).
        centering: ``"center"`` (the running centre above; DINO, Adam-v2) or ``"sinkhorn_knopp"``: the teacher
            distribution is :func:`sinkhorn_knopp_probabilities` of the raw teacher logits at the current
            teacher temperature and the centre buffer is left untouched (DINOv2's ``sinkhorn_knopp_teacher``;
            SwAV's equipartition keeps a small batch from piling onto one prototype).
        sinkhorn_iterations: Sinkhorn-Knopp iterations ``>= 1`` (3, as DINOv2); used only with
            ``centering="sinkhorn_knopp"``.

    Shapes:
        - student_logits: ``(B, Vs, K)``.
        - teacher_logits: ``(B, Vt, K)``.
        - output: scalar.

    Raises:
        ValueError: on a bad argument (named) or bad input shapes.

    Example:
        >>> loss_fn = DINOLoss(out_dim=64)
        >>> loss = loss_fn(torch.zeros(4, 3, 64), torch.randn(4, 1, 64))  # a uniform student
        >>> round(loss.item(), 4) == round(math.log(64), 4)
        True
    """

    center: torch.Tensor

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        center_momentum: float = 0.9,
        skip_same_index: bool = False,
        warmup_teacher_temp: float | None = None,
        warmup_teacher_temp_epochs: int = 0,
        gather_distributed: bool = True,
        centering: str = "center",
        sinkhorn_iterations: int = 3,
    ) -> None:
        super().__init__()
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be an integer >= 1, got {out_dim!r}.")
        self.out_dim = out_dim
        self.student_temp = _check_positive("student_temp", student_temp)
        self.teacher_temp = _check_positive("teacher_temp", teacher_temp)
        if not (isinstance(center_momentum, (int, float)) and 0.0 <= center_momentum < 1.0):
            raise ValueError(f"center_momentum must be in [0, 1), got {center_momentum!r}.")
        self.center_momentum = float(center_momentum)
        self.warmup_teacher_temp = (
            None if warmup_teacher_temp is None else _check_positive("warmup_teacher_temp", warmup_teacher_temp)
        )
        if (
            isinstance(warmup_teacher_temp_epochs, bool)
            or not isinstance(warmup_teacher_temp_epochs, int)
            or warmup_teacher_temp_epochs < 0
        ):
            raise ValueError(
                f"warmup_teacher_temp_epochs must be an integer >= 0, got {warmup_teacher_temp_epochs!r}."
            )
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.skip_same_index = bool(skip_same_index)
        self.gather_distributed = bool(gather_distributed)
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {list(CENTERINGS)}, got {centering!r}.")
        self.centering = centering
        if isinstance(sinkhorn_iterations, bool) or not isinstance(sinkhorn_iterations, int) or sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations must be an integer >= 1, got {sinkhorn_iterations!r}.")
        self.sinkhorn_iterations = sinkhorn_iterations
        self.epoch = 0
        self.register_buffer("center", torch.zeros(1, out_dim))

    def extra_repr(self) -> str:
        return (
            f"out_dim={self.out_dim}, student_temp={self.student_temp}, teacher_temp={self.teacher_temp}, "
            f"center_momentum={self.center_momentum}, skip_same_index={self.skip_same_index}, "
            f"warmup_teacher_temp={self.warmup_teacher_temp}, "
            f"warmup_teacher_temp_epochs={self.warmup_teacher_temp_epochs}, "
            f"gather_distributed={self.gather_distributed}, centering={self.centering!r}, "
            f"sinkhorn_iterations={self.sinkhorn_iterations}"
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the teacher temperature of the 0-based ``epoch`` (call at the start of every epoch).

        Raises:
            ValueError: on a negative or non-integer ``epoch``.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"DINOLoss.set_epoch: epoch must be an integer >= 0 (0-based), got {epoch!r}.")
        self.epoch = epoch

    @property
    def current_teacher_temp(self) -> float:
        """Teacher temperature of the epoch selected by :meth:`set_epoch`."""
        return teacher_temperature(
            self.epoch, self.teacher_temp, self.warmup_teacher_temp, self.warmup_teacher_temp_epochs
        )

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """DINO loss of ``student_logits (B, Vs, K)`` against ``teacher_logits (B, Vt, K)``; updates the centre.

        Returns:
            float32 scalar (with gradients through ``student_logits`` only).

        Raises:
            ValueError: on bad shapes or a K different from ``out_dim``.
        """
        _check_logits(student_logits, teacher_logits, "teacher_logits")
        if student_logits.shape[-1] != self.out_dim:
            raise ValueError(
                f"DINOLoss(out_dim={self.out_dim}): student_logits {tuple(student_logits.shape)} and "
                f"teacher_logits {tuple(teacher_logits.shape)} have K = {student_logits.shape[-1]}."
            )
        if self.center.device != teacher_logits.device:
            self.center = self.center.to(teacher_logits.device)
        if self.centering == "sinkhorn_knopp":
            probs = sinkhorn_knopp_probabilities(
                teacher_logits, self.current_teacher_temp, self.sinkhorn_iterations, self.gather_distributed
            )
            return dino_cross_entropy(student_logits, probs, self.student_temp, self.skip_same_index)
        probs = teacher_probabilities(teacher_logits, self.center, self.current_teacher_temp)
        loss = dino_cross_entropy(student_logits, probs, self.student_temp, self.skip_same_index)
        if self.training:
            with torch.no_grad():
                mean = batch_center(teacher_logits, self.gather_distributed)
                self.center.copy_(updated_center(self.center, mean, self.center_momentum))
        return loss
