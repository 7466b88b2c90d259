"""lightly's implementation of a method, written as lightly's documentation examples write it
(examples/pytorch/<method>.py): lightly's heads, losses and transforms, a PIL image folder, and a
plain PyTorch loop. Only the backbone, batch size, optimiser, schedule and step count are taken
from the benchmark, so that both sides train the same network for the same number of updates.

A benchmark dependency only: nothing in `autossl` imports lightly.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from autossl.optim import build_optimizer, build_scheduler, scaled_lr, split_decay

from _common import StepClock, autocast

METHODS = ("simclr", "byol", "barlowtwins", "vicreg")


class PILFolder(Dataset):
    """Our file list read the way torchvision's ImageFolder (and lightly's examples) read it:
    PIL, converted to RGB, then lightly's transform."""

    def __init__(self, dataset, transform: Callable):
        self.files, self.targets, self.transform = dataset.files, dataset.targets, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB")), self.targets[i]


@dataclass
class Reference:
    model: nn.Module
    transform: Callable
    step: Callable  # (model, views, step, total_steps) -> loss


class Encoder(nn.Module):
    """backbone -> projection head (and predictor), as in lightly's examples."""

    def __init__(self, backbone: nn.Module, projection_head: nn.Module, prediction_head: nn.Module | None = None):
        super().__init__()
        self.backbone, self.projection_head, self.prediction_head = backbone, projection_head, prediction_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projection_head(self.backbone(x).flatten(start_dim=1))
        return self.prediction_head(z) if self.prediction_head is not None else z


def build_reference(method: str, backbone: nn.Module, feat_dim: int = 512, momentum_base: float = 0.99,
                    input_size: int = 32) -> Reference:
    """lightly's model, transform and per-step loss for `method` (CIFAR-10 settings of lightly's docs:
    input_size=32 and no Gaussian blur)."""
    from lightly import loss as L
    from lightly.models.modules import heads as H
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import (BYOLTransform, BYOLView1Transform, BYOLView2Transform, SimCLRTransform,
                                    VICRegTransform)
    from lightly.utils.scheduler import cosine_schedule

    byol_views = BYOLTransform(view_1_transform=BYOLView1Transform(input_size=input_size, gaussian_blur=0.0),
                               view_2_transform=BYOLView2Transform(input_size=input_size, gaussian_blur=0.0))
    if method == "simclr":
        model = Encoder(backbone, H.SimCLRProjectionHead(feat_dim, 512, 128))
        criterion = L.NTXentLoss()
        return Reference(model, SimCLRTransform(input_size=input_size, cj_strength=0.5, gaussian_blur=0.0),
                         lambda m, v, s, n: criterion(m(v[0]), m(v[1])))
    if method == "barlowtwins":
        model = Encoder(backbone, H.BarlowTwinsProjectionHead(feat_dim, 2048, 2048))
        criterion = L.BarlowTwinsLoss()
        return Reference(model, byol_views, lambda m, v, s, n: criterion(m(v[0]), m(v[1])))
    if method == "vicreg":
        model = Encoder(backbone, H.VICRegProjectionHead(input_dim=feat_dim, hidden_dim=2048, output_dim=2048,
                                                         num_layers=2))
        criterion = L.VICRegLoss()
        return Reference(model, VICRegTransform(input_size=input_size, gaussian_blur=0.0),
                         lambda m, v, s, n: criterion(m(v[0]), m(v[1])))
    if method == "byol":
        model = Encoder(backbone, H.BYOLProjectionHead(feat_dim, 1024, 256), H.BYOLPredictionHead(256, 1024, 256))
        model.backbone_momentum = copy.deepcopy(model.backbone)
        model.projection_head_momentum = copy.deepcopy(model.projection_head)
        deactivate_requires_grad(model.backbone_momentum)
        deactivate_requires_grad(model.projection_head_momentum)
        criterion = L.NegativeCosineSimilarity()

        def byol_step(m, v, step, total):
            tau = cosine_schedule(step, total, momentum_base, 1.0)
            update_momentum(m.backbone, m.backbone_momentum, m=tau)
            update_momentum(m.projection_head, m.projection_head_momentum, m=tau)
            p0, p1 = m(v[0]), m(v[1])
            with torch.no_grad():
                z0 = m.projection_head_momentum(m.backbone_momentum(v[0]).flatten(start_dim=1))
                z1 = m.projection_head_momentum(m.backbone_momentum(v[1]).flatten(start_dim=1))
            return 0.5 * (criterion(p0, z1) + criterion(p1, z0))

        return Reference(model, byol_views, byol_step)
    raise SystemExit(f"--reference lightly supports {', '.join(METHODS)}; got --method {method}")


def train_reference(ref: Reference, dataset, *, steps: int, batch_size: int, optimizer: str, lr: float,
                    weight_decay: float, warmup_steps: int, num_workers: int, device: str, bf16: bool,
                    seed: int, clock: StepClock, log_every: int = 0) -> nn.Module:
    """lightly's example loop, for exactly `steps` optimiser updates (the loader is cycled)."""
    model = ref.model.to(device)
    if bf16:  # the same CPU levers ours gets: bf16 autocast and channels_last
        model = model.to(memory_format=torch.channels_last)
    loader = DataLoader(PILFolder(dataset, ref.transform), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        generator=torch.Generator().manual_seed(seed))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay, no_decay = split_decay(named)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = build_optimizer(optimizer, groups, scaled_lr(lr, batch_size), weight_decay)
    sched = build_scheduler(opt, steps, warmup_steps)
    model.train()
    step = 0
    while step < steps:
        for views, _ in loader:
            views = [v.to(device, non_blocking=True) for v in views]
            if bf16:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            with autocast(device, bf16):
                loss = ref.step(model, views, step, steps)
            loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
            sched.step_update(num_updates=step)
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(f"lightly reference: loss is {loss.item()} at step {step}")
            clock.tick()
            if log_every and step % log_every == 0:
                print(f"  lightly step {step}/{steps} loss {loss.item():.4f}", flush=True)
            if step >= steps:
                break
    return model.backbone
