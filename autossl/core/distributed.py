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


def rand_rows(n: int, *shape: int, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """`torch.rand(n, *shape)` for this process's `n` rows of the global batch.

    Every process draws the numbers of the whole global batch (`world_size * n` rows, the processes' batches being
    equal: autossl pads them) and keeps its own rows. So the processes draw different masks for their different
    images, each row gets what one process training on the global batch would draw for it, and the global generator
    advances alike on every process: a checkpoint's one random state (rank 0's) resumes every process exactly."""
    w = world_size()
    noise = torch.rand(n * w, *shape, generator=generator, device=device)
    return noise[rank() * n:(rank() + 1) * n] if w > 1 else noise


@torch.no_grad()
def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """`x` [n, ...] of every process concatenated along dim 0 in rank order, without gradient (a plain all-gather):
    for state that must be the same on every process (a queue, a memory bank), filled from the global batch."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
