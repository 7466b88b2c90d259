"""`autossl launch` without a cluster: the sbatch script a fake `sbatch` receives, the requeue path (the warning
signal during training -> last.ckpt -> submitit's handler -> the next job resumes from it), and one-line errors
before anything is submitted."""
from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from submitit.core.job_environment import SignalHandler
from submitit.core.utils import DelayedSubmission, JobPaths
from submitit.slurm.slurm import SlurmJobEnvironment

import autossl.train.launch as launch_module
from autossl.cli.main import main
from autossl.train.launch import PretrainJob, fingerprint, requeue_signal
from autossl.train.run_checkpoints import resume_checkpoint

from conftest import write_image

TINY = ["method=simclr", "data.image_size=16", "data.batch_size=4", "data.num_workers=0", "data.val_split=0",
        "trainer.precision=32", "trainer.progress_bar=false", "model.params.proj_hidden_dim=16",
        "model.params.proj_output_dim=8", "logging.tensorboard=false", "name=slurm_run"]
RESOURCES = ["trainer.devices=2", "trainer.num_nodes=2", "launch.partition=gpu", "launch.cpus_per_task=6",
             "launch.timeout_min=120", "launch.mem_gb=32", "launch.account=proj", "launch.qos=high"]


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch, tmp_path):
    """As on a laptop: no SLURM job around the test, run from an empty folder."""
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _fake_sbatch(tmp_path: Path, monkeypatch, output: str = "Submitted batch job 4242", code: int = 0) -> Path:
    """An `sbatch` first on PATH that keeps the script it is given and answers like SLURM's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    keep, to = (f'cp "$1" "{tmp_path}/submitted.sh"', "") if code == 0 else ("", " >&2")  # errors on stderr
    sbatch.write_text(f'#!/bin/sh\n{keep}\nprintf \'%s\\n\' "{output}"{to}\nexit {code}\n')
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "submitted.sh"


def test_launch_submits_a_requeueable_job_script_through_sbatch(tmp_path, monkeypatch, capsys):
    submitted = _fake_sbatch(tmp_path, monkeypatch)
    assert main(["launch", *TINY, *RESOURCES]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "slurm_run" / "slurm"
    assert "submitted SLURM job 4242" in out and str(folder) in out and "4242_0_log.out" in out
    script = submitted.read_text()
    assert script == (folder / "4242_submission.sh").read_text()  # what sbatch got is what submitit keeps
    lines = set(script.splitlines())
    for flag in ("--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=2", "--cpus-per-task=6", "--time=120",
                 "--partition=gpu", "--account=proj", "--qos=high", "--mem=32GB", "--job-name=slurm_run",
                 "--signal=USR2@90",      # submitit's warning signal, 90 s before the time limit
                 "--requeue",             # the job may go back to the queue (scontrol requeue, preemption)
                 "--open-mode=append"):   # a requeued job appends to the same logs
        assert f"#SBATCH {flag}" in lines, (flag, script)
    command = [line for line in script.splitlines() if line.startswith("srun ")]
    assert len(command) == 1 and command[0].endswith(f"{sys.executable} -u -m submitit.core._submit {folder}")
    assert "export SUBMITIT_EXECUTOR=slurm" in lines
    assert main(["launch", *TINY, *RESOURCES, "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == script.strip()  # --dry-run shows exactly what sbatch would get

    # the job's entry point loads this pickle: our callable, with the resolved config the job trains with
    delayed = DelayedSubmission.load(folder / "4242_submitted.pkl")
    job = delayed.function
    assert isinstance(job, PretrainJob) and delayed.args == () and delayed._timeout_countdown == 20
    c = job.config
    assert c["trainer"]["devices"] == 2 and c["trainer"]["num_nodes"] == 2 and c["resume"] is False
    assert c["checkpoint"]["dir"] == str(tmp_path / "checkpoints") and c["name"] == "slurm_run"


def test_dry_run_prints_the_script_and_needs_no_slurm(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither sbatch nor srun
    assert main(["launch", *TINY, "launch.gpus_per_node=0", "launch.setup=[module load cuda]", "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --ntasks-per-node=1" in script and "#SBATCH --nodes=1" in script
    assert "gpus-per-node" not in script and "#SBATCH --requeue" in script and "module load cuda" in script
    assert not (tmp_path / "runs").exists() and not (tmp_path / "checkpoints").exists()  # nothing written


class SignalAt(pl.Callback):
    """Sends this process the requeue signal at the end of step `step`, as SLURM does near the time limit."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), requeue_signal())


