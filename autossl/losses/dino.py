"""DINO's self-distillation loss (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision
Transformers", arXiv:2104.14294; reference code github.com/facebookresearch/dino, `main_dino.py`).

The student matches the teacher's output distribution over K prototypes: for every teacher view i
(global crops only) and student view j != i (global and local crops), the cross-entropy
H(P_t(x_i), P_s(x_j)) = -sum_k softmax((t_i - c) / tau_t)_k * log softmax(s_j / tau_s)_k, averaged
over the batch and the pairs (paper eq. 3 / Algorithm 1). Collapse is avoided by two opposing forces
on the teacher (paper §3.1, "Avoiding collapse"): *centering* (subtract a running mean `c` of the
teacher's outputs, which stops one prototype from dominating) and *sharpening* (a low teacher
temperature, which stops the uniform solution). The teacher temperature starts lower
(`warmup_teacher_temp`, sharper) and rises linearly, because a too-soft teacher early on makes
training unstable (paper appendix, "Teacher temperature").

Pure functions: the caller (methods/dino.py) owns the center buffer and the epoch. The values equal
lightly's `DINOLoss` (which keeps its own center) given the same center and temperature.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..core.distributed import world_size


def dino_loss(student_out: Sequence[torch.Tensor], teacher_out: Sequence[torch.Tensor], center: torch.Tensor,
              student_temp: float = 0.1, teacher_temp: float = 0.04) -> torch.Tensor:
    """Cross-entropy between the centred, sharpened teacher and the student, over view pairs.

    `student_out`: V_s tensors [B, K] (global views first, then local ones); `teacher_out`: V_t tensors
    [B, K] for the global views, teacher view i being the same crop as student view i, so those pairs
    are skipped (the reference's `if v == iq: continue`). `center`: [1, K] (or broadcastable). The
    teacher gets no gradient (stop-gradient: it is the EMA of the student, not trained by this loss).
    Computed in float32: with tau_t = 0.04 a bf16 softmax would lose most of the distribution.
    Returns the sum of the per-pair batch means divided by the number of pairs.
    """
    if not student_out or not teacher_out:
        raise ValueError("dino_loss needs at least one student and one teacher view")
    t = torch.stack([x.detach().float() for x in teacher_out])  # [V_t, B, K]
    s = torch.stack([x.float() for x in student_out])  # [V_s, B, K]
    if t.shape[1:] != s.shape[1:]:
        raise ValueError(f"teacher outputs {tuple(t.shape[1:])} and student outputs {tuple(s.shape[1:])} differ")
    with torch.autocast(s.device.type, enabled=False):  # autocast would run the einsum in bf16/fp16
        q = F.softmax((t - center.detach().float()) / teacher_temp, dim=-1)
        log_p = F.log_softmax(s / student_temp, dim=-1)
        ce = -torch.einsum("tbk,sbk->ts", q, log_p) / t.shape[1]  # [V_t, V_s]: batch-mean cross-entropy per pair
    same_crop = torch.eye(t.shape[0], s.shape[0], dtype=torch.bool, device=ce.device)
    terms = ce[~same_crop]
    if terms.numel() == 0:
        raise ValueError(f"dino_loss needs two different views; got {len(teacher_out)} teacher and "
                         f"{len(student_out)} student view(s)")
    return terms.mean()


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_out: Sequence[torch.Tensor], momentum: float = 0.9) -> torch.Tensor:
    """The new center: c <- m * c + (1 - m) * mean of the teacher outputs over the global batch and every
    teacher view (the reference's `update_center`: sum, all_reduce, divide by the global count)."""
    t = torch.cat([x.detach().float() for x in teacher_out])  # [V_t * B, K]
    batch_center = t.mean(dim=0, keepdim=True)
    n = world_size()
    if n > 1:  # equal per-process batches: the mean of the per-process means is the global mean
        dist.all_reduce(batch_center)
        batch_center = batch_center / n
    return (center.float() * momentum + batch_center.reshape(center.shape) * (1 - momentum)).to(center.dtype)


def teacher_temperature(epoch: float, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """The teacher temperature at `epoch`: linear from `warmup_temp` (epoch 0) to `temp` (epoch
    warmup_epochs - 1), then constant: the reference's
    `np.concatenate((np.linspace(warmup_temp, temp, warmup_epochs), np.ones(epochs - warmup_epochs) * temp))[epoch]`.
    A fractional epoch (a time-budget run, SSLMethod.phase_epoch) lies on the same line."""
    if epoch >= warmup_epochs:
        return float(temp)
    if warmup_epochs == 1:
        return float(warmup_temp)
    return float(warmup_temp + (temp - warmup_temp) * min(1.0, epoch / (warmup_epochs - 1)))


__all__ = ["dino_loss", "update_center", "teacher_temperature"]
