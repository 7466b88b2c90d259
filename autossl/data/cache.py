"""Decoded images kept in memory (`data.cache_images=true`): each image is decoded once, on its first read, and
kept as its uint8 tensor, so from the second epoch on the loader costs no decoding.

On a CPU every millisecond of the data path is taken from the model: reading and decoding a 32 px CIFAR JPEG cost
0.5 ms (AMD EPYC) to 2.5 ms (Intel Xeon) per image; the cache took 19% off a 16 px SimCLR step from the second epoch
on (docs/budget.md). Images are cached as the dataset
returns them (uint8 [3, H, W], before any augmentation), so the views are drawn afresh every epoch exactly as
without the cache: the same seed gives the same batches with or without it.

The cache fills in the process that reads the images: with `num_workers=0` (the CPU recipe) that is the training
process; with worker processes each worker fills its own copy (with persistent workers they keep it between
epochs, without them the copies are lost at every epoch's end).
"""
from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from .datasets import native_size

MAX_MEMORY_SHARE = 0.5  # refuse a cache that would take more than this share of the memory available now


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (Linux's MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class DecodedCache(Dataset):
    """`base[i]`, decoded once and kept. Refuses (one line, before anything is decoded) a dataset whose decoded
    images would take more than half the memory available: ImageNet's 1.3 M images at 224 px would need ~190 GB."""

    def __init__(self, base: Dataset):
        self.base = base
        self.classes = getattr(base, "classes", None)
        self.targets = getattr(base, "targets", None)
        side = native_size(base)
        need = len(base) * 3 * side * side if side else None  # square at the longer side: an upper bound
        free = available_memory()
        if need is not None and free is not None and need > MAX_MEMORY_SHARE * free:
            raise ValueError(f"data.cache_images=true would keep ~{need / 1e9:.1f} GB of decoded images in memory, more "
                             f"than half of the {free / 1e9:.1f} GB available; set data.cache_images=false")
        self._items: list[tuple[Any, int] | None] = [None] * len(base)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        item = self._items[i]
        if item is None:  # an unreadable file is kept as (None, label) too: it is not re-read
            item = self._items[i] = tuple(self.base[i])
        return item


__all__ = ["DecodedCache", "available_memory"]
