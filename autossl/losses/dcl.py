"""Decoupled contrastive learning: DCL and DCLW (Yeh et al., 2022, "Decoupled Contrastive Learning",
ECCV 2022, arXiv:2110.06848).

The paper shows that NT-Xent's gradient carries a "negative-positive coupling" factor: when the
positive pair is already close, or the negatives are easy, the whole gradient shrinks, which is why
SimCLR needs large batches. Removing the positive from the denominator (paper eq. 6) removes the
factor:

    L_i = -<z_i, z_i'> / t + log sum_{k != i} [exp(<z_i, z_k> / t) + exp(<z_i, z_k'> / t)]

(same-view and other-view negatives of the global batch, the positive pair excluded). DCLW multiplies
the positive term by a weight from the negative von Mises-Fisher distribution (paper eq. 7),
w_i = 2 - N softmax_i(<z_i, z_i'> / sigma), computed without gradient, so that hard positive pairs
(far apart) count more. Both are symmetrised over the two views, as lightly's `DCLLoss`/`DCLWLoss`,
which these equal on one process (tests/test_zoo_contrastive2.py).

Under DDP the negatives are those of the global batch (gathered with gradients); the vMF weights are
a softmax over the local batch, as lightly and the reference implementation compute them.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.distributed import gather, rank


def vmf_weights(z_a: torch.Tensor, z_b: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """DCLW's negative von Mises-Fisher weights [B] of the positive pairs, w = 2 - B softmax(<z_a, z_b> / sigma)
    over the batch, without gradient (rows of `z_a`, `z_b` are expected normalised)."""
    sim = (z_a.detach() * z_b.detach()).sum(dim=1) / sigma
    return 2 - len(z_a) * F.softmax(sim, dim=0)


def dcl_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.1,
             weight_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             gather_distributed: bool = True) -> torch.Tensor:
    """DCL between two views [B, D] (rows need not be normalised), averaged over both directions.

    `weight_fn(z_a, z_b) -> [B]` scales each positive term (on the normalised embeddings); None: DCL."""
    z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    if gather_distributed:
        all_a, all_b, offset = gather(z_a), gather(z_b), rank() * len(z_a)
    else:
        all_a, all_b, offset = z_a, z_b, 0
    one_way = partial(_one_direction, temperature=temperature, weight_fn=weight_fn, offset=offset)
    return 0.5 * (one_way(z_a, z_b, all_a, all_b) + one_way(z_b, z_a, all_b, all_a))


def dclw_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.1, sigma: float = 0.5,
              gather_distributed: bool = True) -> torch.Tensor:
    """DCLW: DCL with the positive terms weighted by `vmf_weights` (paper eq. 7)."""
    return dcl_loss(z_a, z_b, temperature, partial(vmf_weights, sigma=sigma), gather_distributed)


def _one_direction(a: torch.Tensor, b: torch.Tensor, all_a: torch.Tensor, all_b: torch.Tensor, temperature: float,
                   weight_fn: Callable | None, offset: int) -> torch.Tensor:
    """Anchors `a` [B, D] against their positives `b` and the negatives in `all_a` and `all_b` [B_global, D]."""
    positive = -(a * b).sum(dim=1) / temperature
    if weight_fn is not None:
        positive = positive * weight_fn(a, b)
    own = F.one_hot(torch.arange(len(a), device=a.device) + offset, len(all_a)).bool()  # self and own positive
    neg = torch.cat([(a @ all_a.T / temperature).masked_fill(own, float("-inf")),
                     (a @ all_b.T / temperature).masked_fill(own, float("-inf"))], dim=1)
    return (positive + torch.logsumexp(neg, dim=1)).mean()


__all__ = ["dcl_loss", "dclw_loss", "vmf_weights"]
