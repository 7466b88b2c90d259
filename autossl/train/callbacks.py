"""Callbacks: stop cleanly on Ctrl-C/SIGTERM, writing last.ckpt so that `resume=true` continues."""
from __future__ import annotations

import signal
from pathlib import Path

import pytorch_lightning as pl


class GracefulStop(pl.Callback):
    """On SIGINT or SIGTERM, finish the current step, write `last.ckpt`, and end `fit` normally.
    At the end of any run, `last.ckpt` is brought up to the final step.

    The signal only sets a flag: the checkpoint is written between steps, never mid-update.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, last_path: str | Path):
        self.last_path = Path(last_path)
        self.received: int | None = None
        self._saved_step = -1
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
        # ModelCheckpoint saves at epoch ends; a run stopped by a signal or by max_steps mid-epoch
        # still leaves last.ckpt at its final step.
        if self._saved_step != trainer.global_step or not self.last_path.exists():
            trainer.save_checkpoint(self.last_path)
        if self.received is not None:
            pl.utilities.rank_zero_info(f"\nstopped by signal {signal.Signals(self.received).name} at step "
                                        f"{trainer.global_step}; wrote {self.last_path} (resume with resume=true)")
        self._restore()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._saved_step = trainer.global_step  # any save (ModelCheckpoint's included) of this step

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        self._trainer = None

    _trainer: pl.Trainer | None = None
