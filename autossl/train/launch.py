"""`autossl launch`: the training `autossl pretrain` runs, submitted to SLURM as a job that requeues itself when
its time runs out or it is preempted, and each time resumes from the run's last checkpoint.

submitit submits, Lightning only reads the ranks inside the job. submitit writes the sbatch script and pickles
the callable (no hand-written bash), knows the job id and log files at once, and on the warning signal asks the
callable for the next job's callable (`checkpoint()`), then `scontrol requeue`s the same job id, counting
timeouts. Lightning has no submission side: with its SLURM environment alone a user writes the script, and its
auto-requeue saves an `hpc_ckpt_<n>.ckpt` from inside the signal handler, mid-step, without a checksum, beside
our checkpoints, and on restart resumes from that file in preference to `ckpt_path`. So in the job Lightning's
SLURMEnvironment gives ranks and addresses with `auto_requeue=False`.

The requeue, step by step:
1. `#SBATCH --signal=USR2@<launch.signal_delay_s>`: SLURM sends USR2 that long before the time limit (some
   clusters also on preemption).
2. RequeueOnSignal (below) turns it into "stop after this step", on every rank at the same step; RunCheckpoints
   then writes `last.ckpt` there, as for Ctrl-C.
3. After `fit`, PretrainJob hands the signal to submitit's handler: it calls `PretrainJob.checkpoint()`, which
   returns the same training with `resume=true`, dumps it as the job's pickle, requeues the job and exits.
4. The requeued job loads that pickle: `pretrain` resumes from `last.ckpt` (the newest intact step file if
   `last.ckpt` is damaged).
A job SLURM requeues on its own (preemption with PreemptMode=REQUEUE, a node failure; `#SBATCH --requeue`) runs
its first pickle again; it sees SLURM_RESTART_COUNT > 0 and resumes too. `scancel` (SIGTERM) stops the run
cleanly through GracefulStop and does not requeue.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.environments import SLURMEnvironment
from submitit import SlurmExecutor
from submitit.core.utils import FailedSubmissionError, UncompletedJobError
from submitit.helpers import Checkpointable, DelayedSubmission
from submitit.slurm.slurm import SlurmJobEnvironment

from .checkpoint import check_writable
from .config import ConfigError
from .run import pretrain, run_dir
from .run_checkpoints import resume_checkpoint

PATH_KEYS = ("checkpoint.dir", "logging.dir", "data.path", "data.root", "data.val_path")


def requeue_signal() -> signal.Signals:
    """The signal sbatch's --signal sends before the time limit: submitit's (USR2 unless SUBMITIT_PREEMPT_SIGNAL)."""
    return getattr(signal, "SIG" + SlurmJobEnvironment.USR_SIG)


def resources(c: dict) -> tuple[int, int]:
    """(processes per node, GPUs per node) from a resolved config: one process per device, as Lightning expects
    under SLURM (ntasks-per-node = devices)."""
    t, lc = c["trainer"], c["launch"]
    devices, gpus, cpu = t["devices"], lc["gpus_per_node"], str(t["accelerator"]) == "cpu"
    tasks = len(devices) if isinstance(devices, list) else (gpus or 1) if devices in ("auto", -1) else int(devices)
    gpus = (0 if cpu else tasks) if gpus is None else gpus
    if gpus and cpu:
        raise ConfigError(f"launch.gpus_per_node={gpus} with trainer.accelerator=cpu: the GPUs would sit idle; "
                          f"set launch.gpus_per_node=0")
    if gpus and gpus != tasks:
        raise ConfigError(f"launch.gpus_per_node={gpus} but trainer.devices={devices} ({tasks} processes per node): "
                          f"under SLURM each process drives one GPU; set them equal")
    if int(lc["signal_delay_s"]) >= 60 * int(lc["timeout_min"]):
        raise ConfigError(f"launch.signal_delay_s={lc['signal_delay_s']} must be shorter than launch.timeout_min="
                          f"{lc['timeout_min']} ({60 * int(lc['timeout_min'])} s)")
    return tasks, gpus


def job_config(cfg: DictConfig) -> dict:
    """The config the job trains with: resolved (the job composes nothing), paths absolute, and
    trainer.devices = processes per node."""
    c = OmegaConf.to_container(cfg, resolve=True)
    c["trainer"]["devices"] = resources(c)[0]
    for key in PATH_KEYS:
        section, name = key.split(".")
        if c[section].get(name):
            c[section][name] = str(Path(c[section][name]).expanduser().resolve())
    return c


def job_folder(c: dict) -> Path:
    """launch.folder, else <logging.dir>/<name>/slurm: the job script, the pickled callable and the logs."""
    return Path(c["launch"]["folder"] or Path(c["logging"]["dir"]) / str(c["name"]) / "slurm").expanduser().resolve()


class _Executor(SlurmExecutor):
    """submitit's SLURM executor without its check for `srun` where the job is submitted: the script runs srun
    on the compute nodes; here only sbatch is needed (launch() checks for it) and a dry run needs neither."""

    @classmethod
    def affinity(cls) -> int:
        return 2


def make_executor(c: dict, folder: Path) -> SlurmExecutor:
    lc = c["launch"]
    tasks, gpus = resources(c)
    ex = _Executor(folder=folder, max_num_timeout=int(lc["max_timeouts"]))
    # --requeue: the job may go back to the queue (submitit's `scontrol requeue`, SLURM's own after preemption or
    # a node failure) also where the cluster's default is JobRequeue=0. open-mode=append (submitit's): a requeued
    # job appends to the same log files.
    params: dict[str, Any] = dict(job_name=str(c["name"]).replace("/", "_"), nodes=int(c["trainer"]["num_nodes"]),
                                  ntasks_per_node=tasks, time=int(lc["timeout_min"]),
                                  signal_delay_s=int(lc["signal_delay_s"]), additional_parameters={"requeue": True})
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos"):
        if lc[key] is not None:
            params[key] = str(lc[key])
    if lc["cpus_per_task"]:
        params["cpus_per_task"] = int(lc["cpus_per_task"])
    if lc["mem_gb"]:
        gb = float(lc["mem_gb"])
        params["mem"] = f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"
    if lc["setup"]:
        params["setup"] = [str(line) for line in lc["setup"]]
    ex.update_parameters(**params)
    return ex


def launch(cfg: DictConfig, dry_run: bool = False) -> dict:
    """Submit `pretrain(cfg)` as a SLURM job that requeues itself. Everything is checked before submitting.
    Returns {job_id, folder, log, script}; a dry run returns the script's text and submits nothing."""
    c = job_config(cfg)
    folder = job_folder(c)
    executor = make_executor(c, folder)
    if dry_run or c["launch"]["dry_run"]:  # the text submit() would write (submitit 1.5's own method, tested)
        return {"job_id": None, "folder": str(folder), "log": None,
                "script": executor._make_submission_file_text(executor._submitit_command_str, "dry-run")}
    if shutil.which("sbatch") is None:
        raise FileNotFoundError("sbatch not found on PATH: run autossl launch where SLURM jobs are submitted "
                                "(a login node), or add --dry-run to see the job script")
    ckpt_dir = check_writable(Path(c["checkpoint"]["dir"]) / str(c["name"]))
    check_writable(folder)
    stale = None if c["resume"] else fingerprint(resume_checkpoint(ckpt_dir))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):  # submitit prints sbatch's stderr; it goes into our one line instead
            job = executor.submit(PretrainJob(c, stale))
    except (UncompletedJobError, FailedSubmissionError, OSError) as e:
        detail = " ".join((str(e) or err.getvalue()).split()) or type(e).__name__
        raise RuntimeError(f"sbatch refused the job: {detail}") from None
    return {"job_id": str(job.job_id), "folder": str(folder), "log": str(job.paths.stdout),
            "script": str(job.paths.submission_file)}


