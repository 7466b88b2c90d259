"""Weighted cosine k-NN (Wu et al. 2018; the protocol solo-learn and lightly report: k=200, T=0.1).

Batched over queries so that a bank of a million images never needs a full distance matrix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_scores(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
               k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Class scores [Q, num_classes]: each of the k nearest bank items (cosine) votes exp(sim / T)
    for its class. Features need not be normalised; they are normalised here."""
    query = F.normalize(query.float(), dim=1)
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, query.shape[0], chunk):
        sim = query[start:start + chunk] @ bank.T  # [q, N]: only `chunk` rows live at once
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=query.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        out.append(votes)
    return torch.cat(out)


def knn_predict(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Classes ranked by k-NN score, [Q, num_classes] (column 0 is the prediction)."""
    return knn_scores(query, bank, bank_labels, num_classes, k, temperature, chunk).argsort(dim=1, descending=True)
