"""Momentum (EMA) targets with BYOL's cosine schedule of the decay rate."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of `module` to be updated only by EMA."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """target = tau * target + (1 - tau) * online, for parameters; buffers (BN statistics) are copied."""
    online_params = [p.detach() for p in online.parameters()]
    target_params = list(target.parameters())
    torch._foreach_mul_(target_params, tau)
    torch._foreach_add_(target_params, online_params, alpha=1 - tau)
    for b_t, b_o in zip(target.buffers(), online.buffers()):
        b_t.copy_(b_o)


def cosine_tau(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """Decay rate that rises from `base` to `final` over training on a cosine (BYOL, eq. in §3.2)."""
    if total_steps <= 0:
        return base
    progress = min(1.0, step / total_steps)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
