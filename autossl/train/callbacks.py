"""Callbacks: stop cleanly on Ctrl-C/SIGTERM; the final checkpoint is RunCheckpoints' (run_checkpoints.py)."""
from __future__ import annotations

import signal
from pathlib import Path

import pytorch_lightning as pl


class GracefulStop(pl.Callback):
    """On SIGINT or SIGTERM, finish the current step and end `fit` normally; RunCheckpoints (placed before
    this callback) then writes `last.ckpt` at the final step.

    The signal only sets a flag: the checkpoint is written between steps, never mid-update.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, last_path: str | Path):
        self.last_path = Path(last_path)
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self._trainer is not None:
            self._trainer.should_stop = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        try:
            for s in self.SIGNALS:  # after Lightning's own handlers, so ours decide
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread (e.g. notebooks' worker threads): leave signals alone
            self._previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.received is not None:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.received is not None:
            pl.utilities.rank_zero_info(f"\nstopped by signal {signal.Signals(self.received).name} at step "
                                        f"{trainer.global_step}; wrote {self.last_path} (resume with resume=true)")
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        self._trainer = None

    _trainer: pl.Trainer | None = None
