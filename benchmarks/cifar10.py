"""CIFAR-10 benchmark: pretrain with autossl, then k-NN top-1 on held-out images; optionally the
same method trained by lightly in the same invocation, and a random-init baseline.

    python benchmarks/cifar10.py --method byol --steps 200 --reference lightly

Prints one JSON line per run (autossl, lightly, random-init) and a ratio line ours/lightly.
See benchmarks/README.md for the measured numbers and what each field means.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from autossl.backbones import create_backbone  # noqa: E402
from autossl.data import make_dataloader  # noqa: E402
from autossl.methods import get_method  # noqa: E402
from autossl.train.budget import TimeBudget  # noqa: E402

from _common import (DEFAULT_CACHE, DEFAULT_TARBALL, PeakRSS, StepClock, bank_subset, benchmark_datasets,  # noqa: E402
                     emit, knn_top1, load_average, ratio)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="byol")
    p.add_argument("--backbone", default="resnet18", help="any autossl backbone; ResNets get the CIFAR stem at 32 px")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--steps", type=int, help="optimiser updates (default 200)")
    run.add_argument("--epochs", type=float, help="passes over the training split (sets --steps)")
    run.add_argument("--budget-minutes", type=float, help="train ours for this long; lightly then runs as many steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-views", type=int, default=2)
    p.add_argument("--train-size", type=int, default=32,
                   help="pixel size of the training views, both sides (k-NN always sees 32 px images)")
    p.add_argument("--train-dir", help="image folder (class sub-folders) to pretrain on and use as the k-NN bank")
    p.add_argument("--test-dir", help="image folder (class sub-folders) to classify by k-NN")
    p.add_argument("--tarball", default=str(DEFAULT_TARBALL), help="CIFAR-10 JPEG tarball (when no --train-dir)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="where the tarball is extracted once")
    p.add_argument("--holdout", type=int, default=5000, help="images held out (seeded, per class) as the test split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--precision", default="bf16-mixed", help="Lightning precision for ours: 32, bf16-mixed, 16-mixed")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--forward-views", default="concat", choices=["concat", "per_view"])
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    p.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes (both sides)")
    p.add_argument("--batched-views", action=argparse.BooleanOptionalAction, default=True,
                   help="ours: augment whole batches at once (autossl.data.batch_views) instead of per image")
    p.add_argument("--optimizer", help="default: the method's own (LARS for the four joint-embedding methods)")
    p.add_argument("--lr", type=float, help="base learning rate at batch 256 (scaled linearly); default: the method's")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-steps", type=int, help="linear LR warm-up (default 10%% of the steps)")
    p.add_argument("--baseline", default="random", choices=["random", "none"])
    p.add_argument("--reference", default="none", choices=["none", "lightly"])
    p.add_argument("--reference-precision", default="32", choices=["32", "bf16-mixed"],
                   help="lightly's loop in fp32 (as documented) or under bf16 autocast + channels_last")
    p.add_argument("--eval-precision", default="bf16-mixed", choices=["32", "bf16-mixed"],
                   help="feature extraction for k-NN (the same for every model)")
    p.add_argument("--knn-bank-size", type=int, default=0,
                   help="k-NN bank: a seeded, class-balanced subset of this many training images (0: all; quick runs)")
    p.add_argument("--skip-knn", action="store_true", help="throughput only (for lever measurements)")
    p.add_argument("--warmup-measure", type=int, default=3, help="steps left out of the steady-state throughput")
    p.add_argument("--log-every", type=int, default=0, help="print the loss every N steps")
    p.add_argument("--save-backbone", metavar="FILE",
                   help="also save our trained backbone (safetensors) for checking with Eval_knn (benchmarks/check_eval_knn.py)")
    p.add_argument("--out", help="also append the JSON lines to this file")
    return p.parse_args(argv)


class ClockCallback(pl.Callback):
    """Ticks the step clock after every optimiser step."""

    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.tick()


def resolve_recipe(args, steps: int) -> dict:
    """The optimiser settings both sides use: the method's defaults unless overridden."""
    defaults = get_method(args.method).defaults
    return dict(optimizer=args.optimizer or defaults.get("optimizer", "lars"),
                lr=args.lr if args.lr is not None else defaults.get("lr", 0.3),
                weight_decay=args.weight_decay if args.weight_decay is not None else defaults.get("weight_decay", 1e-5),
                warmup_steps=args.warmup_steps if args.warmup_steps is not None else max(1, steps // 10),
                momentum_base=defaults.get("momentum_base", 0.99))


def train_ours(args, train_ds, steps: int, recipe: dict, device: str, clock: StepClock):
    pl.seed_everything(args.seed, verbose=False)
    model = get_method(args.method)(
        backbone=args.backbone, image_size=32, num_views=args.num_views, max_steps=steps,
        optimizer=recipe["optimizer"], lr=recipe["lr"], weight_decay=recipe["weight_decay"],
        warmup_steps=recipe["warmup_steps"], forward_views=args.forward_views,
        channels_last=args.channels_last, compile=args.compile, seed=args.seed)
    loader = make_dataloader(train_ds, preset="cifar10", num_views=args.num_views, batch_size=args.batch_size,
                             image_size=args.train_size,
                             num_workers=args.num_workers, seed=args.seed,
                             batched_views=args.batched_views)
    callbacks = [ClockCallback(clock)]
    if args.budget_minutes:  # the library's budget mode: measures the step time, lays the schedules out over it
        callbacks.append(TimeBudget(args.budget_minutes))
    if args.log_every:
        callbacks.append(LossPrinter(args.log_every))
    trainer = pl.Trainer(accelerator=device, devices=1, max_steps=-1 if args.budget_minutes else steps,
                         precision=args.precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=callbacks, max_time=None)
    trainer.fit(model, loader)
    return model.backbone


class LossPrinter(pl.Callback):
    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            loss = trainer.callback_metrics.get("train_loss_step")
            print(f"  autossl step {trainer.global_step} loss {float(loss):.4f}", flush=True)


def record(args, impl: str, steps: int, train_len: int, precision: str, clock: StepClock | None, wall_s: float,
           rss: PeakRSS | None, knn: float | None, eval_s: float) -> dict:
    ips, ips_cpu = clock.rates() if clock else (None, None)
    return {"impl": impl, "method": args.method, "backbone": args.backbone,
            "epochs": round(steps * args.batch_size / train_len, 3), "steps": steps, "batch_size": args.batch_size,
            "num_views": args.num_views, "train_size": args.train_size, "precision": precision,
            "num_workers": args.num_workers,
            "wall_s": round(wall_s, 1), "images_per_s": ips, "images_per_cpu_s": ips_cpu,
            "peak_rss_mb": rss.mb if rss else None, "knn_top1": knn, "eval_s": round(eval_s, 1),
            "load_avg": load_average()}


def evaluate(args, backbone, train_ds, test_ds, preset: str, device: str) -> tuple[float | None, float]:
    if args.skip_knn:
        return None, 0.0
    start = time.perf_counter()
    bank = bank_subset(train_ds, args.knn_bank_size, args.seed)
    acc = knn_top1(backbone, bank, test_ds, preset, device, bf16=args.eval_precision == "bf16-mixed")
    return acc, time.perf_counter() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    train_ds, test_ds = benchmark_datasets(args)
    per_epoch = len(train_ds) // args.batch_size
    steps = args.steps or (max(1, round(args.epochs * per_epoch)) if args.epochs else 200)
    if args.budget_minutes:
        steps = None  # TimeBudget plans (and re-plans) the steps from the measured step time
    recipe = resolve_recipe(args, 200 if args.budget_minutes else steps)
    print(f"# {args.method} on {len(train_ds)} train / {len(test_ds)} test images, recipe {recipe}, "
          f"threads {torch.get_num_threads()}, load {load_average()}", flush=True)

    clock = StepClock(args.batch_size, args.warmup_measure)
    start = time.perf_counter()
    with PeakRSS() as rss:
        ours = train_ours(args, train_ds, steps, recipe, device, clock)
    wall = time.perf_counter() - start
    steps = clock.steps
    if args.save_backbone:
        from autossl.backbones import save

        save(ours, args.save_backbone)
    knn, eval_s = evaluate(args, ours, train_ds, test_ds, "cifar10", device)
    mine = record(args, "autossl", steps, len(train_ds), args.precision, clock, wall, rss, knn, eval_s)
    emit(mine, args.out)

    if args.reference == "lightly":
        from lightly_reference import build_reference, train_reference

        pl.seed_everything(args.seed, verbose=False)  # the same initial backbone as ours
        backbone = create_backbone(args.backbone, image_size=32)
        ref = build_reference(args.method, backbone, backbone.num_features, recipe["momentum_base"], args.train_size)
        ref_clock = StepClock(args.batch_size, args.warmup_measure)
        start = time.perf_counter()
        with PeakRSS() as ref_rss:
            ref_backbone = train_reference(
                ref, train_ds, steps=steps, batch_size=args.batch_size, optimizer=recipe["optimizer"], lr=recipe["lr"],
                weight_decay=recipe["weight_decay"], warmup_steps=recipe["warmup_steps"],
                num_workers=args.num_workers, device=device, bf16=args.reference_precision == "bf16-mixed",
                seed=args.seed, clock=ref_clock, log_every=args.log_every)
        ref_wall = time.perf_counter() - start
        ref_knn, ref_eval_s = evaluate(args, ref_backbone, train_ds, test_ds, "imagenet", device)
        theirs = record(args, "lightly", steps, len(train_ds), args.reference_precision, ref_clock, ref_wall, ref_rss,
                        ref_knn, ref_eval_s)
        emit(theirs, args.out)
        emit({"ratio": "autossl/lightly", "method": args.method, "steps": steps,
              "throughput": ratio(mine["images_per_s"], theirs["images_per_s"]),
              "throughput_per_cpu_s": ratio(mine["images_per_cpu_s"], theirs["images_per_cpu_s"]),
              "knn_top1": ratio(knn, ref_knn), "knn_top1_diff": (round(knn - ref_knn, 4) if knn is not None
                                                                 and ref_knn is not None else None),
              "precision": f"{args.precision} vs {args.reference_precision}"}, args.out)

    if args.baseline == "random" and not args.skip_knn:
        emit(random_init_record(args, train_ds, test_ds, device), args.out)


def random_init_record(args, train_ds, test_ds, device: str) -> dict:
    """k-NN of the initialisation both runs started from. It depends on nothing trained, so it is
    cached (keyed by everything it depends on) and a repeated benchmark skips its 50k-image pass."""
    key = {"backbone": args.backbone, "seed": args.seed, "bank": args.knn_bank_size, "eval": args.eval_precision,
           "torch": torch.__version__, "train": [len(train_ds), str(train_ds.files[0]), str(train_ds.files[-1])],
           "test": [len(test_ds), str(test_ds.files[0]), str(test_ds.files[-1])]}
    cache = Path(args.cache_dir) / "random_init_knn.jsonl"
    if cache.exists():
        for line in cache.read_text().splitlines():
            entry = json.loads(line)
            if entry["key"] == key:
                # the number depends only on the key; the labels describe this invocation
                return {**entry["record"], "method": args.method, "batch_size": args.batch_size,
                        "train_size": args.train_size, "cached": True, "load_avg": load_average()}
    pl.seed_everything(args.seed, verbose=False)
    random_backbone = create_backbone(args.backbone, image_size=32).to(device)
    knn, eval_s = evaluate(args, random_backbone, train_ds, test_ds, "cifar10", device)
    rec = record(args, "random-init", 0, len(train_ds), args.eval_precision, None, 0.0, None, knn, eval_s)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "a") as f:
        f.write(json.dumps({"key": key, "record": rec}) + "\n")
    return rec


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
