"""The KoLeo regulariser (Sablayrolles et al., 2019, "Spreading vectors for similarity search",
arXiv:1806.03198), as DINOv2 uses it (Oquab et al., 2023, arXiv:2304.07193, §4; reference code
github.com/facebookresearch/dinov2, `dinov2/loss/koleo_loss.py`).

The Kozachenko-Leonenko differential-entropy estimator: with L2-normalised embeddings x_i and
rho_i = min_{j != i} ||x_i - x_j||, L = -1/n sum_i log(rho_i + eps). Minimising it pushes every embedding away
from its nearest neighbour, so the batch spreads uniformly over the sphere. The neighbour is found without
gradient (argmax of the cosine similarity, the diagonal excluded); the distance carries the gradient.

DINOv2 computes it on each process's batch of one global crop's student [CLS] embeddings (before the head),
not on the gathered batch; `gather_distributed=True` uses the global batch instead. The value equals lightly's
`KoLeoLoss` on one process.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.distributed import gather


def koleo_loss(x: torch.Tensor, eps: float = 1e-8, gather_distributed: bool = False) -> torch.Tensor:
    """-mean_i log(||x_i - x_nn(i)|| + eps) on L2-normalised rows of `x` [B, D] (float32)."""
    if gather_distributed:
        x = gather(x)
    if x.shape[0] < 2:
        raise ValueError(f"koleo_loss needs at least 2 embeddings to find neighbours, got {x.shape[0]}")
    with torch.autocast(x.device.type, enabled=False):
        x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
        with torch.no_grad():
            sim = x @ x.T
            sim.fill_diagonal_(-2.0)
            nn_idx = sim.argmax(dim=1)
        dist = F.pairwise_distance(x, x[nn_idx], p=2, eps=eps)
        return -torch.log(dist + eps).mean()


__all__ = ["koleo_loss"]