def test_the_requeue_signal_saves_last_ckpt_and_the_next_job_resumes_from_it(tmp_path, monkeypatch):
    for i in range(16):
        write_image(tmp_path / "imgs" / f"{i}.png", size=(16, 16), seed=i)
    from autossl.train import compose

    # no periodic checkpoints: only the stop on the signal can write step 2
    cfg = compose([*TINY, "data.dataset=folder", f"data.path={tmp_path / 'imgs'}", "trainer.max_steps=4",
                   "checkpoint.every_n_epochs=null", "launch.gpus_per_node=0"])
    job = PretrainJob(launch_module.job_config(cfg))
    real_pretrain = launch_module.pretrain
    monkeypatch.setattr(launch_module, "pretrain", lambda cfg, callbacks, plugins: real_pretrain(
        cfg, [SignalAt(2)] + callbacks, plugins))

    # submitit's own handler for the signal, as its job entry point installs it; only `scontrol requeue` is faked
    folder = tmp_path / "runs" / "slurm_run" / "slurm"
    folder.mkdir(parents=True)
    paths = JobPaths(folder, job_id="4242", task_id=0)
    delayed = DelayedSubmission(job)
    delayed.set_timeout(120, 20)
    env = SlurmJobEnvironment()
    requeued: list[int] = []
    monkeypatch.setattr(env, "_requeue", lambda countdown: requeued.append(countdown))
    previous = signal.signal(requeue_signal(), SignalHandler(env, paths, delayed).checkpoint_and_try_requeue)
    try:
        with pytest.raises(SystemExit):  # submitit exits the job once it is requeued
            delayed.result()
    finally:
        signal.signal(requeue_signal(), previous)
    run = tmp_path / "checkpoints" / "slurm_run"
    assert torch.load(run / "last.ckpt", weights_only=True)["global_step"] == 2  # stopped after the step, saved
    assert requeued == [20]  # preempted, not timed out: the timeout countdown is untouched

    # the job's pickle now holds the next job: the same training, resuming from last.ckpt
    nxt = DelayedSubmission.load(paths.submitted_pickle)
    assert isinstance(nxt.function, PretrainJob) and nxt.function.config["resume"] is True
    assert {**nxt.function.config, "resume": False} == job.config
    nxt.function.config["checkpoint"].update(every_n_steps=1, keep_last=10)  # to see which steps it trains
    monkeypatch.setattr(launch_module, "pretrain", real_pretrain)
    summary = nxt.result()
    assert summary["steps"] == 4 and not summary["interrupted"]
    assert sorted(p.name for p in run.glob("step*.ckpt")) == [f"step000000{s}.ckpt" for s in (2, 3, 4)]  # continued

    # SLURM requeued the job on its own (preemption, node failure): the first pickle runs again and resumes
    seen = []
    monkeypatch.setattr(launch_module, "pretrain", lambda cfg, callbacks, plugins: seen.append(
        (cfg.resume, [type(p).__name__ for p in plugins], [getattr(p, "auto_requeue", None) for p in plugins]))
        or {"steps": 4})
    job()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # inside a SLURM job: Lightning's environment, its auto-requeue off
    job()
    PretrainJob(job.config, stale=fingerprint(resume_checkpoint(run)))()  # an older run's checkpoint: not resumed
    assert seen == [(False, [], []), (True, ["SLURMEnvironment"], [False]), (False, ["SLURMEnvironment"], [False])]


@pytest.mark.parametrize("args, message", [
    (["launch.timeout_min=0"], "launch.timeout_min must be an integer >= 1, got 0"),
    (["launch.gpus_per_node=abc"], "launch.gpus_per_node must be an integer >= 0 (or null), got 'abc'"),
    (["launch.mem_gb=-4"], "launch.mem_gb must be a positive number (or null), got -4"),
    (["launch.setup=5"], "launch.setup must be a list of shell lines, got 5"),
    (["launch.partiton=gpu"], "did you mean 'launch.partition'"),
    (["launch.nodes=2"], "use 'trainer.num_nodes'"),
    (["trainer.devices=2", "launch.gpus_per_node=4"], "under SLURM each process drives one GPU"),
    (["trainer.accelerator=cpu", "launch.gpus_per_node=1"], "set launch.gpus_per_node=0"),
    (["launch.timeout_min=1", "launch.signal_delay_s=90"], "must be shorter than launch.timeout_min=1"),
    (["--sbatch-missing"], "sbatch not found on PATH"),
    (["--sbatch-refuses"], "sbatch refused the job: sbatch: error: invalid partition specified: gpux"),
])
def test_bad_launches_fail_in_one_line_before_submitting(tmp_path, monkeypatch, capsys, args, message):
    if args == ["--sbatch-missing"]:
        monkeypatch.setenv("PATH", str(tmp_path))
        submitted, args = tmp_path / "submitted.sh", []
    elif args == ["--sbatch-refuses"]:
        _fake_sbatch(tmp_path, monkeypatch, "sbatch: error: invalid partition specified: gpux", code=1)
        args = ["launch.partition=gpux"]
        submitted = tmp_path / "nothing"
    else:
        submitted = _fake_sbatch(tmp_path, monkeypatch)
    assert main(["launch", *TINY, *args]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("autossl launch: error: ") and "\n" not in err and message in err, err
    assert not submitted.exists() and "Traceback" not in captured.out + captured.err
