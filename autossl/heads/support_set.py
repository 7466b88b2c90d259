"""NNCLR's support set (Dwibedi et al., 2021, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations", arXiv:2104.14548, §3.1-3.2).

A FIFO queue Q of past embeddings; `nearest(z)` replaces each embedding by its nearest neighbour in Q
(cosine similarity, NN(z, Q) = argmin_q ||z - q||_2 on normalised vectors). Using a neighbour rather
than the sample's own second view as the positive gives semantic variation that augmentation alone
cannot (paper §1). The queue lives in buffers, so it is checkpointed with the model, and `push`
gathers the embeddings of every process, so all processes hold the same set (the paper's support set
is global). Entries are stored L2-normalised: the NT-Xent loss normalises anyway, so the loss equals
lightly's `NNMemoryBankModule`, which stores raw embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .queue import FeatureQueue


class SupportSet(FeatureQueue):
    """MoCo's FIFO queue of normalised, gathered embeddings (`push`; random unit vectors until the first
    pushes, as the reference and lightly start), plus nearest-neighbour look-up."""

    def __init__(self, size: int, dim: int):
        if size < 1:
            raise ValueError(f"a support set needs at least 1 entry, got size={size}")
        super().__init__(size, dim)

    @torch.no_grad()
    def nearest_index(self, z: torch.Tensor) -> torch.Tensor:
        """[B] index in `items` of each row's nearest neighbour by cosine similarity."""
        with torch.autocast(z.device.type, enabled=False):  # exact neighbours: no bf16/fp16 matmul
            sim = F.normalize(z.detach().float(), dim=1) @ self.items.float().T
        return sim.argmax(dim=1)

    @torch.no_grad()
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D] nearest neighbours of `z` [B, D] in the set (no gradient: the paper's stop-grad on NN)."""
        return self.items[self.nearest_index(z)].to(z.dtype)
