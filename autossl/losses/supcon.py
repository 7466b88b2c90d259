"""Supervised contrastive loss (Khosla et al., 2020, "Supervised Contrastive Learning", NeurIPS 2020,
arXiv:2004.11362; reference code github.com/HobbitLong/SupContrast, `losses.py`).

SimCLR's NT-Xent with every sample of the same class as a positive. Every view of every image is an
anchor i; its positives P(i) are the other views of the same image and all views of same-class images;
the denominator runs over every other view in the (global) batch, A(i). The paper's eq. 2, L^sup_out,
averages the log-likelihood over the positives *outside* the log, which the paper finds trains better
than putting the sum inside (L^sup_in, its Table 1):

    L = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(<z_i, z_p> / t) / sum_{a in A(i)} exp(<z_i, z_a> / t) )

Labels of -1 mean "unlabelled": such an image's positives are its own other views only, so a batch
without labels gives exactly SimCLR's NT-Xent (`nt_xent_loss` for two views), and a partly labelled
batch mixes the two, as semi-supervised use needs. This equals the reference's `SupConLoss` with
base_temperature = temperature (its scale factor t / t_base is then 1); solo-learn's SupCon
(`solo/losses/simclr.py`, with class labels as indexes) computes L^sup_in, which is the same only when
each anchor has one positive. Under DDP the candidates (embeddings and labels) are gathered, the
anchors are the local views.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..core.distributed import gather, rank


def supcon_loss(z_views: Sequence[torch.Tensor], labels: torch.Tensor | None, temperature: float = 0.1,
                gather_distributed: bool = True) -> torch.Tensor:
    """L^sup_out over V views [B, D] (rows need not be normalised) with `labels` [B] (-1: unlabelled;
    None: no labels, SimCLR)."""
    if len(z_views) < 1 or (len(z_views) < 2 and labels is None):
        raise ValueError(f"supcon_loss needs at least 2 views without labels, got {len(z_views)}")
    n, device = z_views[0].shape[0], z_views[0].device
    labels = torch.full((n,), -1, dtype=torch.long, device=device) if labels is None else labels.to(device).long()
    offset = rank() * n if gather_distributed else 0
    # class ids; an unlabelled image is a class of its own (a negative id unique in the global batch)
    ids = torch.where(labels >= 0, labels, -1 - (torch.arange(n, device=device) + offset))
    anchors = [F.normalize(z, dim=1) for z in z_views]
    if gather_distributed:
        cand, cand_ids = [gather(z) for z in anchors], gather(ids)
    else:
        cand, cand_ids = anchors, ids
    n_all = cand[0].shape[0]
    anchor, candidates = torch.cat(anchors), torch.cat(cand)
    anchor_ids, candidate_ids = ids.repeat(len(z_views)), cand_ids.repeat(len(z_views))
    # the position of each local anchor among the candidates: view v, global row offset + i
    self_idx = torch.cat([v * n_all + offset + torch.arange(n, device=device) for v in range(len(z_views))])
    is_self = F.one_hot(self_idx, candidates.shape[0]).bool()
    logits = (anchor @ candidates.T / temperature).masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (anchor_ids[:, None] == candidate_ids[None, :]) & ~is_self
    count = positive.sum(dim=1)
    if bool((count == 0).any()):
        raise ValueError("supcon_loss: an anchor has no positive (one view and a label no other image has); "
                         "use at least 2 views")
    return -(log_prob.masked_fill(~positive, 0.0).sum(dim=1) / count).mean()


__all__ = ["supcon_loss"]
