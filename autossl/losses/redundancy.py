"""Barlow Twins and VICReg: losses on the statistics of two embeddings."""
import torch
import torch.nn.functional as F

from ..core.distributed import gather, world_size


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_twins_loss(z_a: torch.Tensor, z_b: torch.Tensor, lambda_param: float = 5e-3,
                      gather_distributed: bool = True) -> torch.Tensor:
    """Barlow Twins: push the cross-correlation of the standardised embeddings to the identity.

    Under DDP the embeddings are gathered first, so the batch statistics and the correlation matrix
    are those of the global batch, as in the reference implementation (SyncBatchNorm, then the
    all-reduced correlation). lightly's `BarlowTwinsLoss(gather_distributed=True)` instead averages
    per-GPU correlations of per-GPU-standardised embeddings, so the two agree only on one process.
    """
    if gather_distributed and world_size() > 1:
        z_a, z_b = gather(z_a), gather(z_b)
    _check_batch(z_a, "barlow_twins_loss")
    n = z_a.shape[0]
    c = _standardise(z_a).T @ _standardise(z_b) / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = _off_diagonal(c).pow(2).sum()
    return on_diag + lambda_param * off_diag


def _check_batch(z: torch.Tensor, loss_name: str) -> None:
    if z.shape[0] < 2:
        raise ValueError(f"{loss_name} needs at least 2 samples per (global) batch, since it uses batch statistics; "
                         f"got {z.shape[0]}: raise the batch size or set drop_last=True")


def _standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per dimension over the batch, exactly what the reference's
    BatchNorm1d(affine=False) does in training: biased variance, eps inside the square root."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def vicreg_loss(z_a: torch.Tensor, z_b: torch.Tensor, lambda_param: float = 25.0, mu_param: float = 25.0,
                nu_param: float = 1.0, eps: float = 1e-4, gather_distributed: bool = True) -> torch.Tensor:
    """VICReg: invariance (MSE) + variance (hinge on std) + covariance (off-diagonal) terms.

    The invariance term uses the local batch; variance and covariance use the global batch under DDP.
    """
    invariance = F.mse_loss(z_a, z_b)
    if gather_distributed and world_size() > 1:
        z_a, z_b = gather(z_a), gather(z_b)
    _check_batch(z_a, "vicreg_loss")
    variance = 0.5 * (_variance(z_a, eps) + _variance(z_b, eps))
    covariance = _covariance(z_a) + _covariance(z_b)
    return lambda_param * invariance + mu_param * variance + nu_param * covariance


def _variance(z: torch.Tensor, eps: float) -> torch.Tensor:
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    return _off_diagonal(cov).pow(2).sum() / d
