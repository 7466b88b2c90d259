"""Shared pieces of the benchmarks: the CIFAR-10 JPEG folder and its held-out split, k-NN
evaluation of a backbone, and the meters (steady-state throughput, peak RSS) both sides use."""
from __future__ import annotations

import json
import os
import platform
import random
import tarfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Sequence

import psutil
import torch
import torch.nn as nn

from autossl.data import ImageFolderDataset, make_eval_loader
from autossl.data.images import list_images
from autossl.evaluate.features import extract_features as autossl_features
from autossl.evaluate.knn import knn_predict

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TARBALL = REPO.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"
DEFAULT_CACHE = Path(os.environ.get("AUTOSSL_CACHE", Path.home() / ".cache" / "autossl")) / "cifar10-jpeg"


# ---- data ---------------------------------------------------------------------------------------
def extract_cifar10(tarball: Path = DEFAULT_TARBALL, cache: Path = DEFAULT_CACHE) -> Path:
    """Unpack the JPEG tarball once into `cache`; returns the folder holding the class folders."""
    root = cache / "train"
    done = cache / ".extracted"
    if done.exists() and root.is_dir():
        return root
    if not Path(tarball).is_file():
        raise FileNotFoundError(f"CIFAR-10 tarball not found: {tarball}; pass --tarball PATH or --train-dir/--test-dir")
    cache.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(cache, filter="data")
    if not root.is_dir():
        raise FileNotFoundError(f"{tarball} has no train/ folder; expected train/<class>/<n>.jpg")
    done.touch()
    return root


def holdout_split(root: Path, holdout: int = 5000, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Seeded, class-stratified hold-out: `holdout` files (an equal share per class) become the
    test split, the rest the training split. Only file lists; nothing is copied."""
    files = list_images(root)
    by_class: dict[str, list[Path]] = {}
    for f in files:
        by_class.setdefault(f.relative_to(root).parts[0], []).append(f)
    rng = random.Random(seed)
    per_class = holdout // max(1, len(by_class))
    train, test = [], []
    for name in sorted(by_class):
        group = list(by_class[name])
        rng.shuffle(group)
        test += group[:per_class]
        train += group[per_class:]
    return sorted(train), sorted(test)


def benchmark_datasets(args) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """(train, test) image-folder datasets from --train-dir/--test-dir or the held-out tarball split."""
    if args.train_dir or args.test_dir:
        if not (args.train_dir and args.test_dir):
            raise SystemExit("give both --train-dir and --test-dir (or neither, to split the CIFAR-10 tarball)")
        return ImageFolderDataset(args.train_dir), ImageFolderDataset(args.test_dir)
    root = extract_cifar10(Path(args.tarball), Path(args.cache_dir))
    train_files, test_files = holdout_split(root, args.holdout, args.seed)
    return ImageFolderDataset(root, files=train_files), ImageFolderDataset(root, files=test_files)


def bank_subset(dataset: ImageFolderDataset, size: int, seed: int = 0) -> ImageFolderDataset:
    """A seeded subset of `size` images with an equal share per class (0 or >= len: the dataset)."""
    if not size or size >= len(dataset):
        return dataset
    by_class: dict[int, list[Path]] = {}
    for f, y in zip(dataset.files, dataset.targets):
        by_class.setdefault(y, []).append(f)
    rng = random.Random(seed + 1)
    per_class = max(1, size // len(by_class))
    files = [f for y in sorted(by_class) for f in rng.sample(by_class[y], min(per_class, len(by_class[y])))]
    return ImageFolderDataset(dataset.root, files=sorted(files))


# ---- evaluation ---------------------------------------------------------------------------------
def autocast(device: str, bf16: bool):
    return torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16 else nullcontext()


def extract_features(encoder: nn.Module, dataset, preset: str, device: str, bf16: bool = True,
                     batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of clean (resized + normalised) 32 px images, in eval mode and channels_last:
    autossl's own extraction (what `Eval_knn` uses), on the benchmark's eval loader."""
    loader = make_eval_loader(dataset, preset=preset, image_size=32, batch_size=batch_size, num_workers=0)
    return autossl_features(encoder, loader, device, bf16=bf16, channels_last=True)


def knn_top1(encoder: nn.Module, train_ds, test_ds, preset: str, device: str, bf16: bool = True,
             k: int = 200, temperature: float = 0.1) -> float:
    """Weighted cosine k-NN top-1 (k=200, T=0.1) of the test images against the training bank."""
    bank, bank_y = extract_features(encoder, train_ds, preset, device, bf16)
    query, query_y = extract_features(encoder, test_ds, preset, device, bf16)
    num_classes = int(max(bank_y.max(), query_y.max())) + 1
    pred = knn_predict(query, bank, bank_y, num_classes, k=k, temperature=temperature)
    return float((pred[:, 0] == query_y).float().mean())


# ---- meters -------------------------------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU time of this process and its live children (data-loader workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


class StepClock:
    """Timestamps (wall and CPU) after each optimiser step. Steady state excludes the first
    `warmup` steps; each measured interval includes fetching the next batch (data loading)."""

    def __init__(self, batch_size: int, warmup: int = 3):
        self.batch_size, self.warmup = batch_size, warmup
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def tick(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(cpu_seconds())

    @property
    def steps(self) -> int:
        return len(self.wall)

    def rates(self) -> tuple[float | None, float | None]:
        """(images per wall second, images per CPU second) in steady state."""
        w = min(self.warmup, max(0, self.steps - 2))
        if self.steps - w < 2:
            return None, None
        images = (self.steps - 1 - w) * self.batch_size
        wall = self.wall[-1] - self.wall[w]
        cpu = self.cpu[-1] - self.cpu[w]
        return images / wall, (images / cpu if cpu > 0 else None)


class PeakRSS:
    """Peak resident memory of this process plus its children while the block runs (sampled)."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mb(self) -> float:
        return round(self.peak / 2**20, 1)


def emit(record: dict, out: str | None) -> None:
    """Print one JSON line (and append it to `out`)."""
    line = json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()})
    print(line, flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(line + "\n")


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_model() -> str:
    """The CPU's model name: sessions draw different machines, and a row's steps, and even a random network's
    k-NN score, differ between them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn: Callable, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


__all__: Sequence[str] = ["extract_cifar10", "holdout_split", "benchmark_datasets", "extract_features", "knn_top1",
                          "StepClock", "PeakRSS", "emit", "ratio", "load_average", "cpu_model", "timed", "autocast"]
