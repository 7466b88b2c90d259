"""EMP-SSL (Tong et al., 2023, "EMP-SSL: Towards Self-Supervised Learning in One Training Epoch",
arXiv:2304.03977; reference code github.com/tsb0601/EMP-SSL).

Many fixed-size patches per image (20 to 200) are embedded on the unit sphere. Two terms:

- the total coding rate of each patch set, R(Z) = 1/2 logdet(I + d / (B eps) Z^T Z) (Z: one patch per
  image, [B, d]), is *maximised*, averaged over the patch sets: it spreads the embeddings over all
  d dimensions (the anti-collapse term, from MCR^2). eps is not squared, as in the reference code;
- each patch's cosine similarity to the mean of its image's patches is maximised (invariance).

    L = -mean_v R(Z_v)  -  lambda mean_{v, i} cos(z_v_i, mean_v z_v_i)

This is the reference's objective (`TotalCodingRate.forward` returns -R; main.py adds
`patch_sim * loss_contract + tcr * loss_TCR`). lightly 1.6's `EMPSSLLoss` adds +R instead (its
`tcr_loss` returns 0.5 logdet, without the minus sign), which minimises the coding rate and favours
collapse; our invariance term equals lightly's `invariance_loss` and our coding rate equals minus its
`tcr_loss` (tests/test_zoo_redundancy.py).

The embeddings should be L2-normalised (the reference's encoder normalises; methods/empssl.py does).
logdet runs in float32 outside autocast. Under DDP the coding rate is that of the global batch (each view's
embeddings gathered with autograd), as in the reference, which trains with DataParallel and so computes the loss on
the outputs gathered from every device; a coding rate is not a sum over samples, so a per-process one would be a
different objective. The invariance term is a mean over samples: each process's, averaged by DDP.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..core.distributed import gather, world_size


def coding_rate(z: torch.Tensor, eps: float = 0.2) -> torch.Tensor:
    """Total coding rate R per view of `z` [V, B, D] (or [B, D]): 1/2 logdet(I + D / (B eps) Z^T Z)."""
    z = z.unsqueeze(0) if z.ndim == 2 else z
    _, b, d = z.shape
    eye = torch.eye(d, device=z.device, dtype=z.dtype).unsqueeze(0)
    return 0.5 * torch.logdet(eye + d / (b * eps) * torch.einsum("vbd,vbe->vde", z, z))


def patch_invariance(z: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of each view to the mean of its image's views; `z` [V, B, D]."""
    return F.cosine_similarity(z, z.mean(dim=0, keepdim=True), dim=-1).mean()


def emp_ssl_loss(z_views: Sequence[torch.Tensor], tcr_eps: float = 0.2, inv_coef: float = 200.0,
                 gather_distributed: bool = True) -> torch.Tensor:
    """EMP-SSL loss of V views [B, D]: -mean_v R(Z_v) - inv_coef * mean cos(z, view mean); under DDP (with
    `gather_distributed`) R is the global batch's."""
    if len(z_views) < 2:
        raise ValueError(f"emp_ssl_loss needs at least 2 views, got {len(z_views)}")
    with torch.autocast(z_views[0].device.type, enabled=False):
        z = torch.stack([v.float() for v in z_views])
        z_all = torch.stack([gather(v) for v in z]) if gather_distributed and world_size() > 1 else z
        return -coding_rate(z_all, tcr_eps).mean() - inv_coef * patch_invariance(z)


__all__ = ["emp_ssl_loss", "coding_rate", "patch_invariance"]
