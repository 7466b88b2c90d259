"""MMCR (Yerxa et al., 2023, "Learning Efficient Coding of Natural Images with Maximum Manifold Capacity
Representations", NeurIPS 2023, arXiv:2303.03307; reference code github.com/ThomasYerxa/mmcr).

Each image's K views, L2-normalised, form a small "manifold" z_i [K, D]; its centroid c_i is their
mean. Maximising the nuclear norm of the centroid matrix C [B, D] (the sum of its singular values)
spreads the centroids over many directions, and since normalised views can only have a long mean when
they agree, it also pulls each image's views together: one term does both jobs, which the paper derives
from the capacity of linearly separable manifolds. An optional term, lambda / B * sum_i ||z_i||_*,
shrinks each image's manifold directly (the paper uses lambda = 0 on CIFAR, where it is not needed):

    L = -||C||_*  +  lambda / B * sum_i ||z_i||_*

More views give better centroid estimates (the reference trains CIFAR with 40 views). The function
takes the views as a list of [B, D] tensors or a [B, K, D] tensor and normalises them itself, as the
reference's `MMCR_Loss` does; lightly's `MMCRLoss(online, momentum)` is the same on already normalised
views concatenated along K (tests/test_zoo_redundancy.py checks value and gradient).

Under DDP the centroids are gathered (with gradients), so ||C||_* is the global batch's, as the
reference gathers them; the per-image term is a mean over the local images. SVDs run in float32
outside autocast (no half-precision SVD).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..core.distributed import gather


def mmcr_loss(z_views: Sequence[torch.Tensor] | torch.Tensor, lmda: float = 0.0,
              gather_distributed: bool = True) -> torch.Tensor:
    """MMCR loss of K views per image: a list of K [B, D] tensors or one [B, K, D] tensor."""
    z = torch.stack(list(z_views), dim=1) if not isinstance(z_views, torch.Tensor) else z_views
    if z.ndim != 3:
        raise ValueError(f"mmcr_loss needs views as [B, K, D] or a list of [B, D], got shape {tuple(z.shape)}")
    if lmda < 0:
        raise ValueError(f"mmcr_loss needs lmda >= 0, got {lmda}")
    with torch.autocast(z.device.type, enabled=False):
        z = F.normalize(z.float(), dim=-1)
        centroids = z.mean(dim=1)
        if gather_distributed:
            centroids = gather(centroids)
        loss = -torch.linalg.svdvals(centroids).sum()
        if lmda:
            loss = loss + lmda * torch.linalg.svdvals(z).sum() / z.shape[0]
    return loss


__all__ = ["mmcr_loss"]
