"""MLP heads: projectors and predictors, with injectable normalisation and activation (timm's
`norm_layer`/`act_layer` convention), so a method can ask for BN+ReLU (SimCLR, BYOL), LayerNorm+GELU
(ViT recipes) or no normalisation without a new class."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

PROJECTOR_KINDS = ("MLP", "linear", "none")


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True,
        last_bn: bool = False, norm_layer: Callable[[int], nn.Module] | None = None,
        act_layer: Callable[[], nn.Module] | None = None) -> nn.Sequential:
    """Linear-norm-act blocks then a Linear; `last_bn` adds an affine-free BN at the end (SimSiam).

    `norm_layer(width)` defaults to BatchNorm1d when `batch_norm` (None: no normalisation); hidden
    Linears have no bias when a norm follows them. `act_layer()` defaults to ReLU."""
    if num_layers < 1:
        raise ValueError(f"a projector needs at least 1 layer, got num_layers={num_layers}")
    norm_layer = norm_layer or (nn.BatchNorm1d if batch_norm else None)
    act_layer = act_layer or (lambda: nn.ReLU(inplace=True))
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=norm_layer is None))
        if norm_layer is not None:
            layers.append(norm_layer(hidden_dim))
        layers.append(act_layer())
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

