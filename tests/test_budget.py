"""`trainer.budget_minutes` (train/budget.py), with budgets of seconds: the run stops when its time is spent, the LR
schedule ends with it whatever the step time (re-planned from measured steps), and a resumed run spends only what is
left. The schedule test runs on a clock whose steps cost a set time (exact plans, on a busy machine too); the
`autossl pretrain` test on the wall clock."""
from __future__ import annotations

import pytorch_lightning as pl
import torch

from autossl.data import make_dataloader
from autossl.methods import SimCLR
from autossl.train import compose, pretrain
from autossl.train.budget import TimeBudget

from conftest import TINY, quiet_trainer

BUDGET_S = 3.0


class StepClock(pl.Callback):
    """A machine on which every training step costs `seconds`, whatever else runs on the real one: the clock
    `TimeBudget` reads (placed before it, so a step has cost its time when the budget looks)."""

    def __init__(self, seconds: float):
        self.seconds, self.now = seconds, 0.0

    def __call__(self) -> float:
        return self.now

    def on_train_batch_end(self, *args) -> None:
        self.now += self.seconds


def _train(digits, tmp_path, seconds_per_step: float):
    pl.seed_everything(0, verbose=False)
    model = SimCLR(**TINY, optimizer="adamw", lr=1e-3, scale_lr=False, warmup_steps=0)
    clock = StepClock(seconds_per_step)
    budget = TimeBudget(BUDGET_S / 60, measure_steps=2, replan_every=2, clock=clock)
    trainer = quiet_trainer(tmp_path, max_steps=-1, max_epochs=-1, callbacks=[clock, budget])
    loader = make_dataloader(digits, batch_size=16, image_size=16, preset="mnist", num_workers=0, seed=0)
    trainer.fit(model, loader)
    return trainer, budget


def test_the_budget_ends_the_run_and_its_lr_schedule_on_a_fast_and_a_slow_machine(tmp_path, mnist_arrays):
    # steps of 1/8 s and 1/4 s (exact in binary): a 3-s budget buys exactly 24 and 12 of them
    for seconds, steps in ((0.125, 24), (0.25, 12)):
        trainer, budget = _train(mnist_arrays, tmp_path / str(seconds), seconds)
        assert budget.stopped_by_budget and budget.spent() == BUDGET_S, (seconds, budget.spent())
        assert trainer.global_step == steps and budget.planned == steps, (seconds, trainer.global_step, budget.planned)
        # the cosine was laid out over the budget: the schedule's LR at the last step is near 0, where the provisional
        # plan (10**6 steps) would leave it at its 1e-3 peak
        sched = trainer.lr_scheduler_configs[0].scheduler
        assert sched.t_initial == steps - sched.warmup_t
        assert sched._get_lr(steps - 1)[0] < 0.02e-3, (seconds, sched._get_lr(steps - 1))
        assert trainer.optimizers[0].param_groups[0]["lr"] < 0.02e-3  # and the optimiser followed it


def test_autossl_pretrain_with_a_budget_checkpoints_and_a_resumed_run_spends_what_is_left(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["method=simclr", "data.dataset=mnist", "data.image_size=16", "data.batch_size=16", "data.num_workers=0",
              "data.val_split=0", "trainer.progress_bar=false", "logging.tensorboard=false", "logging.csv=false",
              "model.params.proj_hidden_dim=32", "model.params.proj_output_dim=16", "name=budget"]
    first = pretrain(compose(common + [f"trainer.budget_minutes={BUDGET_S / 60}"]))
    ckpt = torch.load(tmp_path / "checkpoints" / "budget" / "last.ckpt", weights_only=True)
    state = ckpt["callbacks"]["TimeBudget"]
    assert ckpt["global_step"] == first["steps"] > 3
    assert BUDGET_S <= state["spent"] < BUDGET_S + 2.5
    assert abs(state["planned"] - first["steps"]) <= max(3, 0.3 * first["steps"]), (state, first["steps"])
    # resumed with a budget twice as long: it spends the other half, not a whole new budget
    second = pretrain(compose(common + [f"trainer.budget_minutes={2 * BUDGET_S / 60}", "resume=true"]))
    ckpt = torch.load(tmp_path / "checkpoints" / "budget" / "last.ckpt", weights_only=True)
    spent = ckpt["callbacks"]["TimeBudget"]["spent"]
    assert 2 * BUDGET_S <= spent < 2 * BUDGET_S + 2.5, spent
    assert second["steps"] > first["steps"]
    assert second["seconds"] < BUDGET_S + 20  # this run trained for about the half that was left
