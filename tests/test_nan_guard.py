"""The NaN guard beyond the loss (methods/guard.py): a step whose loss is finite but whose gradients are not is
skipped (no weight, optimiser state, EMA copy or queue entry moves) and counted; such steps in a row stop the
run in one line; a checkpoint whose weights are non-finite is never written."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from autossl.data import make_dataloader
from autossl.methods import MoCo, SimCLR
from autossl.methods.guard import MAX_NONFINITE_STEPS, any_nonfinite
from autossl.train.run_checkpoints import RunCheckpoints
from conftest import TINY, quiet_trainer

STEPS = 5


class NaNGradients:
    """At `nan_steps` the loss keeps its (finite) value but the gradient flowing back from it is NaN. With
    `skip_instead`, the reference: at those steps the forward runs, then nothing is updated (no backward)."""

    nan_steps: tuple = ()
    skip_instead = False

    def step(self, batch):
        out = super().step(batch)
        if self.global_step in self.nan_steps and not self.skip_instead:
            out["loss"].register_hook(lambda grad: grad * float("nan"))
        return out

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return None if self.skip_instead and self.global_step in self.nan_steps else loss


class NaNSimCLR(NaNGradients, SimCLR):
    pass


class NaNMoCo(NaNGradients, MoCo):
    pass


class States(pl.Callback):
    """A copy of the whole state dict after every step."""

    def __init__(self):
        self.states = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _model(cls, nan_steps=(), **kwargs):
    pl.seed_everything(0, verbose=False)
    model = cls(**TINY, max_steps=STEPS, seed=0, warmup_steps=1, **kwargs)
    model.nan_steps = tuple(nan_steps)
    return model


def _fit(model, mnist_arrays, tmp_path, **kwargs):
    loader = make_dataloader(mnist_arrays, batch_size=16, image_size=16, preset="mnist", num_workers=0, seed=0)
    trainer = quiet_trainer(tmp_path, **{"max_steps": STEPS, **kwargs})
    trainer.fit(model, loader)
    return trainer


def _finite(state: dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def test_the_check_finds_nan_and_inf_but_not_large_finite_values():
    module = type("Module", (), {"device": torch.device("cpu"), "_trainer": None})()
    assert any_nonfinite([torch.ones(3), torch.tensor([1.0, float("nan")])], module)
    assert any_nonfinite([torch.tensor([float("-inf"), 0.0], dtype=torch.bfloat16)], module)
    assert not any_nonfinite([torch.full((4,), 1e30)], module)  # its 2-norm overflows; every value is finite
    assert not any_nonfinite([None, torch.zeros(0), torch.arange(3), torch.randn(5)], module)


def test_a_step_with_nan_gradients_is_skipped_and_counted(mnist_arrays, tmp_path):
    guarded = _model(NaNSimCLR, nan_steps=(2,))  # the third step: finite loss, NaN gradients
    _fit(guarded, mnist_arrays, tmp_path / "guarded")
    reference = _model(NaNSimCLR, nan_steps=(2,))  # steps 0, 1, then no update at step 2, then 3, 4
    reference.skip_instead = True
    _fit(reference, mnist_arrays, tmp_path / "reference")

    assert guarded.nonfinite.skipped == 1 and reference.nonfinite.skipped == 0
    got, want = guarded.state_dict(), reference.state_dict()
    assert _finite(got)
    assert got.keys() == want.keys()
    for k in got:  # weights (LARS moved them at the 4 other steps), BatchNorm statistics, the probe
        assert torch.equal(got[k], want[k]), f"{k} differs from the run that skipped step 2"
    initial = _model(NaNSimCLR).state_dict()
    assert not torch.equal(got["backbone.model.conv1.weight"], initial["backbone.model.conv1.weight"])  # it trained


def test_a_skipped_step_moves_neither_the_ema_copy_nor_the_queue(mnist_arrays, tmp_path):
    model = _model(NaNMoCo, nan_steps=(2,), memory_bank=True, queue_size=64)
    states = States()
    _fit(model, mnist_arrays, tmp_path, callbacks=[states])
    assert model.nonfinite.skipped == 1 and _finite(model.state_dict())
    # what an update moves: parameters (online and EMA target) and the queue; BatchNorm statistics do change (the
    # forward ran), so they are left out
    moved = [n for n, _ in model.named_parameters()] + ["queue.items", "queue.ptr", "queue.filled"]
    assert any(n.startswith("target_") for n in moved)
    before, skipped, after = states.states[1], states.states[2], states.states[3]
    for k in moved:
        assert torch.equal(skipped[k], before[k]), f"{k} moved at the skipped step"
    for k in ("target_backbone.model.conv1.weight", "backbone.model.conv1.weight", "queue.items", "queue.ptr"):
        assert not torch.equal(after[k], skipped[k]), f"{k} did not move at the next step"


def test_gradients_that_are_always_nan_stop_the_run_in_one_line(mnist_arrays, tmp_path):
    model = _model(NaNSimCLR, nan_steps=range(100))
    with pytest.raises(FloatingPointError) as err:
        _fit(model, mnist_arrays, tmp_path, max_steps=50)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"gradients are non-finite at {MAX_NONFINITE_STEPS} steps in a row" in msg
    assert "no checkpoint was written yet" in msg and "Lower optimizer.lr" in msg
    assert model.nonfinite.skipped == MAX_NONFINITE_STEPS
    initial = _model(NaNSimCLR).state_dict()
    for k, v in model.state_dict().items():
        if k.split(".")[0] != "probe" and "running_" not in k and "num_batches" not in k:
            assert torch.equal(v, initial[k]), f"{k} moved although every step was skipped"


class PoisonAt(pl.Callback):
    """A weight turns NaN after step `step` (what a bad update or a corrupted buffer would leave)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.projector.parameters()).view(-1)[0] = float("nan")


def test_a_checkpoint_is_never_written_with_nan_weights(mnist_arrays, tmp_path):
    folder = tmp_path / "ckpt"
    saves = RunCheckpoints(folder, every_n_steps=1, every_n_epochs=None, keep_last=10)
    model = _model(NaNSimCLR)
    with pytest.raises(FloatingPointError) as err:  # checkpoint callbacks run after the others: saved after poisoning
        _fit(model, mnist_arrays, tmp_path, callbacks=[PoisonAt(3), saves], enable_checkpointing=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert "the weights are non-finite at step 3 (projector." in msg and "not written" in msg
    assert str(folder / "last.ckpt") in msg
    assert sorted(p.name for p in folder.glob("step*.ckpt")) == [f"step{s:07d}.ckpt" for s in (1, 2)]
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 and _finite(last["state_dict"])
