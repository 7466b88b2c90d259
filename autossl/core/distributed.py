"""Gathering across processes with gradients, so losses see the global batch under DDP."""
import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every process along dim 0, keeping the autograd graph.

    The backward of `torch.distributed.nn.all_gather` sums the gradients of every rank into
    the local slice, which is what makes DDP's gradient averaging equal single-process training
    on the concatenated batch.
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def max_over_processes(x: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of `x` over every process: one all-reduce, in place (and no barrier, unlike
    Lightning's `strategy.reduce`); `x` itself on one process. Every process must call it at the same point."""
    if world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x
