"""SMoG's group features (Pang et al., 2022, "Unsupervised Visual Representation Learning by Synchronous Momentum
Grouping", arXiv:2207.06167), as lightly's `SMoGPrototypes` (lightly/models/modules/heads.py).

K group vectors that play the part of the prototypes of a clustering method, but are moved every step
("synchronous momentum grouping") instead of being re-clustered every epoch:

- `assign(x)`: each row goes to the group of largest cosine similarity (lightly's `assign_groups`);
- `updated(x)`: each group that received rows of `x` moves to beta * g + (1 - beta) * mean(its rows), the others
  stay (lightly's `get_updated_group_features`). Like lightly's, the result is a differentiable function of `x`
  (the old groups are a constant), so a loss computed against the updated groups also sends a gradient, scaled by
  1 - beta, into the rows that moved them; as lightly, the mean is over the raw rows (cosines are taken later);
- `set(groups)`: store them (detached) for the next step.

The groups are a registered buffer, so checkpoints hold them and a resumed run continues with the same groups.
Under DDP `updated` gathers `x` from every process first (keeping the graph, core.distributed.gather), so every
process applies the same update to the same groups: the groups stay identical everywhere, as lightly's are on one
process. Assignments are computed in float32 with autocast off: a bf16 matmul could pick another group.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.distributed import gather


class SMoGGroups(nn.Module):
    def __init__(self, num_groups: int, dim: int, beta: float = 0.99):
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"SMoG needs at least 1 group, got num_groups={num_groups}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"the group momentum beta must be in [0, 1], got {beta}")
        self.beta = float(beta)
        # lightly's initialisation: uniform in [0, 1), normalised; drawn from torch's global RNG, so a seeded run
        # builds the same groups
        self.register_buffer("features", F.normalize(torch.rand(num_groups, dim), dim=1))

    @torch.no_grad()
    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """[B] index of each row's nearest group (cosine similarity) among the stored groups."""
        with torch.autocast(x.device.type, enabled=False):
            sim = F.normalize(x.detach().float(), dim=1) @ F.normalize(self.features.float(), dim=1).T
        return sim.argmax(dim=1)

    def updated(self, x: torch.Tensor) -> torch.Tensor:
        """[K, D] groups after one momentum step towards the (global) batch `x` [B, D]; not stored (see `set`)."""
        x = gather(x)
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            assignments = self.assign(x)
            k = self.features.shape[0]
            sums = x.new_zeros(k, x.shape[1]).index_add(0, assignments, x)  # out of place: differentiable in x
            counts = torch.bincount(assignments, minlength=k)
            means = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
            old = self.features.detach().float().clone()  # a copy: `set` overwrites the buffer in place later
            return torch.where((counts > 0).unsqueeze(1), self.beta * old + (1 - self.beta) * means, old)

    @torch.no_grad()
    def set(self, groups: torch.Tensor) -> None:
        self.features.copy_(groups.detach().to(self.features.dtype))
