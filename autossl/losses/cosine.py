"""Negative cosine similarity (BYOL, SimSiam)."""
import torch
import torch.nn.functional as F


def negative_cosine_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, z) averaged over the batch. `z` is the target: pass it detached (stop-gradient)."""
    return -F.cosine_similarity(p, z, dim=1).mean()
