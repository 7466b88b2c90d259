"""`trainer.budget_minutes`: train for a wall-clock budget, with the schedules laid out over it.

The number of steps a budget buys is not known before training: it depends on the machine, the method, the
batch and what else runs. `TimeBudget` measures it while training and keeps re-planning:

- the first `measure_steps` steps run on a provisional plan (the LR warm-up, when there is one, does not depend on
  the plan; without it these steps see the start of a very long cosine, i.e. the peak LR);
- from then on, every `replan_every` steps, the plan is `steps done + budget left / seconds per step`, the step
  time measured since the provisional steps (so a compile or a cold cache does not count), and the method's LR and
  momentum schedules are laid out over the plan (`SSLMethod.set_schedule_length`): the cosine ends when the budget
  does, on a slower machine as on a faster one;
- the run stops after the step that spends the budget (under DDP when any process has spent it: every process
  stops after the same step), and the usual final checkpoint is written;
- the seconds spent and the plan are saved in the checkpoint: a resumed run spends what is left of the budget.

Time counts from the first training step (start-up, data loading set-up and the checkpoint restore are not
counted), validation and checkpoints included. A resumed budget run is not bit-identical to an uninterrupted one:
its plan depends on measured times.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import pytorch_lightning as pl
import torch

from ..core.distributed import max_over_processes

PROVISIONAL_STEPS = 10**6  # the plan before any step is measured: a cosine this long is flat at its start


class TimeBudget(pl.Callback):
    def __init__(self, minutes: float, measure_steps: int = 5, replan_every: int = 10,
                 clock: Callable[[], float] = time.monotonic):
        if not minutes > 0:
            raise ValueError(f"trainer.budget_minutes must be positive, got {minutes}")
        self.budget = float(minutes) * 60
        self.measure_steps, self.replan_every = max(1, int(measure_steps)), max(1, int(replan_every))
        self.spent_before = 0.0  # seconds of training before this run (a resumed run's predecessors)
        self.planned: int | None = None
        self._start: float | None = None
        self._mark: tuple[int, float] | None = None  # (step, time) where the step-time measurement starts
        self.stopped_by_budget = False
        self.clock = clock  # seconds; injectable so that a test's steps cost what it says, however busy the machine

    # ---- state in the checkpoint ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.spent(), "planned": self.planned, "budget": self.budget}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent_before = float(state.get("spent", 0.0))
        self.planned = state.get("planned")

    def spent(self) -> float:
        """Seconds of the budget spent so far (this run and the runs it resumed)."""
        return self.spent_before + (self.clock() - self._start if self._start is not None else 0.0)

    # ---- hooks -------------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # before configure_optimizers: the schedules are built over the provisional plan
            pl_module.set_schedule_length(self.planned or PROVISIONAL_STEPS)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.planned:  # resumed: the plan of the run it continues (the scheduler's restored state holds it too)
            pl_module.set_schedule_length(self.planned)
        self._start = self.clock()
        self._mark = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now, step = self.clock(), trainer.global_step
        if self._mark is None:
            self._mark = (step, now)
        done_here = step - self._mark[0]
        if done_here >= self.measure_steps and (done_here - self.measure_steps) % self.replan_every == 0:
            per_step = (now - self._mark[1]) / done_here
            left = max(0.0, self.budget - self.spent())
            self.planned = max(step + 1, step + int(left / per_step))
            pl_module.set_schedule_length(self.planned)
        over = torch.tensor(float(self.spent() >= self.budget), device=pl_module.device)
        if trainer.world_size > 1:  # every process stops after the same step
            over = max_over_processes(over)
        if over.item():
            self.stopped_by_budget = True
            trainer.should_stop = True
            self._stop_clock()

    def _stop_clock(self) -> None:
        if self._start is not None:
            self.spent_before, self._start = self.spent(), None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_clock()  # the final checkpoint records the time trained, not the save's
        if self.stopped_by_budget:
            pl.utilities.rank_zero_info(f"time budget of {self.budget / 60:g} min spent after step "
                                        f"{trainer.global_step} ({self.spent():.0f} s of training)")


__all__ = ["TimeBudget"]
