"""Optimisers (SGD, AdamW, timm's LARS), parameter groups (no weight decay on biases and norms,
layer-wise LR decay, per-group LR scale and betas) and the per-step warmup-cosine schedule (timm).

A group's `lr_scale` multiplies the scheduled LR (timm's schedulers apply it at every step), so layer
decay and a faster predictor compose with warm-up and cosine without extra code."""
from __future__ import annotations

from typing import Any, Iterable

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


def decay_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float | None = None,
                 **group_options: Any) -> list[dict]:
    """Two groups, with and without weight decay (`split_decay`); `group_options` (lr_scale, betas, ...)
    go on both. `weight_decay=None` leaves the decaying group on the optimiser's default."""
    decay, no_decay = split_decay(named_params)
    with_decay = {"params": decay, **group_options}
    if weight_decay is not None:
        with_decay["weight_decay"] = weight_decay
    return [g for g in (with_decay, {"params": no_decay, **group_options, "weight_decay": 0.0}) if g["params"]]


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float, **group_options: Any) -> list[dict]:
    """timm's layer-wise LR decay (BEiT, MAE and ConvNeXt-V2 fine-tuning): the LR of layer i of L is
    scaled by layer_decay^(L - i), read from the timm model's own `group_matcher`; no weight decay on
    biases, norms and the model's `no_weight_decay()` names."""
    from timm.optim import param_groups_layer_decay

    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_layer_decay(model, weight_decay=weight_decay, no_weight_decay_list=skip,
                                      layer_decay=layer_decay)
    return [{**g, **group_options} for g in groups if g["params"]]


def build_optimizer(name: str, groups: list[dict], lr: float, weight_decay: float, momentum: float = 0.9,
                    lars_trust: float = 0.02, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """`groups` are param groups whose own keys (lr, weight_decay, betas, lr_scale) override the defaults."""
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas)
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
