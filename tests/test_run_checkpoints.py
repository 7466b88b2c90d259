"""Nothing a user made is lost: `autossl pretrain` checkpoints while it trains, a SIGKILL at any moment leaves
an intact `last.ckpt` to resume from, a damaged one is detected by its checksum, and a killed writer's
temporary files are cleaned up."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autossl.train.run_checkpoints import is_intact, remove_stale_temporaries, resume_checkpoint, sha256_of

from conftest import write_image


def _args(folder: Path, name: str, **overrides) -> list[str]:
    args = {"method": "simclr", "data.dataset": "folder", "data.path": str(folder), "data.image_size": 16,
            "data.batch_size": 4, "data.num_workers": 0, "data.val_split": 0, "trainer.progress_bar": "false",
            "trainer.precision": 32, "model.params.proj_hidden_dim": 16, "model.params.proj_output_dim": 8,
            "logging.tensorboard": "false", "name": name, **overrides}
    return [f"{k}={v}" for k, v in args.items()]


@pytest.fixture
def images(tmp_path) -> Path:
    for i in range(16):
        write_image(tmp_path / "imgs" / f"{i}.png", size=(16, 16), seed=i)
    return tmp_path / "imgs"


def _steps(folder: Path) -> list[int]:
    return sorted(int(p.stem[4:]) for p in folder.glob("step*.ckpt"))


def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path, images):
    run = tmp_path / "checkpoints" / "kill"
    cmd = [sys.executable, "-m", "autossl", "pretrain"]
    proc = subprocess.Popen(cmd + _args(images, "kill", **{"trainer.max_steps": 400, "checkpoint.every_n_steps": 2}),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "step0000004.ckpt.sha256").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no handler runs: what is on disk is all there is
    proc.wait(timeout=60)
    killed_at = torch.load(run / "last.ckpt", weights_only=True)["global_step"]
    assert killed_at >= 4 and is_intact(run / "last.ckpt")
    assert killed_at < 400
    assert not list(run.glob("last-v*.ckpt"))  # one last.ckpt, never a versioned duplicate

    resumed = subprocess.run(cmd + _args(images, "kill", resume="true", **{
        "trainer.max_steps": killed_at + 2, "checkpoint.every_n_steps": 1, "checkpoint.keep_last": 100}),
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after {killed_at + 2} steps" in resumed.stdout
    # it continued: only the two new steps were saved (a run that ignored the checkpoint would save 1, 2, ...)
    assert [s for s in _steps(run) if s > killed_at] == [killed_at + 1, killed_at + 2]
    assert min(_steps(run)) >= killed_at - 2
    assert torch.load(run / "last.ckpt", weights_only=True)["global_step"] == killed_at + 2


def test_keep_last_prunes_and_every_file_has_its_checksum(tmp_path, images):
    out = subprocess.run([sys.executable, "-m", "autossl", "pretrain"] + _args(images, "keep", **{
        "trainer.max_steps": 6, "checkpoint.every_n_steps": 1, "checkpoint.keep_last": 3}),
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "checkpoints" / "keep"
    assert _steps(run) == [4, 5, 6]
    for p in list(run.glob("step*.ckpt")) + [run / "last.ckpt"]:
        assert is_intact(p) and (run / f"{p.name}.sha256").is_file()
    assert sha256_of(run / "last.ckpt") == sha256_of(run / "step0000006.ckpt")
    assert not list(run.glob(".*.tmp"))


def test_a_damaged_last_checkpoint_falls_back_to_the_newest_intact_one(tmp_path):
    for step in (2, 4):
        path = tmp_path / f"step{step:07d}.ckpt"
        torch.save({"global_step": step}, path)
        (tmp_path / f"{path.name}.sha256").write_text(f"{sha256_of(path)}  {path.name}\n")
    last = tmp_path / "last.ckpt"
    os.link(tmp_path / "step0000004.ckpt", last)
    (tmp_path / "last.ckpt.sha256").write_text((tmp_path / "step0000004.ckpt.sha256").read_text())
    assert resume_checkpoint(tmp_path) == last

    last.unlink()  # the newest is damaged too: a flipped byte in a copy of it
    data = bytearray((tmp_path / "step0000004.ckpt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    (tmp_path / "step0000004.ckpt").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="damaged"):
        assert resume_checkpoint(tmp_path) == tmp_path / "step0000002.ckpt"
    for p in tmp_path.glob("*.ckpt"):
        p.unlink()
    assert resume_checkpoint(tmp_path) is None


def test_a_killed_writers_temporary_files_are_removed(tmp_path, images):
    run = tmp_path / "checkpoints" / "tmpfiles"
    run.mkdir(parents=True)
    stale = run / ".step0000003.ckpt.4242.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert remove_stale_temporaries(run) == [stale] and not stale.exists()
    stale.write_bytes(b"half a checkpoint")
    out = subprocess.run([sys.executable, "-m", "autossl", "pretrain"] + _args(images, "tmpfiles", **{
        "trainer.max_steps": 1}), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not stale.exists() and (run / "last.ckpt").is_file()
