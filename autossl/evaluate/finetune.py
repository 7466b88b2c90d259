"""Full fine-tuning: the whole network trains, with the modern recipe's parts from timm:
layer-wise lr decay (create_optimizer_v2(layer_decay=...)), warmup + cosine (CosineLRScheduler),
label smoothing, mixup/cutmix (timm.data.Mixup) and an EMA of the weights (ModelEmaV3).

Defaults are small (2 epochs) so that it runs on a CPU; papers use ~100 epochs.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .features import as_features, default_device
from .splits import eval_loader


class Classifier(nn.Module):
    """Backbone + linear head. `group_matcher` tells timm which depth every parameter sits at, so
    layer-wise lr decay scales the stem least and the head not at all."""

    def __init__(self, encoder: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(as_features(self.encoder(x)))

    def group_matcher(self, coarse: bool = False):
        from timm.models import group_parameters

        inner = getattr(self.encoder, "model", self.encoder)  # an autossl Backbone wraps a timm model
        prefix = "encoder.model." if inner is not self.encoder else "encoder."
        if hasattr(inner, "group_matcher"):
            depth = group_parameters(inner, inner.group_matcher(coarse=coarse), reverse=True)
        else:  # a module timm knows nothing about: the whole backbone is one layer below the head
            depth = {n: 0 for n, _ in inner.named_parameters()}
        top = max(depth.values(), default=-1) + 1

        def layer_of(name: str) -> int:
            return depth.get(name[len(prefix):], 0) if name.startswith(prefix) else top

        return layer_of


def finetune(encoder: nn.Module, train: Dataset, test: Dataset, num_classes: int, *, epochs: int = 2,
             batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.05, layer_decay: float | None = 0.75,
             warmup_epochs: float = 0.5, min_lr: float = 1e-6, label_smoothing: float = 0.1, mixup: float = 0.0,
             cutmix: float = 0.0, ema_decay: float | None = None, drop_path: float = 0.0, augment: bool = True,
             opt: str = "adamw",
             image_size: int = 32, preset: str | None = None, num_workers: int = 0, seed: int = 0,
             bf16: bool = False, device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Fine-tune a copy of `encoder` (the caller's model is left untouched); returns test logits, test labels
    and the settings."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    from timm.utils import ModelEmaV3

    if epochs < 1:
        raise ValueError(f"fine-tuning needs at least 1 epoch, got epochs={epochs}")
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    encoder = copy.deepcopy(encoder).to(device).requires_grad_(True)  # all of it: pretraining may have frozen parts
    set_drop_path(encoder, drop_path)
    loader = eval_loader(train, image_size=image_size, preset=preset, batch_size=batch_size, num_workers=num_workers,
                         augment=augment, shuffle=True, drop_last=len(train) > batch_size, seed=seed)
    with torch.no_grad():
        encoder.eval()
        dim = as_features(encoder(next(iter(loader))["image"][:2].to(device))).shape[1]
    model = Classifier(encoder, dim, num_classes).to(device)
    optimizer = create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=weight_decay, layer_decay=layer_decay)
    steps_per_epoch = max(1, len(loader))
    total = epochs * steps_per_epoch
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
    scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=min_lr, warmup_t=warmup,
                                  warmup_lr_init=min(min_lr, lr), t_in_epochs=False)
    mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing,
                num_classes=num_classes) if (mixup > 0 or cutmix > 0) else None
    criterion = SoftTargetCrossEntropy() if mix else nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    ema = ModelEmaV3(model, decay=ema_decay) if ema_decay else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    step = 0
    model.train()
    for _ in range(epochs):
        for batch in loader:
            x, y = batch["image"].to(device), batch["label"].to(device)
            if mix is not None and len(x) % 2:  # timm's Mixup pairs images: it needs an even batch
                x, y = x[:-1], y[:-1]
            if len(x) < 2:
                continue
            if mix is not None:
                x, y = mix(x, y)
            with autocast:
                loss = criterion(model(x).float(), y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"fine-tuning loss is {loss.item()} at step {step}; lower lr (now {lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
            if ema is not None:
                ema.update(model, step=step)
    final = ema.module if ema is not None else model
    logits, labels = predict(final, eval_loader(test, image_size=image_size, preset=preset, batch_size=max(batch_size, 256),
                                        num_workers=num_workers), device, bf16)
    info = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "layer_decay": layer_decay,
            "warmup_epochs": warmup_epochs, "label_smoothing": label_smoothing, "mixup": mixup, "cutmix": cutmix,
            "ema_decay": ema_decay, "drop_path": drop_path, "augment": augment, "optimizer": f"{opt}, warmup+cosine (timm)", "steps": step}
    return logits, labels, info


def set_drop_path(model: nn.Module, rate: float) -> int:
    """Stochastic depth for fine-tuning (ConvNeXt-V2, MAE): the residual branches' `drop_path*`
    slots (timm blocks hold an Identity there when built with rate 0) get DropPath with rates rising
    linearly from 0 to `rate` over the depth, timm's rule. Returns how many were set."""
    from timm.layers import DropPath

    slots = [(m, name) for m in model.modules() for name in ("drop_path", "drop_path1", "drop_path2")
             if isinstance(getattr(m, name, None), (nn.Identity, DropPath))]
    blocks = list(dict.fromkeys(m for m, _ in slots))
    for m, name in slots:
        i = blocks.index(m)
        setattr(m, name, DropPath(rate * i / max(1, len(blocks) - 1)) if rate > 0 else nn.Identity())
    return len(blocks)


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over a loader; unreadable images are left out of both."""
    model.eval()
    out, labels = [], []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in loader:
            if len(batch["label"]):
                out.append(model(batch["image"].to(device)).float().cpu())
                labels.append(batch["label"])
    return torch.cat(out), torch.cat(labels)
