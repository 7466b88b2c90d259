"""SMoG's group-level contrastive loss (Pang et al., 2022, "Unsupervised Visual Representation Learning by
Synchronous Momentum Grouping", arXiv:2207.06167).

Contrastive learning with groups instead of instances as the units: the online network's prediction of one view
must pick, among all K groups, the group the momentum encoder assigned the *other* view to. The logits are the
cosine similarities of the prediction and every group divided by the temperature, and the loss is their
cross-entropy with the assigned group: every other group acts as a negative, so there are K negatives however
small the batch. This is lightly's `SMoGPrototypes.forward` followed by `nn.CrossEntropyLoss`, as its example and
benchmark compute it. Pure function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smog_loss(predictions: torch.Tensor, groups: torch.Tensor, assignments: torch.Tensor,
              temperature: float = 0.1) -> torch.Tensor:
    """Mean over the batch of -log softmax(cos(p, g_k) / temperature)[a]: `predictions` [B, D], `groups` [K, D]
    (normalised here; neither needs to be), `assignments` [B] group indices (no gradient)."""
    if temperature <= 0:
        raise ValueError(f"the SMoG temperature must be positive, got {temperature}")
    logits = F.normalize(predictions, dim=1) @ F.normalize(groups.to(predictions.dtype), dim=1).T
    return F.cross_entropy(logits.float() / temperature, assignments)


__all__ = ["smog_loss"]
