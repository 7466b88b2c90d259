"""VIbCReg's loss (Lee & Aune, 2021, "VIbCReg: Variance-Invariance-better-Covariance Regularization for
Self-Supervised Learning on Time Series", arXiv:2109.00783; as solo-learn writes it, `solo/losses/vibcreg.py`).

VICReg's invariance (MSE) and variance (hinge on each dimension's std) terms, with a *normalised* covariance
term: each dimension is centred and L2-normalised over the batch, so the off-diagonal entries are correlation
coefficients in [-1, 1] whatever the embedding's scale, and their squares are averaged over all D^2 entries
(paper eq. 5). The projector ends in IterNorm whitening (heads/iternorm.py), which the paper finds speeds up
and stabilises training. The variance and covariance terms use the global batch under DDP (solo-learn gathers
there too); the invariance term the local one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.distributed import gather, world_size


def _variance(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    return F.relu(1.0 - torch.sqrt(z.var(dim=0) + eps)).mean()


def normalized_covariance(z: torch.Tensor) -> torch.Tensor:
    """mean over all D x D entries of the squared off-diagonal correlations (the diagonal counted as 0)."""
    z = F.normalize(z - z.mean(dim=0), p=2, dim=0)
    corr = z.T @ z
    off = corr - torch.diag_embed(torch.diagonal(corr))
    return off.pow(2).mean()


def vibcreg_loss(z_a: torch.Tensor, z_b: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                 cov_weight: float = 200.0, gather_distributed: bool = True) -> torch.Tensor:
    """sim_weight * MSE(z_a, z_b) + var_weight * (v(z_a) + v(z_b)) + cov_weight * (c(z_a) + c(z_b))."""
    with torch.autocast(z_a.device.type, enabled=False):
        z_a, z_b = z_a.float(), z_b.float()
        invariance = F.mse_loss(z_a, z_b)
        if gather_distributed and world_size() > 1:
            z_a, z_b = gather(z_a), gather(z_b)
        if z_a.shape[0] < 2:
            raise ValueError(f"vibcreg_loss needs at least 2 samples per (global) batch, got {z_a.shape[0]}")
        variance = _variance(z_a) + _variance(z_b)
        covariance = normalized_covariance(z_a) + normalized_covariance(z_b)
        return sim_weight * invariance + var_weight * variance + cov_weight * covariance


__all__ = ["vibcreg_loss", "normalized_covariance"]