def fingerprint(path: Path | None) -> list | None:
    """Which checkpoint file this is (name, inode, mtime, size): a save writes a new file under the name."""
    if path is None:
        return None
    st = path.stat()
    return [path.name, st.st_ino, st.st_mtime_ns, st.st_size]


class RequeueOnSignal(pl.Callback):
    """The warning signal during training: finish the current step on every rank, stop, and let RunCheckpoints
    write `last.ckpt` (a step boundary, never mid-update); PretrainJob then hands the signal to submitit."""

    def __init__(self, signum: int | None = None):
        self.signum = signum or requeue_signal()
        self.received: int | None = None
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            self._previous, self._installed = signal.signal(self.signum, self._handle), True
        except ValueError:  # not the main thread: submitit's own handler stays
            pass

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # SLURM signals every rank, not necessarily between the same two steps: stop when any rank has it, all
        # at this step (one scalar all-reduce per step under DDP; nothing on one process)
        if trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            self.received = self.received or self.signum
            trainer.should_stop = True

    def restore(self) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed = False

    def hand_over(self, step: int) -> None:
        """The signal, now that `last.ckpt` is written, to the handler that was there before (submitit's:
        checkpoint(), scontrol requeue, exit)."""
        pl.utilities.rank_zero_info(f"\n{signal.Signals(self.signum).name} at step {step}: wrote last.ckpt; "
                                    f"requeueing the job to resume from it")
        if callable(self._previous):
            self._previous(self.signum, None)


class PretrainJob(Checkpointable):
    """What the SLURM job runs: `pretrain` on the job's resolved config (`config`, a plain dict). `stale` is the
    checkpoint that was in the run folder at submission with resume=false: an older run's, never resumed from."""

    def __init__(self, config: dict, stale: list | None = None):
        self.config, self.stale = config, stale

    def wrote_checkpoint(self) -> bool:
        """The run folder holds an intact checkpoint that this launch wrote."""
        found = resume_checkpoint(run_dir(OmegaConf.create(self.config)))
        return found is not None and fingerprint(found) != self.stale

    def __call__(self) -> dict:
        cfg = OmegaConf.create(self.config)
        if not cfg.resume and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 and self.wrote_checkpoint():
            cfg.resume = True  # SLURM requeued this job on its own (preemption, node failure): continue the run
        # Launched by submitit, the requeue is submitit's: Lightning's SLURM auto-requeue would register its own
        # handler (SIGUSR1 by default), save an hpc_ckpt mid-step and requeue a second time, and a restart would
        # resume from that file rather than last.ckpt. Outside SLURM (a local run) Lightning needs no environment.
        plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
        stop = RequeueOnSignal()
        try:
            summary = pretrain(cfg, callbacks=[stop], plugins=plugins)
        finally:
            stop.restore()
        if stop.received is not None:
            stop.hand_over(summary["steps"])  # under submitit: does not return on rank 0 (the job is requeued)
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Called by submitit's signal handler: the next job's callable, the same training, resuming from the run's
        newest checkpoint when this launch wrote one (else it starts again: nothing was saved yet)."""
        config = copy.deepcopy(self.config)
        config["resume"] = bool(config["resume"]) or self.wrote_checkpoint()
        return DelayedSubmission(PretrainJob(config, self.stale))
