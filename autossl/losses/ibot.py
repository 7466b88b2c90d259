"""iBOT's masked-patch self-distillation loss (Zhou et al., 2022, "iBOT: Image BERT Pre-Training with Online
Tokenizer", arXiv:2111.07832; reference code github.com/bytedance/ibot, `main_ibot.py` `iBOTLoss`), as DINOv2
(Oquab et al., 2023, arXiv:2304.07193) keeps it in `dinov2/loss/ibot_patch_loss.py`.

The student sees a global crop with some patches replaced by a mask token; the teacher (EMA of the student)
sees the same crop unmasked. At every masked position the student's patch-token output must match the
teacher's centred, sharpened distribution over the K patch prototypes (paper eq. 2, "masked image modelling
with an online tokenizer"): H(P_t(u_i), P_s(u_hat_i)) = -sum_k softmax((t_i - c) / tau_t)_k log softmax(s_i /
tau_s)_k. Each image's cross-entropies are averaged over its own masked tokens, then over the images (the
reference's `sum(loss * mask) / mask.sum().clamp(min=1)` then `.mean()`), so an image with more masked patches
does not weigh more, and an unmasked image contributes 0. The [CLS] part of iBOT is DINO's loss
(losses/dino.py); the patch center is updated with `losses.dino.update_center`.

Pure function; the value equals lightly's `IBOTPatchLoss` given the same center and temperatures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ibot_patch_loss(teacher_out: torch.Tensor, student_out: torch.Tensor, mask: torch.Tensor, center: torch.Tensor,
                    student_temp: float = 0.1, teacher_temp: float = 0.04) -> torch.Tensor:
    """Cross-entropy between the teacher's and the student's outputs at the masked patches.

    `teacher_out`, `student_out`: [N, K], the outputs of the masked tokens only, in the order `x[mask]` takes
    them (image by image, row-major); `mask`: [B, L] or [B, H, W] bool (True = masked), N = mask.sum();
    `center`: [1, K]. The teacher gets no gradient. Computed in float32 (tau_t = 0.04 in bf16 loses the
    distribution). Returns sum_b (1 / n_b) sum_{i masked in b} CE_i / B, with n_b = max(1, masked in b).
    """
    mask = mask.reshape(mask.shape[0], -1).bool()
    n = int(mask.sum())
    if teacher_out.shape[0] != n or student_out.shape[0] != n or teacher_out.shape != student_out.shape:
        raise ValueError(f"ibot_patch_loss needs [N, K] outputs for the N={n} masked tokens, got teacher "
                         f"{tuple(teacher_out.shape)} and student {tuple(student_out.shape)}")
    with torch.autocast(student_out.device.type, enabled=False):
        q = F.softmax((teacher_out.detach().float() - center.detach().float()) / teacher_temp, dim=-1)
        ce = -(q * F.log_softmax(student_out.float() / student_temp, dim=-1)).sum(dim=-1)  # [N]
        per_image = mask.sum(dim=1, keepdim=True).clamp(min=1).float()  # [B, 1]
        weight = (1.0 / per_image).expand_as(mask)[mask]  # [N]
        return (ce * weight).sum() / mask.shape[0]


__all__ = ["ibot_patch_loss"]
