"""Checkpoints while a run trains, so that a run killed at any moment (SIGKILL, out of memory, a node
failure, a power cut) resumes from its newest save instead of losing everything.

`<folder>/step<N>.ckpt` every `every_n_steps` steps, every `every_n_minutes` minutes and at every
`every_n_epochs`-th epoch end (any combination), the newest `keep_last` kept; `last.ckpt` is always the
newest (a hard link, not a copy). Each file is written atomically (AtomicCheckpointIO) and gets a
`.sha256` beside it: on resume a damaged `last.ckpt` is detected and the newest intact step file used.
Saves happen between optimiser steps, and in DDP every rank takes the same decision (time-based saves are
broadcast from rank 0), so all ranks save at the same step.

Lightning's ModelCheckpoint takes one trigger per instance, versions a name that already exists
(`last-v1.ckpt`) and keeps no checksum, which is why this small callback replaces it for runs.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from ..core.io import atomic_write_text

STEP_FILE = re.compile(r"^step(\d+)\.ckpt$")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_intact(path: Path) -> bool:
    """The file matches the checksum written beside it (a file without one, from an older run, counts as intact)."""
    sidecar = path.with_name(path.name + ".sha256")
    if not path.is_file():
        return False
    if not sidecar.is_file():
        return True
    return sidecar.read_text().split()[0] == sha256_of(path)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files a killed writer left behind (`.<name>.<pid>.tmp`)."""
    stale = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def resume_checkpoint(folder: Path) -> Path | None:
    """`last.ckpt` if intact, else the newest intact `step<N>.ckpt` (with a warning), else None."""
    last = Path(folder) / "last.ckpt"
    if is_intact(last):
        return last
    steps = sorted((int(m.group(1)), p) for p in Path(folder).glob("step*.ckpt") if (m := STEP_FILE.match(p.name)))
    for _, path in reversed(steps):
        if is_intact(path):
            if last.exists():
                warnings.warn(f"{last} is damaged (its checksum does not match); resuming from {path.name}", stacklevel=2)
            return path
    return None


class RunCheckpoints(Checkpoint):
    def __init__(self, folder: str | Path, every_n_steps: int | None = None, every_n_minutes: float | None = None,
                 every_n_epochs: int | None = 1, keep_last: int = 2):
        self.folder = Path(folder)
        self.every_n_steps, self.every_n_minutes, self.every_n_epochs = every_n_steps, every_n_minutes, every_n_epochs
        self.keep_last = max(1, int(keep_last))
        self.saved_step = -1
        self._last_save_time = time.monotonic()

    @property
    def last_model_path(self) -> str:
        """The newest checkpoint (the name ModelCheckpoint uses, read by the NaN guard's message)."""
        last = self.folder / "last.ckpt"
        return str(last) if last.exists() else ""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            remove_stale_temporaries(self.folder)

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_save_time = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        due = bool(self.every_n_steps) and step % int(self.every_n_steps) == 0
        if self.every_n_minutes:
            late = time.monotonic() - self._last_save_time >= 60 * float(self.every_n_minutes)
            due = due or trainer.strategy.broadcast(late)  # rank 0's clock decides for every rank
        if due:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % int(self.every_n_epochs) == 0:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)  # the final step, whatever stopped the run (max_steps, a signal, the epochs)

    def save(self, trainer: pl.Trainer) -> Path | None:
        step = trainer.global_step
        if step == self.saved_step or step == 0:
            return None
        path = self.folder / f"step{step:07d}.ckpt"
        # weights_only=False: the whole training state (optimiser, schedules, loops). Left unset, Lightning says
        # "`weights_only` was not set, defaulting to `False`" -- a save, not an unsafe load.
        trainer.save_checkpoint(path, weights_only=False)  # collective under DDP; rank 0 writes
        self.saved_step, self._last_save_time = step, time.monotonic()
        if trainer.is_global_zero:
            digest = sha256_of(path)
            atomic_write_text(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n")
            self._point_last_at(path, digest)
            self._prune()
        trainer.strategy.barrier("autossl_checkpoint")
        return path

    def _point_last_at(self, path: Path, digest: str) -> None:
        last, tmp = self.folder / "last.ckpt", self.folder / f".last.ckpt.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)  # the same bytes under a second name, then an atomic rename
        except OSError:  # a filesystem without hard links: copy
            tmp.write_bytes(path.read_bytes())
        os.replace(tmp, last)
        atomic_write_text(last.with_name("last.ckpt.sha256"), f"{digest}  last.ckpt\n")

    def _prune(self) -> None:
        steps = sorted((int(m.group(1)), p) for p in self.folder.glob("step*.ckpt") if (m := STEP_FILE.match(p.name)))
        for _, old in steps[:-self.keep_last]:
            old.unlink(missing_ok=True)
            old.with_name(old.name + ".sha256").unlink(missing_ok=True)
