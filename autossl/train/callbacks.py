"""Callbacks: stop cleanly on Ctrl-C/SIGTERM (the final checkpoint is RunCheckpoints', run_checkpoints.py); the
plugin that synchronises BatchNorm across CPU processes."""
from __future__ import annotations

import signal
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.layer_sync import LayerSync

from ..core.distributed import max_over_processes
from ..core.sync_batchnorm import convert_gathered_batchnorm, revert_gathered_batchnorm


class GracefulStop(pl.Callback):
    """On SIGINT or SIGTERM, finish the current step and end `fit` normally; RunCheckpoints then writes
    `last.ckpt` at the final step (rank 0 writes, every rank takes part).

    The signal only sets a flag: the checkpoint is written between steps, never mid-update. Under DDP the
    flag is all-reduced after every step, so a signal that reached any one process (a rank, or only the
    launching one) stops every rank after the same step; the handler itself calls no collective and does not
    touch `trainer.should_stop` (a rank that stopped on its own would leave the others waiting in the next
    step's all-reduce until the process-group timeout).

    Lightning's own SIGTERM handling (its `_SignalConnector`, installed when `fit` starts) is replaced from
    `on_train_start` on: it only broadcasts rank 0's flag, and raises `SIGTERMException` (a SystemExit) out of
    the loop with no checkpoint; a rank other than 0 that receives the signal raises it alone after its step.
    Lightning restores the handlers it found before `fit` when `fit` ends.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, last_path: str | Path):
        self.last_path = Path(last_path)
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            for s in self.SIGNALS:  # after Lightning's own handlers, so ours decide
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread (e.g. notebooks' worker threads): leave signals alone
            self._previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        received = self.received or 0
        if trainer.world_size > 1:  # the largest signal number any process received, on every process
            received = int(max_over_processes(torch.tensor(float(received), device=pl_module.device)).item())
        if received:
            self.received = received
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the handler stays until `teardown`: a second signal during the final save only sets the flag again
        if self.received is not None:
            pl.utilities.rank_zero_info(f"\nstopped by signal {signal.Signals(self.received).name} at step "
                                        f"{trainer.global_step}; wrote {self.last_path} (resume with resume=true)")

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            if signal.getsignal(s) == self._handle:  # not when Lightning already put back what it found
                signal.signal(s, handler)
        self._previous = {}


class GatheredSyncBatchNorm(LayerSync):
    """Lightning's layer-sync plugin for CPU processes: what `Trainer(sync_batchnorm=True)` does on GPUs, with
    `core.sync_batchnorm.GatheredBatchNorm` in place of torch's CUDA-only SyncBatchNorm. `autossl pretrain` uses it
    for `trainer.sync_batchnorm=true` on CPU; with a plain Trainer: `Trainer(plugins=[GatheredSyncBatchNorm()])`
    (and `sync_batchnorm` left False: Lightning refuses both)."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return convert_gathered_batchnorm(model)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        return revert_gathered_batchnorm(model)
