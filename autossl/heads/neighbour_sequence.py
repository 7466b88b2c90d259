"""Heads over sequences of nearest neighbours, for All4One (Estepa et al., 2023, "All4One: Symbiotic
Neighbour Contrastive Learning via Self-Attention and Redundancy Reduction", ICCV 2023, §3.2).

- `KNearestSupportSet`: NNCLR's support set (heads/support_set.py) that also returns each embedding's k
  nearest entries, nearest first: the sequence All4One's transformer reads. Same buffers as `SupportSet`
  (items, ptr, filled), so it is checkpointed the same way.
- `NeighbourTransformer`: a small transformer encoder over such a sequence whose output at the first
  position summarises it (the paper's "centroid"). Layout as solo-learn (solo/methods/all4one.py): PyTorch's
  post-norm `TransformerEncoderLayer` (ReLU, feed-forward 2 x width, dropout 0.1), 8 heads, 3 layers, and
  a fixed sinusoidal encoding added to the sequence first.

solo-learn's encoding is `Summer(PositionalEncodingPermute1D(5))` on a [B, 5, D] sequence. Its "Permute"
variant reads the input as [batch, channels, positions], so it is the feature axis that gets positions
and the 5 sequence slots that are the channels: slot k at feature d receives sin(d w_j) for k = 2j and
cos(d w_j) for k = 2j + 1, w_j = 10000^(-2j / C), C = 5 rounded up to even. Unusual, but it does tell the
slots apart, and it is what the published results were trained with, so `slot_encoding` reproduces it
exactly (tests/test_zoo_all4one.py checks it against solo-learn's classes, transcribed).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .support_set import SupportSet


class KNearestSupportSet(SupportSet):
    """`SupportSet` plus `nearest_k`: the k nearest entries by cosine similarity, nearest first."""

    @torch.no_grad()
    def nearest_k(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """[B, k, D] the k nearest neighbours of each row of `z` [B, D], most similar first (so
        `nearest_k(z, k)[:, 0]` is `nearest(z)`); no gradient, as the stored vectors carry none."""
        if not 1 <= k <= self.items.shape[0]:
            raise ValueError(f"cannot take {k} nearest neighbours from a support set of {self.items.shape[0]}")
        with torch.autocast(z.device.type, enabled=False):  # exact neighbours: no bf16/fp16 matmul
            sim = F.normalize(z.detach().float(), dim=1) @ self.items.float().T
        return self.items[sim.topk(k, dim=1).indices].to(z.dtype)


def slot_encoding(length: int, dim: int) -> torch.Tensor:
    """[length, dim] the fixed encoding solo-learn's `PositionalEncodingPermute1D(length)` adds to a
    [B, length, dim] sequence (module docstring), computed with its float32 operations."""
    channels = 2 * math.ceil(length / 2)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, channels, 2).float() / channels))
    angle = torch.arange(dim).float()[:, None] * inv_freq[None, :]  # [dim, channels / 2]: feature index x frequency
    emb = torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)  # sin and cos interleaved: [dim, channels]
    return emb[:, :length].T.contiguous()


class NeighbourTransformer(nn.Module):
    """[B, length, dim] sequence -> [B, dim]: the encoder's output at the first position."""

    def __init__(self, dim: int, length: int = 5, heads: int = 8, layers: int = 3, ff_mult: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the transformer's width {dim} must be a multiple of its {heads} heads")
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=dim * ff_mult, dropout=dropout,
                                           batch_first=True)
        # nested tensors only serve padding masks, which a fixed-length neighbour sequence never has
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        # a constant of the shape, not state: kept out of the state dict (a checkpoint holds nothing to restore)
        self.register_buffer("position", slot_encoding(length, dim), persistent=False)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        if seq.shape[1:] != self.position.shape:
            raise ValueError(f"expected sequences of shape [B, {', '.join(map(str, self.position.shape))}], "
                             f"got {list(seq.shape)}")
        return self.encoder(seq + self.position.to(seq.dtype))[:, 0]
