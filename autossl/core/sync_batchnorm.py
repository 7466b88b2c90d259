"""SyncBatchNorm for CPU processes: torch's `nn.SyncBatchNorm` refuses modules off the GPU under DDP ("SyncBatchNorm
layers only work with GPU modules"), so on gloo/CPU `GatheredBatchNorm` stands in for it.

In training it normalises the global batch (every process's rows, gathered with autograd), updates the running
statistics from it, as SyncBatchNorm does, and keeps this process's rows; the gather's backward sums every
process's gradient into them, as SyncBatchNorm's backward does. `benchmarks/ddp_equivalence.py` measures 2 CPU
processes with it against 1 process on the whole batch (equal to float rounding). It gathers activations, not only
statistics: memory grows with the number of processes, which suits the few CPU processes it is for (on GPUs
`trainer.sync_batchnorm` uses torch's SyncBatchNorm). Parameters and buffers keep BatchNorm's names, so
checkpoints and exports are the same with or without it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .distributed import gather, rank, world_size


class GatheredBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any dimensionality) over the batches of every process; plain BatchNorm in eval mode or alone."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        n = x.shape[0]  # the same on every process (autossl pads the batches to equal sizes)
        return super().forward(gather(x))[rank() * n:(rank() + 1) * n]


def _swap(module: nn.Module, new_cls: type, skip: type) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, skip):
        out = new_cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _swap(child, new_cls, skip))
    return out


class _PlainBatchNorm(nn.modules.batchnorm._BatchNorm):
    def _check_input_dim(self, x: torch.Tensor) -> None:  # any dimensionality, as the layer it replaces
        pass


def convert_gathered_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm layer of `module` (BatchNorm1d/2d/3d) replaced by a GatheredBatchNorm sharing its parameters
    and buffers, as `nn.SyncBatchNorm.convert_sync_batchnorm` does for torch's."""
    return _swap(module, GatheredBatchNorm, GatheredBatchNorm)


def revert_gathered_batchnorm(module: nn.Module) -> nn.Module:
    """The GatheredBatchNorms of `module` back to plain BatchNorm layers (same parameters and buffers)."""
    out = module
    if isinstance(module, GatheredBatchNorm):
        out = _swap(module, _PlainBatchNorm, _PlainBatchNorm)
        return out
    for name, child in module.named_children():
        out.add_module(name, revert_gathered_batchnorm(child))
    return out


__all__ = ["GatheredBatchNorm", "convert_gathered_batchnorm", "revert_gathered_batchnorm"]
