"""The training loader a Trainer was given, as a method sees it before Lightning sets it up.

Lightning exposes `trainer.train_dataloader` only once the fit loop has set up its data, which is
after `setup()` (where the online probe is sized from the dataset's classes, so that DDP wraps it)
and, on resume, after the checkpoint is restored (so setting it up earlier, e.g. through
`trainer.estimated_stepping_batches`, would skip restoring the loader's state). Until Lightning has
a public accessor for the loader passed to `fit()`, this module is the one place that reads its
private `fit_loop._data_source`; a change there breaks the tests that construct the probe from the
data and resume a seeded loader (tests/test_train.py), not users silently.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


def fit_loader(trainer: pl.Trainer | None) -> Any:
    """The object given to `trainer.fit(model, loader)` (or the datamodule's train loader), or None."""
    if trainer is None:
        return None
    try:
        return trainer.fit_loop._data_source.dataloader()
    except Exception:  # no fit in progress, or a datamodule without a train loader yet
        return None


def restore_loader_state(trainer: pl.Trainer | None, checkpoint: dict) -> None:
    """Lightning restores a stateful loader only when resuming mid-epoch; at an epoch boundary we
    do it, so the seeded loader continues with the next epoch's shuffle and augmentations."""
    states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader")
    loader = fit_loader(trainer)
    if states and hasattr(loader, "load_state_dict"):
        loader.load_state_dict(states[0])
