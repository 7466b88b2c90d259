"""Extending a two-view loss to N views."""
from itertools import combinations
from typing import Callable, Sequence

import torch


def mean_over_view_pairs(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         zs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Average `loss_fn` over every unordered pair of views: N views give N(N-1)/2 terms.

    With 2 views this is exactly `loss_fn(z0, z1)`, so values stay comparable across N.
    """
    if len(zs) < 2:
        raise ValueError(f"a joint-embedding loss needs at least 2 views, got {len(zs)}; set data.num_views>=2")
    pairs = list(combinations(range(len(zs)), 2))
    return sum(loss_fn(zs[i], zs[j]) for i, j in pairs) / len(pairs)


def mean_over_cross_views(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          online: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Average `loss_fn(online[i], targets[j])` over every ordered pair of different views i != j:
    the predictor methods (BYOL, SimSiam) and MoCo's query/key pairs. N views give N(N-1) terms."""
    if len(online) < 2 or len(online) != len(targets):
        raise ValueError(f"need at least 2 views on each side, got {len(online)} and {len(targets)}")
    terms = [loss_fn(p, z) for i, p in enumerate(online) for j, z in enumerate(targets) if i != j]
    return torch.stack(terms).mean()
