"""`trainer.budget_minutes` (train/budget.py), with budgets of seconds: the run stops when its wall time is spent,
the LR schedule ends with it whatever the step time (re-planned from measured steps), and a resumed run spends only
what is left."""
from __future__ import annotations

import time

import pytorch_lightning as pl
import torch

from autossl.data import make_dataloader
from autossl.methods import SimCLR
from autossl.train import compose, pretrain
from autossl.train.budget import TimeBudget

from conftest import TINY, quiet_trainer

BUDGET_S = 3.0


class SlowSteps(pl.Callback):
    """A slower machine: every step costs `seconds` more."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def _train(digits, tmp_path, slow: float):
    pl.seed_everything(0, verbose=False)
    model = SimCLR(**TINY, optimizer="adamw", lr=1e-3, scale_lr=False, warmup_steps=0)
    budget = TimeBudget(BUDGET_S / 60, measure_steps=2, replan_every=2)
    trainer = quiet_trainer(tmp_path, max_steps=-1, max_epochs=-1, callbacks=[SlowSteps(slow), budget])
    loader = make_dataloader(digits, batch_size=16, image_size=16, preset="mnist", num_workers=0, seed=0)
    start = time.monotonic()
    trainer.fit(model, loader)
    return trainer, budget, time.monotonic() - start


def test_the_budget_ends_the_run_and_its_lr_schedule_on_a_fast_and_a_slow_machine(tmp_path, mnist_arrays):
    runs = {slow: _train(mnist_arrays, tmp_path / str(slow), slow) for slow in (0.0, 0.15)}
    for slow, (trainer, budget, wall) in runs.items():
        assert budget.stopped_by_budget, slow
        assert BUDGET_S <= budget.spent() < BUDGET_S + 2.5, (slow, budget.spent())  # at most a step or two over
        assert wall < BUDGET_S + 30, wall  # start-up included
        # the cosine was laid out over the budget: the schedule's LR at the last step is near 0, where the provisional
        # plan (10**6 steps) would leave it at its 1e-3 peak (read from the schedule, not the optimiser, whose LR is
        # the one set after the step before: on a loaded machine only a few steps fit in the budget)
        sched = trainer.lr_scheduler_configs[0].scheduler
        assert sched.t_initial == budget.planned - sched.warmup_t
        lr = sched._get_lr(trainer.global_step - 1)[0]
        assert lr < 0.3e-3, (slow, lr, trainer.global_step, budget.planned)
        assert abs(budget.planned - trainer.global_step) <= max(2, 0.3 * trainer.global_step), (slow, budget.planned)
    fast, slow = runs[0.0][0].global_step, runs[0.15][0].global_step
    assert slow < fast, (fast, slow)  # fewer steps bought on the slower machine, each schedule still complete


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
