"""Heads that sit on a backbone: projectors and predictors."""
from __future__ import annotations

import torch.nn as nn

PROJECTOR_KINDS = ("MLP", "linear", "none")


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True,
        last_bn: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a Linear; `last_bn` adds an affine-free BN at the end (SimSiam)."""
    if num_layers < 1:
        raise ValueError(f"a projector needs at least 1 layer, got num_layers={num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def projection_head(kind: str, in_dim: int, hidden_dim: int = 2048, out_dim: int = 256,
                    num_layers: int = 2, batch_norm: bool = True, last_bn: bool = False) -> tuple[nn.Module, int]:
    """The earlier API's `projectionhead`: 'MLP', 'linear' (one Linear layer) or 'none'.

    Returns the module and its output width.
    """
    key = {k.lower(): k for k in PROJECTOR_KINDS}.get(str(kind).lower())
    if key is None:
        raise ValueError(f"unknown projectionhead '{kind}'; choose one of {', '.join(PROJECTOR_KINDS)}")
    if key == "none":
        return nn.Identity(), in_dim
    if key == "linear":
        return nn.Linear(in_dim, out_dim), out_dim
    return mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_bn), out_dim


def prediction_head(in_dim: int, hidden_dim: int = 4096, out_dim: int | None = None) -> nn.Sequential:
    """BYOL/SimSiam predictor: a 2-layer MLP with BN."""
    return mlp(in_dim, hidden_dim, out_dim or in_dim, num_layers=2)


__all__ = ["mlp", "projection_head", "prediction_head", "PROJECTOR_KINDS"]
