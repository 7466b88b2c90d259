"""TiCo (Zhu et al., 2022, "TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised
Visual Representation Learning", arXiv:2206.10698).

On L2-normalised embeddings z_a (online) and z_b (target), with C a running average of the
embeddings' second-moment matrix:

    B = z_a^T z_a / N                    (this batch, no gradient)
    C' = beta C + (1 - beta) B
    L = 1 - mean_i <z_a_i, z_b_i>  +  rho mean_i z_a_i^T C' z_a_i

The first term asks for transformation invariance; the second ("covariance contrast") penalises
embeddings that lie along the directions the past batches already occupy, which pushes the
embeddings apart and keeps them from collapsing. The paper reads C as an implicit memory bank of
unlimited size (every past batch contributes with weight decaying as beta^k): TiCo is MoCo-like
contrast without a queue, which is why it holds up with small batches.

The function is pure: it returns the loss and C' and the caller stores C' (methods/tico.py keeps it in
a checkpointed buffer). It equals lightly's `TiCoLoss` (value, gradient and updated C) on one process.
Under DDP, z_a and z_b are gathered (with gradients), so B is the global batch's, as lightly's
`gather_distributed=True`. Computed in float32 outside autocast: C accumulates over the whole run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.distributed import gather


def tico_loss(z_a: torch.Tensor, z_b: torch.Tensor, cov: torch.Tensor, beta: float = 0.9, rho: float = 8.0,
              gather_distributed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, updated covariance [D, D], detached) from the online `z_a` and target `z_b` [B, D] and the
    running covariance `cov` [D, D] (zeros at the start of training)."""
    if z_a.shape != z_b.shape:
        raise ValueError(f"tico_loss needs two embeddings of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if gather_distributed:
        z_a, z_b = gather(z_a), gather(z_b)
    if z_a.shape[0] < 2:
        raise ValueError(f"tico_loss needs at least 2 samples per (global) batch, got {z_a.shape[0]}")
    with torch.autocast(z_a.device.type, enabled=False):  # C accumulates over training: keep it in float32
        z_a, z_b = F.normalize(z_a.float(), dim=1), F.normalize(z_b.float(), dim=1)
        batch_cov = (z_a.T @ z_a).detach() / z_a.shape[0]
        new_cov = beta * cov.float() + (1 - beta) * batch_cov
        invariance = 1.0 - (z_a * z_b).sum(dim=1).mean()
        contrast = rho * ((z_a @ new_cov) * z_a).sum(dim=1).mean()
    return invariance + contrast, new_cov.detach()


__all__ = ["tico_loss"]
