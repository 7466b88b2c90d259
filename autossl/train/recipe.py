"""`recipe=auto`: the settings measured to give the most accuracy in a time budget, picked for the method, the
hardware and the image size. It is the default when `trainer.budget_minutes` is set; `recipe=none` turns it off.

Every pick names the measurement behind it (docs/budget.md). A key given on the command line is never changed:
the recipe sits between the experiment's values and the user's overrides. `autossl pretrain --cfg` prints the
picks and why, above the composed config.

Only what was measured is picked. On this project's CPU (2 cores, AVX-512 bf16) that is precision, memory format,
the view pipeline, the image cache, the view size, the optimiser, for the methods measured with it the
network (WRN-28-2 in place of a ResNet-18 that neither the command line nor the experiment chose), and for VICReg
from a pretrained start an LR warm-up. On a GPU no budget run has been measured yet, so only precision and memory
format are set there and the method keeps its optimiser.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..backbones import is_fixed_size
from .run import image_size_of


@dataclass(frozen=True)
class Hardware:
    device: str  # "cpu" or "cuda"
    bf16: bool  # bf16 matrix instructions (CPU: AVX-512 BF16 or AMX; GPU: Ampere or newer)
    cores: int

    def describe(self) -> str:
        return f"{self.device}, {self.cores} core{'s' * (self.cores != 1)}, {'bf16' if self.bf16 else 'no bf16'}"


@dataclass(frozen=True)
class Pick:
    key: str
    value: Any
    why: str
    model: bool = False  # changes the network itself: kept when an experiment chose it, not only the command line


def detect_hardware(accelerator: str = "auto") -> Hardware:
    cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    if cuda:
        return Hardware("cuda", bool(torch.cuda.is_bf16_supported()), usable_cores())
    try:
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bf16 = False
    return Hardware("cpu", bf16, usable_cores())


def usable_cores() -> int:
    """The cores this process may run on (a container's or `taskset`'s limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Methods measured with the budget optimiser, AdamW at a base LR of 2e-3 (1e-3 at batch 128): SimCLR against its own
# LARS (benchmarks/README.md: +11.3 points over random init against +6.0 at 300 steps), and the six seed methods each
# beating random initialisation with it in 5 minutes (docs/budget.md). The other methods keep their own optimiser.
ADAMW_MEASURED = {"simclr", "moco", "vicreg", "barlowtwins", "byol", "simsiam"}
# Methods measured with both networks at the same budget on a CPU, where WRN-28-2 won (docs/budget.md, levers): it
# takes 3.5-4x ResNet-18's steps in the same minutes. SimCLR: +7.4 k-NN points in 5 minutes, +14.3 in 20 (58.24%);
# MoCo: +2.9 in 5 minutes, 49.90% in 20. Not BYOL (it collapses on WRN-28-2) nor VICReg (below its ResNet-18 at 5 min).
WIDE_RESNET_MEASURED = {"simclr", "moco"}
DEFAULT_BACKBONE = "resnet18"  # global.yaml's: the recipe only replaces a backbone nobody chose
# Methods measured to unlearn a pretrained start under the budget optimiser, and a warm-up measured to stop it
# (docs/views_cifar10.md): VICReg on CIFAR-10 from a SimCLR ResNet-18 (k-NN 40.64%), 16 views, 10 minutes, ended 5.4
# k-NN points under its start at full LR from the first step (35.26%; its second seed 34.32%) and 0.2 under it
# with a warm-up of 0.05 epochs, 17 steps (40.48%, linear probe 52.36% against 48.56%). Barlow Twins and SimCLR
# held their start without one, so they were not measured with it.
PRETRAINED_WARMUP_MEASURED = {"vicreg"}


def pick_recipe(cfg: DictConfig, hw: Hardware) -> list[Pick]:
    """The settings for this run, each with the measurement it rests on."""
    picks: list[Pick] = []
    if hw.device == "cuda":
        picks.append(Pick("trainer.precision", "bf16-mixed" if hw.bf16 else "16-mixed",
                          "mixed precision on a GPU (no budget run measured on a GPU yet: the method keeps its optimiser)"))
        picks.append(Pick("trainer.channels_last", True, "tensor-core convolutions want NHWC"))
        return picks
    picks.append(Pick("trainer.precision", "bf16-mixed" if hw.bf16 else "32",
                      "bf16 autocast + channels_last: 2.1x fp32 at 32 px, 1.1x at 16 px (docs/budget.md)"
                      if hw.bf16 else "this CPU has no bf16 instructions: bf16 autocast would be slower than fp32"))
    picks.append(Pick("trainer.channels_last", True, "1.3x on its own, 2.1x with bf16 (benchmarks/README.md)"))
    picks.append(Pick("data.batched_views", True, "views of a whole batch at once: 9x cheaper than per image "
                                                  "(benchmarks/README.md)"))
    if hw.cores <= 4:  # the cache lives in the process that reads: loader processes would each fill (and lose) one
        picks.append(Pick("data.num_workers", 0, f"{hw.cores} cores: a loader process would take a core from the model; "
                                                 f"batched views cost ~1 ms per image"))
        picks.append(Pick("data.cache_images", True, "decoded once, kept as uint8: 19% less time per step from the "
                                                     "second epoch on (docs/budget.md, levers)"))
    small_rgb = _image_size(cfg) == 32 and str(cfg.data.dataset) != "mnist"
    if small_rgb and str(cfg.method) in WIDE_RESNET_MEASURED and str(cfg.model.backbone) == DEFAULT_BACKBONE:
        why = ("1.5M parameters, 4x ResNet-18's steps per minute: more k-NN on CIFAR-10 for this method at equal "
               "minutes (SimCLR +14.3 points in 20; docs/budget.md, levers)")
        picks.append(Pick("model.backbone", "wide_resnet28_2", why, model=True))
    if small_rgb and not is_fixed_size(str(cfg.model.backbone)):
        picks.append(Pick("data.view_size", 16, "16 px views of 32 px images: a quarter of the FLOPs, more k-NN per "
                                                "minute than 32 px views on CIFAR-10 (docs/budget.md, levers)"))
    if small_rgb and str(cfg.method) in PRETRAINED_WARMUP_MEASURED and cfg.model.get("pretrained"):
        picks.append(Pick("optimizer.warmup_epochs", 0.05, "a pretrained start: full LR from the first step, through "
                                                           "a fresh projector, unlearned it (VICReg, 16 views, 10 "
                                                           "minutes: 5.4 k-NN points under the start; 0.2 with this "
                                                           "warm-up; docs/views_cifar10.md)"))
    if str(cfg.method) in ADAMW_MEASURED:
        picks += [Pick("optimizer.name", "adamw", "AdamW moves a run of a few epochs at once, where LARS's large-batch "
                                                  "schedule needs hundreds (docs/budget.md, the optimiser)"),
                  Pick("optimizer.lr", 2e-3, "base LR at batch 256 (1e-3 at 128), measured with AdamW"),
                  Pick("optimizer.weight_decay", 1e-4, "measured with AdamW"),
                  Pick("data.batch_size", 128, "batch 256 scored 1-1.7 points lower in 5 minutes (docs/budget.md, "
                                               "levers)")]
    return picks


def _image_size(cfg: DictConfig) -> int | None:
    """The size the run trains at (`run.image_size_of`), None when a folder cannot be read yet (a missing folder
    fails later, in pretrain, in one line)."""
    try:
        return image_size_of(cfg)
    except (OSError, ValueError):
        return None


def apply_recipe(cfg: DictConfig, explicit: set[str], hw: Hardware | None = None,
                 experiment: set[str] = frozenset()) -> list[str]:
    """Set the recipe's picks in `cfg` (in place) except the `explicit` keys (the command line's) and, for a pick of
    the network itself, the keys the `experiment` set; returns the lines `--cfg` prints."""
    mode = cfg.get("recipe")
    if mode == "none" or (mode is None and not cfg.trainer.budget_minutes):
        return []
    hw = hw or detect_hardware(str(cfg.trainer.accelerator))
    cfg.recipe = "auto"
    budget = f"{cfg.trainer.budget_minutes:g}-minute budget" if cfg.trainer.budget_minutes else "run (no budget)"
    lines = [f"recipe=auto for {cfg.method}, a {budget}, {hw.describe()}:"]
    for pick in pick_recipe(cfg, hw):
        if pick.key in explicit or (pick.model and pick.key in experiment):
            lines.append(f"  {pick.key}: kept yours ({_shown(OmegaConf.select(cfg, pick.key))}); auto would pick "
                         f"{_shown(pick.value)}")
            continue
        OmegaConf.update(cfg, pick.key, pick.value, merge=False)
        lines.append(f"  {pick.key}={_shown(pick.value)}: {pick.why}")
    lines.append("  (recipe=none turns these off; any key on the command line overrides its pick)")
    return lines


def _shown(value: Any) -> str:
    """As on the command line: true/false, not Python's True/False."""
    return str(value).lower() if isinstance(value, bool) else str(value)


__all__ = ["Hardware", "Pick", "apply_recipe", "detect_hardware", "pick_recipe"]
