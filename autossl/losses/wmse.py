"""W-MSE (Ermolov et al., 2021, "Whitening for Self-Supervised Representation Learning", ICML 2021,
arXiv:2007.06346; reference code github.com/htdt/self-supervised).

Instead of negatives, each view's embeddings are whitened over a sub-batch (zero mean, identity
covariance: the embeddings cannot collapse, since whitened vectors must span every direction), and
then the positives are pulled together by the MSE of the L2-normalised whitened vectors,
2 - 2 cos(w_i, w_i'), over every pair of views. Whitening uses the Cholesky factor of the sub-batch
covariance (paper §3: W = L^-1 with Cov = L L^T), with gradients through W. The batch is split at
random into sub-batches of `w_size` (paper §3, "batch slicing": several whitening matrices per batch
make the loss less noisy), which needs w_size >= 2D for a well-conditioned covariance; `w_iter`
repeats the slicing with fresh permutations.

Equal to lightly's `WMSELoss` (value and gradient, with the same random permutation) when the batch is
a multiple of `w_size`; a remainder is folded into the last sub-batch instead of being refused. Under
DDP each process whitens its own sub-batches: the global batch is then partitioned into sub-batches
by process, which is the same procedure, so nothing is gathered. The Cholesky factorisation runs in
float32 outside autocast.
"""
from __future__ import annotations

from itertools import combinations
from typing import Sequence

import torch
import torch.nn.functional as F


def whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Whiten the rows of `x` [N, D] with the Cholesky factor of their covariance (shrunk towards the
    identity by `eps`): the output has zero mean and identity (unbiased) covariance."""
    n, d = x.shape
    if n <= d:
        raise ValueError(f"whitening {d}-dim embeddings needs more than {d} samples per sub-batch, got {n}; "
                         f"raise the batch size or w_size, or lower proj_output_dim")
    xn = x - x.mean(dim=0, keepdim=True)
    cov = xn.T @ xn / (n - 1)
    eye = torch.eye(d, device=x.device, dtype=x.dtype)
    cov = (1 - eps) * cov + eps * eye
    inv_sqrt = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), eye, upper=False)
    return xn @ inv_sqrt.T


def norm_mse(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """MSE of the L2-normalised rows: 2 - 2 mean cos(x0, x1)."""
    return 2 - 2 * (F.normalize(x0, dim=1) * F.normalize(x1, dim=1)).sum(dim=1).mean()


def wmse_loss(z_views: Sequence[torch.Tensor], w_size: int = 128, w_iter: int = 1, eps: float = 0.0) -> torch.Tensor:
    """W-MSE of V views [B, D]: whiten each view over random sub-batches of `w_size`, then the normalised MSE
    averaged over the V(V-1)/2 view pairs and `w_iter` slicings. The slicing draws `torch.randperm(B)`."""
    if len(z_views) < 2:
        raise ValueError(f"wmse_loss needs at least 2 views, got {len(z_views)}")
    bs = z_views[0].shape[0]
    w_size = min(w_size, bs)
    pairs = list(combinations(range(len(z_views)), 2))
    total = 0.0
    with torch.autocast(z_views[0].device.type, enabled=False):
        views = [z.float() for z in z_views]
        for _ in range(w_iter):
            perm = torch.randperm(bs).to(views[0].device)
            chunks = list(perm.split(w_size))
            if len(chunks) > 1 and len(chunks[-1]) < w_size:  # fold a remainder into the last full sub-batch
                chunks[-2:] = [torch.cat(chunks[-2:])]
            whitened = []
            for z in views:
                w = torch.empty_like(z)
                for idx in chunks:
                    w[idx] = whiten(z[idx], eps)
                whitened.append(w)
            total = total + sum(norm_mse(whitened[i], whitened[j]) for i, j in pairs)
    return total / (w_iter * len(pairs))


__all__ = ["wmse_loss", "whiten", "norm_mse"]
