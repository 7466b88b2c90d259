"""SwAV's swapped-prediction loss (Caron et al., 2020, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", arXiv:2006.09882; reference code github.com/facebookresearch/swav,
`main_swav.py`).

Each global crop's prototype scores are turned into soft codes Q by a few Sinkhorn-Knopp iterations
(paper §3.1, eq. 3): an entropy-regularised optimal transport that spreads the batch equally over the
K prototypes, which is what prevents the trivial solution where every image gets the same code.
Every *other* crop (global and local) then predicts those codes from its own scores with a softmax
at `temperature` (eq. 1-2): the codes are swapped between views, so the network must put views of one
image on the same prototypes. Codes are computed without gradient, as in the paper.

Pure functions; the values equal lightly's `SwaVLoss` and its `sinkhorn`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..core.distributed import world_size


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, iterations: int = 3, epsilon: float = 0.05,
             gather_distributed: bool = True) -> torch.Tensor:
    """Soft codes [B, K] from prototype scores [B, K]: the reference's `distributed_sinkhorn`.

    Q = exp(scores / epsilon)^T (K x B, made to sum to 1), then `iterations` rounds of: rows
    (prototypes) scaled to total 1/K each, columns (samples) scaled to total 1/B each. Returned
    times B, so every sample's code sums to 1 and, as the iterations converge, every prototype gets
    B/K of the batch. Under DDP the row sums (and the total) are all-reduced, so the equipartition
    holds over the global batch, as in the reference and lightly's `gather_distributed=True`;
    column sums are per sample, local. Computed in float32; the global maximum is subtracted before
    exp (a constant factor that the first normalisation cancels) so a small epsilon cannot overflow.
    """
    n = world_size() if gather_distributed else 1
    s = scores.detach().float() / epsilon
    top = s.max()
    if n > 1:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    q = torch.exp(s - top).t()  # [K, B]
    total = q.sum()
    if n > 1:
        dist.all_reduce(total)
    q = q / total
    k, b = q.shape[0], q.shape[1] * n
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)
        if n > 1:
            dist.all_reduce(rows)
        q = q / rows / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def swav_loss(high_res_outputs: Sequence[torch.Tensor], low_res_outputs: Sequence[torch.Tensor] = (),
              temperature: float = 0.1, sinkhorn_iterations: int = 3, epsilon: float = 0.05,
              queue_outputs: Sequence[torch.Tensor] | None = None, gather_distributed: bool = True) -> torch.Tensor:
    """SwAV's multi-crop loss from prototype scores (each [B, K], from normalised features and prototypes).

    For each high-resolution (global) crop i: codes q_i = sinkhorn(scores_i) (with `queue_outputs[i]`,
    the scores of past embeddings, appended to the batch for the transport only, then dropped); the
    sub-loss is the mean over every other crop v of -sum_k q_i log softmax(scores_v / temperature),
    batch-averaged. The result averages the sub-losses over the global crops: the reference's
    `loss += subloss / (n_crops - 1)` then `loss /= len(crops_for_assign)`.
    """
    high, low = list(high_res_outputs), list(low_res_outputs)
    n_crops = len(high) + len(low)
    if not high or n_crops < 2:
        raise ValueError(f"swav_loss needs a global crop and at least one other crop, got {len(high)} global "
                         f"and {len(low)} local")
    log_p = [F.log_softmax(x.float() / temperature, dim=1) for x in high + low]
    loss = log_p[0].new_zeros(())
    for i, scores in enumerate(high):
        batch = scores.shape[0]
        if queue_outputs is not None:
            scores = torch.cat([scores.detach(), queue_outputs[i].detach()])
        q = sinkhorn(scores, sinkhorn_iterations, epsilon, gather_distributed)[:batch]
        sub = [-(q * log_p[v]).sum(dim=1).mean() for v in range(n_crops) if v != i]
        loss = loss + torch.stack(sub).sum() / (n_crops - 1)
    return loss / len(high)


__all__ = ["sinkhorn", "swav_loss"]
