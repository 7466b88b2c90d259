"""Exact resume under DDP: a 2-process (gloo, CPU) `autossl pretrain` run resumed from a mid-epoch checkpoint ends
with the same bits as the uninterrupted run: every state-dict tensor, the optimiser and the scheduler, compared with
torch.equal on the final checkpoints (rank 0 writes them; every rank must have continued from the right place for
the final weights to match, since DDP averages both processes' gradients).

What it needs beyond one process: the checkpoint (written by rank 0) holds the data position in the global order,
which each process's DistributedSampler splits, and one random state, which is every process's: random masks draw
for the global batch on every process and keep their own rows (core.distributed.rand_rows), so the processes'
generators stay in step. FCMAE: random masks every step; 24 images in global batches of 8 (3 steps an epoch),
resumed after step 2 (mid-epoch) and after step 4 (mid-epoch of the second), 6 steps in all.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_image
from test_exact_resume import _assert_same_bits

STEPS, STOPS = 6, (2, 4)


def _pretrain(cwd: Path, images: Path, name: str, *extra: str) -> str:
    args = ["method=fcmae", "model.backbone=convnextv2_atto", "model.params.decoder_dim=16", "data.dataset=folder",
            f"data.path={images}", "data.image_size=16", "data.num_views=1", "data.batch_size=4",
            "data.num_workers=0", "data.val_split=0", "trainer.precision=32", "trainer.max_epochs=100",
            f"trainer.max_steps={STEPS}", "trainer.progress_bar=false", "trainer.accelerator=cpu",
            "trainer.devices=2", "trainer.strategy=ddp", "checkpoint.every_n_epochs=null",
            "checkpoint.every_n_steps=2", "checkpoint.keep_last=5", "logging.tensorboard=false", f"name={name}",
            *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "autossl", "pretrain", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


def _final_state(path: Path) -> dict:
    ckpt = torch.load(path, weights_only=True)
    sched = ckpt["lr_schedulers"][0] if ckpt.get("lr_schedulers") else {}
    return {"step": ckpt["global_step"], "model": ckpt["state_dict"], "optimizer": ckpt["optimizer_states"][0],
            "scheduler": {k: v for k, v in sched.items() if not callable(v)}, "rng": ckpt["autossl"]["rng"]}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_two_process_run_resumed_mid_epoch_ends_with_the_same_bits(tmp_path):
    for i in range(24):
        write_image(tmp_path / "imgs" / f"{i:02d}.png", size=(16, 16), seed=i)
    _pretrain(tmp_path, tmp_path / "imgs", "straight")
    runs = tmp_path / "checkpoints"
    straight = _final_state(runs / "straight" / "last.ckpt")
    assert straight["step"] == STEPS
    for k in STOPS:  # a run that was killed after step k: only its step-k checkpoint survives
        folder = runs / f"from{k}"
        folder.mkdir()
        for suffix in ("", ".sha256"):
            shutil.copy(runs / "straight" / f"step{k:07d}.ckpt{suffix}", folder / f"step{k:07d}.ckpt{suffix}")
        assert torch.load(folder / f"step{k:07d}.ckpt", weights_only=True)["global_step"] == k
        log = _pretrain(tmp_path, tmp_path / "imgs", f"from{k}", "resume=true")  # the same command, resumed
        assert f"resuming from{k} from checkpoints/from{k}/step{k:07d}.ckpt" in log, log[-2000:]
        resumed = _final_state(folder / "last.ckpt")
        _assert_same_bits(straight, resumed, f"2 processes, resumed after step {k}")
