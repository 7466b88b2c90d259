"""Reproducible data order and augmentations that a resumed run can pick up at any batch.

`SeededSampler` yields `(index, sample_seed)`: epoch e's order is a permutation drawn from (seed, e), and every
sample's augmentation seed is a function of (seed, e, index). The views of a sample are drawn from its own
seed inside `torch.random.fork_rng`, so they do not depend on which worker made them, on what came before, or
on the model's use of the global generator -- and loading data never moves that generator. A run resumed
after batch k of epoch e (`resume_at`) then yields exactly the batches the uninterrupted run would have,
without loading the first k; the model's random state is restored by the method from the checkpoint.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils.data import DistributedSampler

from ..core.distributed import rank, world_size

_MIX = 0x9E3779B97F4A7C15  # the golden-ratio constant of splitmix64: spreads nearby seeds apart


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch (splitmix64 of the three numbers)."""
    z = (seed * 1_000_003 + epoch) * 1_000_000_007 + index
    z = (z + _MIX) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


@contextmanager
def seeded(seed: int):
    """Draw from `seed` inside the block, leaving the global CPU generator as it was."""
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed also queues a lazy seeding of every accelerator, each call
        # recording a stack trace (~1.7 ms per image: 10% of a 16 px training step on a 2-core CPU)
        torch.default_generator.manual_seed(seed)
        yield


class SeededSampler(DistributedSampler):
    """Each iteration is the next epoch, by its own counter: Lightning numbers epochs differently after some
    restarts (a checkpoint written after an epoch's last batch replays an empty epoch and counts it), so the
    trainer's epoch cannot say which data comes next. A resumed run sets the counter (`resume_at`).

    It is its own distributed sampler: under DDP (a process group, read when iterating, so the loader can be built
    before the processes start) process r of W takes every W-th sample of the epoch's order from position r, the
    order padded by its first samples to a multiple of W, as torch's DistributedSampler does; so the processes'
    batches together are one process's global batch. Lightning leaves a DistributedSampler in place, where it
    wraps any other sampler in one whose length is fixed when it is built, which cannot start an epoch part-way
    (a mid-epoch resume under DDP failed with an IndexError). `set_epoch`, which Lightning calls with its own
    epoch count, is ignored for the reason above."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):  # DistributedSampler's needs a process group
        self.length, self.seed, self.shuffle, self.drop_last = int(length), int(seed), shuffle, False
        self.epoch, self.start = 0, 0  # the next iteration: its epoch, and the samples of it already used (all ranks)

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """The next iteration is `epoch`, after its first `samples_done` samples (of every process together)."""
        self.epoch, self.start = int(epoch), int(samples_done)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, min(self.start, self.length)
        self.epoch, self.start = epoch + 1, 0
        order = (torch.randperm(self.length, generator=torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1)))
                 if self.shuffle else torch.arange(self.length)).tolist()
        world = world_size()
        if world > 1:
            order = order + order[: (-self.length) % world]  # every process the same number of samples
            order = order[start:][rank()::world]
        else:
            order = order[start:]
        for i in order:
            yield i, sample_seed(self.seed, epoch, i)

    def __len__(self) -> int:
        return -(-self.length // world_size())
