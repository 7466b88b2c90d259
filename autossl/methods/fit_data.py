"""What a method needs from the training run beyond its weights: the loader given to `fit()` (and its epoch
length in optimiser steps), the data position and the random state, so that a run resumed after any step
continues bit for bit.

Lightning exposes `trainer.train_dataloader` only once the fit loop has set up its data, which is after
`setup()` (where the online probe is sized from the dataset's classes, so that DDP wraps it) and, on resume,
after the checkpoint is restored. Until Lightning has a public accessor for the loader passed to `fit()`,
`fit_loader` is the one place that reads its private `fit_loop._data_source`; a change there breaks the tests
that size the probe from the data and resume mid-epoch (tests/test_core.py, tests/test_exact_resume.py).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DistributedSampler


def fit_loader(trainer: pl.Trainer | None) -> Any:
    """The object given to `trainer.fit(model, loader)` (or the datamodule's train loader), or None."""
    if trainer is None:
        return None
    try:
        return trainer.fit_loop._data_source.dataloader()
    except Exception:  # no fit in progress, or a datamodule without a train loader yet
        return None


def steps_per_epoch(trainer: pl.Trainer) -> int:
    """Optimiser steps in an epoch of this process (0: a loader without length)."""
    loader = fit_loader(trainer)
    try:  # a DistributedSampler (autossl's SeededSampler is one) has this process's length already;
        # Lightning splits any other sampler's epoch over the processes
        per_rank = isinstance(getattr(loader, "sampler", None), DistributedSampler)
        batches = len(loader) // (1 if per_rank else max(1, trainer.world_size))
    except TypeError:  # an iterable without length
        return 0
    return batches // max(1, trainer.accumulate_grad_batches)


def seeded_sampler(trainer: pl.Trainer | None) -> Any:
    """The loader's SeededSampler (autossl.data.seeded), or None for any other loader."""
    sampler = getattr(fit_loader(trainer), "sampler", None)
    return sampler if hasattr(sampler, "resume_at") else None


def rng_state() -> dict:
    """Every global generator's state in plain values and tensors (a checkpoint stays loadable weights-only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                       gauss], "python": [version, list(internal), py_gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
