"""Linear probe.

Default (fast) protocol: the frozen backbone's features are computed once (features.py), standardised,
and a grid of linear classifiers (learning rate x L2 penalty) is trained on them *at the same time*,
one pass over the cached features per epoch. The configuration with the best accuracy on a seeded,
stratified 10% validation cut of the training set is retrained on the whole training set and scored
on the test set. Thousands of epochs-worth of steps take seconds.

Classic protocol (`linear_probe_augmented`, for papers): random-resized-crop + flip every epoch,
features recomputed through the frozen backbone, SGD with momentum and a cosine schedule.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from .features import as_features, default_device, extract_features
from .splits import eval_loader

LRS = (1e-3, 1e-2, 1e-1)
WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)


@dataclass
class LinearProbe:
    """A trained probe: standardisation statistics and one linear layer."""
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # [D, C]
    bias: torch.Tensor  # [C]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float().to(self.mean.device) - self.mean) / self.std
        return x @ self.weight + self.bias


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0, keepdim=True)
    std = x.std(0, keepdim=True).nan_to_num(0.0).clamp_min(1e-6)  # constant features stay constant (zero)
    return mean, std


def train_linear_grid(x: torch.Tensor, y: torch.Tensor, num_classes: int, configs: list[tuple[float, float]], *,
                      epochs: int = 100, batch_size: int | None = 1024, seed: int = 0,
                      device: str | torch.device | None = None) -> list[LinearProbe]:
    """Train one linear classifier per (lr, l2) config on the same features, all at once: the G
    weight matrices sit side by side in one [D, G*C] matrix, so each step is a single matmul.
    Adam (written out here so that every config keeps its own lr), cosine decay, loss
    cross-entropy + l2/2 * ||W||^2 per config. `batch_size=None` trains full-batch."""
    device = torch.device(device) if device is not None else default_device()
    gen = torch.Generator().manual_seed(seed)
    mean, std = _standardise(x)
    xs = ((x.float() - mean) / std).to(device)
    y = y.long().to(device)
    n, d = xs.shape
    g, c = len(configs), num_classes
    lrs = torch.tensor([lr for lr, _ in configs], device=device)
    l2 = torch.tensor([wd for _, wd in configs], device=device)
    w = torch.zeros(d, g, c, device=device, requires_grad=True)
    b = torch.zeros(g, c, device=device, requires_grad=True)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in (w, b)]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    bs = n if not batch_size or batch_size >= n else batch_size
    steps_per_epoch = math.ceil(n / bs)
    total = max(1, epochs * steps_per_epoch)
    step = 0
    with _few_threads_if_tiny(device, bs * d * g * c):
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(device) if bs < n else None
            for s in range(steps_per_epoch):
                idx = order[s * bs:(s + 1) * bs] if order is not None else slice(None)
                xb, yb = xs[idx], y[idx]
                logits = (xb @ w.view(d, g * c)).view(-1, g, c) + b  # [B, G, C]
                # mean cross-entropy per config, summed over configs (their gradients do not interact)
                ce = F.cross_entropy(logits.permute(0, 2, 1), yb[:, None].expand(-1, g), reduction="mean") * g
                loss = ce + 0.5 * (l2 * w.pow(2).sum(dim=(0, 2))).sum()
                grads = torch.autograd.grad(loss, (w, b))
                step += 1
                lr_now = lrs * 0.5 * (1 + math.cos(math.pi * (step - 1) / total))
                with torch.no_grad():
                    for p, grad, (m, v), shape in zip((w, b), grads, moments, ((1, g, 1), (g, 1))):
                        m.mul_(beta1).add_(grad, alpha=1 - beta1)
                        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                        m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
                        p.sub_(lr_now.view(shape) * m_hat / (v_hat.sqrt() + eps))
    w, b = w.detach(), b.detach()
    return [LinearProbe(mean.to(device), std.to(device), w[:, i].contiguous(), b[i].clone()) for i in range(g)]


@contextmanager
def _few_threads_if_tiny(device: torch.device, macs_per_step: int):
    """On the CPU, steps this small are dominated by thread start-up (and, on a busy machine, by
    threads waiting for each other): one thread runs them several times faster."""
    if device.type != "cpu" or macs_per_step > 50_000_000 or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _val_cut(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Stratified train/validation indices of the training features, or None when too few labels."""
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(y, return_counts=True)
    n_val = int(round(len(y) * fraction))
    if n_val < len(classes) or len(y) - n_val < len(classes) or counts.min() < 2:
        return None
    return train_test_split(np.arange(len(y)), test_size=n_val, random_state=seed, stratify=y)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int, *,
                 lrs: tuple[float, ...] = LRS, weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
                 val_fraction: float = 0.1, epochs: int = 100, batch_size: int | None = 1024, seed: int = 0,
                 device: str | torch.device | None = None) -> tuple[torch.Tensor, dict]:
    """Test-set logits [N_test, C] of the probe picked on validation, and the protocol settings."""
    configs = [(float(lr), float(wd)) for lr in lrs for wd in weight_decays]
    if not configs:
        raise ValueError("the linear-probe grid is empty; give at least one lr and one weight decay")
    kw = dict(epochs=epochs, batch_size=batch_size, seed=seed, device=device)
    cut = _val_cut(train_y.numpy(), val_fraction, seed) if len(configs) > 1 else None
    if cut is None:  # one config, or too few labels to hold out a validation set: take the middle of the grid
        best, val_acc = configs[len(configs) // 2], None
    else:
        tr, va = (torch.as_tensor(i) for i in cut)
        probes = train_linear_grid(train_x[tr], train_y[tr], num_classes, configs, **kw)
        accs = [(p(train_x[va]).argmax(1).cpu() == train_y[va]).float().mean().item() for p in probes]
        i = int(np.argmax(accs))  # ties go to the earliest (smallest lr, then smallest l2)
        best, val_acc = configs[i], accs[i]
    probe = train_linear_grid(train_x, train_y, num_classes, [best], **kw)[0]
    info = {"lr": best[0], "weight_decay": best[1], "val_accuracy": val_acc, "epochs": epochs,
            "batch_size": batch_size, "optimizer": "adam+cosine on standardised cached features",
            "grid": f"lr {list(lrs)} x l2 {list(weight_decays)}, picked on a {val_fraction:.0%} stratified validation cut"}
    return probe(test_x).cpu(), info


def linear_probe_augmented(encoder: nn.Module, train: Dataset, test: Dataset, num_classes: int, *, epochs: int = 10,
                           lr: float = 0.1, weight_decay: float = 0.0, batch_size: int = 256, image_size: int = 32,
                           preset: str | None = None, num_workers: int = 0, seed: int = 0, bf16: bool = False,
                           device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The classic protocol: frozen backbone (eval mode), augmented views every epoch, SGD(momentum 0.9)
    with cosine decay on a linear layer. Returns test logits, test labels and the settings."""
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    was_training = encoder.training
    home = next(encoder.parameters(), torch.empty(0)).device
    encoder = encoder.to(device).eval()
    loader = eval_loader(train, image_size=image_size, preset=preset, batch_size=batch_size, num_workers=num_workers,
                         augment=True, shuffle=True, seed=seed)
    with torch.no_grad():
        probe_x = next(iter(loader))["image"][:2].to(device)
        dim = as_features(encoder(probe_x)).shape[1]
    head = nn.Linear(dim, num_classes).to(device)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * len(loader)))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    for _ in range(epochs):
        for batch in loader:
            if len(batch["label"]) == 0:
                continue
            with torch.no_grad(), autocast:
                feats = as_features(encoder(batch["image"].to(device))).float()
            loss = F.cross_entropy(head(feats), batch["label"].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    test_loader = eval_loader(test, image_size=image_size, preset=preset, batch_size=batch_size, num_workers=num_workers)
    feats, labels = extract_features(encoder, test_loader, device=device, bf16=bf16)
    with torch.no_grad():
        logits = head(feats.to(device)).cpu()
    info = {"lr": lr, "weight_decay": weight_decay, "epochs": epochs, "batch_size": batch_size,
            "optimizer": "sgd(momentum 0.9)+cosine, random-resized-crop+flip, frozen backbone"}
    encoder.train(was_training).to(home)  # leave the caller's model as it was
    return logits, labels, info

