"""Optimisers (SGD, AdamW, timm's LARS) and the per-step warmup-cosine schedule (timm)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

OPTIMIZERS = ("sgd", "adamw", "lars")


def split_decay(named_params: Iterable[tuple[str, nn.Parameter]]) -> tuple[list, list]:
    """Biases and normalisation parameters (1-D tensors) get no weight decay, and therefore no LARS
    adaptation either (timm's LARS adapts only groups with weight decay)."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return decay, no_decay


def build_optimizer(name: str, groups: list[dict], lr: float, weight_decay: float, momentum: float = 0.9,
                    lars_trust: float = 0.02) -> torch.optim.Optimizer:
    """`groups` are param groups whose own keys (lr, weight_decay) override the defaults."""
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "lars":
        from timm.optim import Lars

        return Lars(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coeff=lars_trust, trust_clip=True)
    raise ValueError(f"unknown optimizer '{name}'; choose one of {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr: float = 0.0,
                    warmup_start_lr: float = 0.0):
    """timm's cosine schedule, stepped per optimiser update (not per epoch)."""
    from timm.scheduler import CosineLRScheduler

    total_steps = max(1, int(total_steps))
    return CosineLRScheduler(optimizer, t_initial=total_steps, lr_min=min_lr, warmup_t=min(warmup_steps, total_steps - 1),
                             warmup_lr_init=warmup_start_lr, warmup_prefix=True, t_in_epochs=False)


def scaled_lr(lr: float, global_batch: int, scale: bool = True) -> float:
    """Linear scaling rule: lr * batch / 256."""
    return lr * global_batch / 256 if scale else lr
