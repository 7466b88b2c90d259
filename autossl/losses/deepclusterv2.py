"""DeepCluster-v2's loss (Caron et al., 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", arXiv:2006.09882, §4 and appendix; reference code github.com/facebookresearch/swav,
`main_deepclusterv2.py`; as solo-learn writes it, `solo/losses/deepclusterv2.py`).

Each prototype head h holds k-means centroids (fixed during an epoch); every view's L2-normalised projection
is scored against them, and the cross-entropy at `temperature` pulls it to the cluster it is assigned to
(k-means assignments, -1 = none yet, ignored). The loss averages over heads; within a head over all views
and images: solo-learn's `F.cross_entropy(outputs[h].view(-1, K) / T, assignments[h].repeat(V), ignore_index=-1)`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def deepclusterv2_loss(scores: Sequence[Sequence[torch.Tensor]], assignments: torch.Tensor,
                       temperature: float = 0.1) -> torch.Tensor:
    """`scores[h][v]`: [B, K_h] cosine scores of view v against head h's centroids; `assignments`: [H, B] long
    (the cluster of each image for each head, -1 = unassigned). Every view of an image predicts the same
    cluster. Heads may differ in K. Returns the mean over heads of the mean cross-entropy over the assigned
    (view, image) pairs (0, with the graph kept, when none is assigned)."""
    if len(scores) != assignments.shape[0]:
        raise ValueError(f"{len(scores)} prototype heads but assignments for {assignments.shape[0]}")
    losses = []
    for h, views in enumerate(scores):
        logits = torch.cat([s.float() for s in views]) / temperature  # [V * B, K], view-major
        target = assignments[h].to(logits.device).repeat(len(views))
        if bool((target >= 0).any()):
            losses.append(F.cross_entropy(logits, target, ignore_index=-1))
        else:  # F.cross_entropy would give nan (a mean over nothing)
            losses.append(logits.sum() * 0.0)
    return torch.stack(losses).mean()


__all__ = ["deepclusterv2_loss"]
