"""Weighted cosine k-NN (Wu et al. 2018; the protocol solo-learn and lightly report: k=200, T=0.1).

Chunked over the queries AND over the bank, keeping a running top-k: a bank of a million images
never needs a [queries x bank] matrix, only [chunk x bank_chunk] at a time. The bank may stay on
the CPU while queries are on the GPU: each bank chunk is moved (and normalised) as it is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_topk(query: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = 1024,
             bank_chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and bank indices of the k nearest bank items of every query, [Q, k] each."""
    query = F.normalize(query.float(), dim=1)
    k = min(k, bank.shape[0])
    sims, idxs = [], []
    for start in range(0, query.shape[0], chunk):
        q = query[start:start + chunk]
        best_sim = q.new_empty(q.shape[0], 0)
        best_idx = torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device)
        for b0 in range(0, bank.shape[0], bank_chunk):
            part = F.normalize(bank[b0:b0 + bank_chunk].to(q.device).float(), dim=1)
            sim = q @ part.T  # [chunk, bank_chunk]: the largest matrix that ever lives
            top_sim, top_idx = sim.topk(min(k, sim.shape[1]), dim=1)
            cand_sim = torch.cat([best_sim, top_sim], dim=1)
            cand_idx = torch.cat([best_idx, top_idx + b0], dim=1)
            best_sim, pos = cand_sim.topk(min(k, cand_sim.shape[1]), dim=1)
            best_idx = cand_idx.gather(1, pos)
        sims.append(best_sim)
        idxs.append(best_idx)
    return torch.cat(sims), torch.cat(idxs)


@torch.no_grad()
def knn_scores(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
               k: int = 200, temperature: float = 0.1, chunk: int = 1024, bank_chunk: int = 16384) -> torch.Tensor:
    """Class scores [Q, num_classes]: each of the k nearest bank items (cosine) votes exp(sim / T)
    for its class. Features need not be normalised; they are normalised here."""
    if bank.shape[0] == 0:
        raise ValueError("the k-NN bank is empty; give at least one labelled training image")
    top_sim, top_idx = knn_topk(query, bank, k, chunk, bank_chunk)
    weights = (top_sim / temperature).exp()
    labels = bank_labels.to(top_idx.device)[top_idx]
    votes = torch.zeros(top_sim.shape[0], num_classes, device=top_sim.device)
    votes.scatter_add_(1, labels, weights)
    return votes


def knn_predict(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.1, chunk: int = 1024, bank_chunk: int = 16384) -> torch.Tensor:
    """Classes ranked by k-NN score, [Q, num_classes] (column 0 is the prediction)."""
    scores = knn_scores(query, bank, bank_labels, num_classes, k, temperature, chunk, bank_chunk)
    return scores.argsort(dim=1, descending=True)
