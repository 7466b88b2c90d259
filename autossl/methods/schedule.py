"""How long the run is, as the LR, momentum and phase schedules see it (a mixin of SSLMethod, methods/base.py).

Without a time budget the length is the trainer's: `max_steps`, or `max_epochs` times the loader's epoch. With
one (train/budget.py) it is a plan in steps, re-estimated from measured step times while training and laid out
with `set_schedule_length`: the LR cosine and the EMA momentum then end when the budget does. Phases counted in
epochs (warm-ups, freezes, queue starts) read `phase_epoch`, which maps a budget run onto the recipe they were
set for.
"""
from __future__ import annotations

from .fit_data import steps_per_epoch


class PlannedSchedule:
    recipe_epochs: int | None = None  # the run length the defaults' epoch-counted phases were set for

    def planned_steps(self) -> int:
        """The run's optimiser steps as the schedules see them (a time budget re-plans them while training)."""
        return self._total_steps()

    def phase_epoch(self) -> float:
        """The epoch that epoch-counted phases read (DINO's teacher-temperature warm-up and last-layer freeze, SwAV's
        prototype freeze and queue start): the epoch, as the references count it. Under a time budget the run's
        length is not chosen in epochs and is often less than one: the run is mapped onto the `recipe_epochs` its
        phases were set for, so each keeps its share (DINO's 50-of-1000-epoch warm-up spans 5% of the budget)."""
        planned = getattr(self, "_schedule_length", None)
        if not planned or not self.recipe_epochs:
            return float(self.current_epoch)
        return self.recipe_epochs * self.global_step / planned

    def _total_steps(self) -> int:
        """Optimiser steps in the whole run, for the LR and momentum schedules.

        Computed from the loader's length rather than `trainer.estimated_stepping_batches`, which
        would set the loader up before a resumed run restores the loader's state."""
        if getattr(self, "_schedule_length", None):  # laid out by the trainer (a time budget: train/budget.py)
            return self._schedule_length
        if self.cfg.get("max_steps"):
            return int(self.cfg["max_steps"])
        if not hasattr(self, "_total_steps_cache"):
            t = self.trainer
            max_steps = t.max_steps if t.max_steps and t.max_steps > 0 else 0
            by_epochs = steps_per_epoch(t) * (t.max_epochs or 0)
            candidates = [n for n in (max_steps, by_epochs) if n > 0]
            if not candidates:
                raise ValueError("cannot lay out the LR and momentum schedules: the training loader has no length and "
                                 "no step limit is set; pass max_steps to the Trainer (trainer.max_steps)")
            self._total_steps_cache = min(candidates)
        return self._total_steps_cache

    def set_schedule_length(self, steps: int) -> None:
        """Lay the LR and momentum schedules out over `steps` optimiser steps from now on (a time budget re-plans
        while training, train/budget.py): the cosine of the LR (after its warm-up) and the EMA momentum end there."""
        self._schedule_length = max(1, int(steps))
        if self._trainer is None:
            return
        for config in self.trainer.lr_scheduler_configs:  # timm's cosine: t_initial steps after the warm-up
            sched = config.scheduler
            if hasattr(sched, "t_initial"):
                sched.t_initial = max(1, self._schedule_length - int(getattr(sched, "warmup_t", 0)))
