"""DINO's head (Caron et al., 2021): an MLP to a bottleneck, L2-normalised, then a weight-normalised
linear layer to the prototypes whose norm is fixed to 1 (`weight_g` frozen), as in the reference
code and lightly's `DINOProjectionHead`. `cancel_last_layer_gradients` implements the paper's
last-layer freeze during the first epoch(s)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mlp import mlp


class DINOHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 65536,
                 num_layers: int = 3, batch_norm: bool = False, norm_last_layer: bool = True):
        super().__init__()
        self.mlp = mlp(in_dim, hidden_dim, bottleneck_dim, num_layers, batch_norm=batch_norm,
                       act_layer=nn.GELU)
        self.apply(_init_weights)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))

    def cancel_last_layer_gradients(self, epoch: float, freeze_epochs: float) -> None:
        """Drop the last layer's gradients while `epoch < freeze_epochs` (DINO's stabiliser)."""
        if epoch < freeze_epochs:
            for p in self.last_layer.parameters():
                p.grad = None


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
