"""Preemption under DDP: one SIGTERM sent to one rank of a 2-process (gloo, CPU) run stops every rank after the
same step, writes exactly one checkpoint there, every process exits, and a resume continues from that step.

Without the coordination (GracefulStop's all-reduce of the flag after every step) the signalled rank stops
alone and the other waits in its next step's collective until the process-group timeout (30 min): the run
hangs, which the timeout here turns into a failure."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from autossl.train import compose, pretrain
from conftest import write_image

# The training `autossl pretrain` runs, plus a callback that records each rank's pid and every step it finishes.
# Lightning starts rank 1 by running this same script again.
SCRIPT = '''
import os
import sys
from pathlib import Path

import pytorch_lightning as pl

from autossl.train import compose, pretrain


class Trace(pl.Callback):
    def __init__(self, folder):
        self.folder = Path(folder)

    def _write(self, trainer, kind, text, mode="w"):
        with open(self.folder / f"rank{trainer.global_rank}.{kind}", mode) as f:
            f.write(text)

    def on_train_start(self, trainer, pl_module):
        self._write(trainer, "pid", str(os.getpid()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._write(trainer, "steps", f"{trainer.global_step}\\n", "a")

    def on_train_end(self, trainer, pl_module):
        self._write(trainer, "end", str(trainer.global_step))


if __name__ == "__main__":
    summary = pretrain(compose(sys.argv[2:]), callbacks=[Trace(sys.argv[1])])
    print(f"rank {os.environ.get('LOCAL_RANK', '0')}: interrupted={summary['interrupted']} steps={summary['steps']}")
'''


def _args(images: Path, **overrides) -> list[str]:
    args = {"method": "simclr", "data.dataset": "folder", "data.path": str(images), "data.image_size": 16,
            "data.batch_size": 4, "data.num_workers": 0, "data.val_split": 0, "trainer.precision": 32,
            "trainer.max_epochs": 1000, "trainer.max_steps": 1000, "trainer.progress_bar": "false",
            "trainer.accelerator": "cpu", "trainer.devices": 2, "trainer.strategy": "ddp",
            "checkpoint.every_n_epochs": "null", "model.params.proj_hidden_dim": 16,
            "model.params.proj_output_dim": 8, "logging.tensorboard": "false", "name": "preempt", **overrides}
    return [f"{k}={v}" for k, v in args.items()]


def _lines(path: Path) -> list[int]:
    return [int(s) for s in path.read_text().split()] if path.exists() else []


# rank 1: a process Lightning started (its own handling would stop that rank alone); rank 0: the launching process
@pytest.mark.parametrize("rank", [1, pytest.param(0, marks=pytest.mark.slow)])
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_one_checkpoint(tmp_path, monkeypatch, rank):
    for i in range(16):
        write_image(tmp_path / "imgs" / f"{i}.png", size=(16, 16), seed=i)
    script, trace = tmp_path / "train.py", tmp_path / "trace"
    script.write_text(SCRIPT)
    trace.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # its own session: whatever happens, the test ends every process it started (rank 0 and the rank it launches)
    proc = subprocess.Popen([sys.executable, str(script), str(trace), *_args(tmp_path / "imgs")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)  # ends at EOF: when every
    reader.start()  # process holding the pipe (both ranks) has exited
    try:
        deadline = time.time() + 900  # start-up alone (imports, 2 processes) took minutes on a shared, loaded CPU
        while len(_lines(trace / f"rank{rank}.steps")) < 2:  # mid-run: that rank has finished two steps
            assert proc.poll() is None, "".join(log)[-3000:]
            assert time.time() < deadline, "the run did not reach step 2 in time"
            time.sleep(0.1)
        os.kill(int((trace / f"rank{rank}.pid").read_text()), signal.SIGTERM)  # that one process only
        proc.wait(timeout=240)
        reader.join(timeout=60)
        assert not reader.is_alive(), "a rank is still running after the launching process exited"
    except subprocess.TimeoutExpired:
        pytest.fail("the ranks did not all stop after the signal (one waits for the other)")
    finally:
        if proc.poll() is None or reader.is_alive():
            os.killpg(proc.pid, signal.SIGKILL)
    out = "".join(log)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]

    ends = [int((trace / f"rank{r}.end").read_text()) for r in (0, 1)]
    stopped = ends[0]
    assert ends == [stopped, stopped] and stopped >= 2, out[-3000:]
    assert [_lines(trace / f"rank{r}.steps")[-1] for r in (0, 1)] == [stopped, stopped]
    assert f"stopped by signal SIGTERM at step {stopped}" in out
    assert out.count(f"interrupted=True steps={stopped}") == 2  # both ranks know why they stopped
    run = tmp_path / "checkpoints" / "preempt"
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["last.ckpt", f"step{stopped:07d}.ckpt"]  # one checkpoint
    assert torch.load(run / "last.ckpt", weights_only=True)["global_step"] == stopped
    assert not list(run.glob(".*.tmp"))

    # the resume continues at that step (one process here: the checkpoint is the same whoever reads it)
    monkeypatch.chdir(tmp_path)
    summary = pretrain(compose(_args(tmp_path / "imgs", **{
        "trainer.devices": 1, "trainer.strategy": "auto", "trainer.max_steps": stopped + 2, "resume": "true",
        "checkpoint.every_n_steps": 1, "checkpoint.keep_last": 10})))
    assert summary["steps"] == stopped + 2 and not summary["interrupted"]
    assert sorted(p.name for p in run.glob("step*.ckpt")) == [f"step{s:07d}.ckpt" for s in
                                                              (stopped, stopped + 1, stopped + 2)]
