"""Masked image modelling on CIFAR-10: does FCMAE / MAE pretraining help fine-tuning?

For each model (FCMAE + ConvNeXt-V2-atto with the small-image stem, MAE + ViT-tiny with 4 px patches):

1. pretrain on the 45,000 training images of the seeded hold-out split (the 5,000 held-out images are
   never seen by pretraining) for a wall-clock budget: a few steps of a throw-away copy measure the
   step time, then a fresh model is built with `max_steps` = budget / step time, so the LR cosine
   ends where the budget does; the reconstruction figure of 8 held-out images is saved;
2. fine-tune the pretrained backbone AND a randomly initialised backbone of the same spec
   (`create_backbone(**method.backbone.spec)`) with identical settings and data (a seeded,
   class-balanced labelled subset of the training split), and report top-1 on the 5,000 held-out images.

    python benchmarks/masked_modelling.py --model both --pretrain-minutes 15 --finetune-epochs 3 \\
        --finetune-train-size 10000 --out docs/masked_modelling.json --figure-dir docs

Prints one JSON line per model and merges it into --out (a JSON object keyed by model).
See docs/masked_modelling.md for the measured numbers.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from autossl.backbones import create_backbone  # noqa: E402
from autossl.data import Augment, ImageFolderDataset, make_dataloader, make_eval_loader  # noqa: E402
from autossl.evaluate.finetune import finetune  # noqa: E402
from autossl.methods import FCMAE, MAE  # noqa: E402
from autossl.train.figures import save_reconstruction_figure  # noqa: E402

from _common import (DEFAULT_CACHE, DEFAULT_TARBALL, StepClock, bank_subset, benchmark_datasets,  # noqa: E402
                     cpu_seconds, emit, knn_top1, load_average)

# The two models, as the issue asks: method class, backbone and the method's own settings.
MODELS = {
    "fcmae": dict(cls=FCMAE, backbone="convnextv2_atto", channels_last=True,
                  kwargs=dict(mask_ratio=0.6, decoder_dim=512, decoder_depth=1)),
    "mae": dict(cls=MAE, backbone="vit_tiny", channels_last=False,
                kwargs=dict(mask_ratio=0.75, decoder_dim=256, decoder_depth=4, decoder_heads=8)),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="both", choices=["fcmae", "mae", "both"])
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the masked encoder for pretraining (FCMAE: 1.4x per step on a 2-core CPU, ~1 min to compile)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--pretrain-minutes", type=float, nargs="+",
                        help="pretraining wall-clock budget per model (default 1); two values: fcmae's, mae's")
    budget.add_argument("--pretrain-steps", type=int, nargs="+",
                        help="pretraining optimiser steps per model instead of minutes; two values: fcmae's, mae's")
    p.add_argument("--measure-steps", type=int, default=9,
                   help="steps of a throw-away copy that time a pretraining step (median; the first 3 left out)")
    p.add_argument("--batch-size", type=int, default=128, help="pretraining batch")
    p.add_argument("--pretrain-lr", type=float, default=1.5e-3,
                   help="base LR at batch 256 (scaled by batch/256); the papers' 1.5e-4 barely moves FCMAE's decoder in a few hundred steps (see docs/masked_modelling.md)")
    p.add_argument("--pretrain-weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-fraction", type=float, default=0.05, help="pretraining LR warm-up, fraction of the steps")
    p.add_argument("--fcmae-mask-ratio", type=float, default=0.6)
    p.add_argument("--fcmae-decoder-init-std", type=float, default=None,
                   help="FCMAE decoder conv init std (default: the reference's 1.0; 0.02 starts the loss near 1)")
    p.add_argument("--mae-mask-ratio", type=float, default=0.75)
    p.add_argument("--crop-scale", type=float, nargs=2, default=(0.2, 1.0), help="pretraining random-resized-crop scale")
    # fine-tuning: one setting, used for both arms (pretrained and random init) of a model
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--finetune-train-size", type=int, default=5000,
                   help="seeded, class-balanced labelled subset of the 45,000 training images (0: all)")
    p.add_argument("--finetune-batch-size", type=int, default=64)
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="peak LR of the head (not scaled by batch)")
    p.add_argument("--finetune-weight-decay", type=float, default=0.05)
    p.add_argument("--layer-decay", type=float, default=0.9, help="layer-wise LR decay (1: none)")
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.0, help="EMA of the fine-tuned weights (0: none)")
    p.add_argument("--mixup", type=float, default=0.0)
    p.add_argument("--cutmix", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--finetune-warmup-epochs", type=float, default=0.3)
    p.add_argument("--arms", default="pretrained,random", help="which fine-tunes to run (comma-separated)")
    p.add_argument("--knn", action="store_true",
                   help="also k-NN top-1 (k=200, T=0.1) of both frozen backbones, the labelled subset as the bank")
    # data and bookkeeping
    p.add_argument("--train-dir"), p.add_argument("--test-dir")
    p.add_argument("--tarball", default=str(DEFAULT_TARBALL))
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--holdout", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=0, help="data-loader workers (pretraining and fine-tuning)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50, help="print the pretraining loss every N steps")
    p.add_argument("--figure-dir", default="docs", help="masked_modelling_<model>.png go here ('' : none)")
    p.add_argument("--save-dir", help="also save each pretrained backbone here (<model>.pt)")
    p.add_argument("--load-dir", help="skip pretraining: load <model>.pt backbones saved by --save-dir")
    p.add_argument("--out", help="merge the per-model records into this JSON file")
    return p.parse_args(argv)


class Meter(pl.Callback):
    """Step clock (wall + CPU after every optimiser step) and the loss of every step."""

    def __init__(self, clock: StepClock, log_every: int = 0, name: str = ""):
        self.clock, self.log_every, self.name = clock, log_every, name
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.tick()
        # the reconstruction loss itself: the step's output also holds the online probe's loss
        # (the method adds a linear probe on detached features when the data has labels)
        self.losses.append(float(trainer.callback_metrics["train_loss_step"]))
        step = trainer.global_step
        if self.log_every and (step % self.log_every == 0 or step == trainer.max_steps):
            recent = self.losses[-self.log_every:]
            print(f"  {self.name} step {step}/{trainer.max_steps} loss {sum(recent) / len(recent):.4f} "
                  f"lr {trainer.optimizers[0].param_groups[0]['lr']:.2e} load {load_average()}", flush=True)


def build_method(args, name: str, max_steps: int) -> pl.LightningModule:
    m = MODELS[name]
    kwargs = dict(m["kwargs"], mask_ratio=args.fcmae_mask_ratio if name == "fcmae" else args.mae_mask_ratio)
    if name == "fcmae":
        kwargs["decoder_init_std"] = args.fcmae_decoder_init_std
    pl.seed_everything(args.seed, verbose=False)
    return m["cls"](backbone=m["backbone"], image_size=32, num_views=1, lr=args.pretrain_lr,
                    weight_decay=args.pretrain_weight_decay, warmup_steps=max(1, round(args.warmup_fraction * max_steps)),
                    max_steps=max_steps, channels_last=m["channels_last"], compile=args.compile, seed=args.seed,
                    **kwargs)


def fit(method, loader, steps: int, callbacks) -> None:
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, precision="bf16-mixed",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks)
    trainer.fit(method, loader)


def per_model(values: list, name: str):
    """One value for both models, or two: fcmae's then mae's."""
    if len(values) > 2:
        raise SystemExit(f"give one value (both models) or two (fcmae, mae), got {values}")
    return values[0] if len(values) == 1 or name == "fcmae" else values[1]


def pretrain(args, name: str, train_ds) -> tuple[pl.LightningModule, dict]:
    loader = make_dataloader(train_ds, num_views=1, batch_size=args.batch_size, image_size=32, preset="cifar10",
                             augment=Augment(crop_scale=tuple(args.crop_scale), jitter_prob=0.0, grayscale_prob=0.0),
                             batched_views=True, num_workers=args.num_workers, seed=args.seed)
    per_epoch = len(loader)
    measured = None
    if args.pretrain_steps:
        steps = per_model(args.pretrain_steps, name)
    else:
        # a throw-away copy times a step (data loading included); the real run is then built with
        # max_steps, so its warm-up and cosine are laid out over exactly the budget
        clock = StepClock(args.batch_size, warmup=3)
        fit(build_method(args, name, args.measure_steps), loader, args.measure_steps, [Meter(clock)])
        # the median step after the first three (one-off set-up): robust to a burst of other jobs
        gaps = sorted(b - a for a, b in zip(clock.wall[3:], clock.wall[4:]))
        measured = gaps[len(gaps) // 2]
        steps = max(10, int(per_model(args.pretrain_minutes or [1.0], name) * 60 / measured))
    print(f"# {name}: pretraining {steps} steps of {args.batch_size} ({steps / per_epoch:.2f} epochs of "
          f"{len(train_ds)} images)" + (f", measured {measured:.3f} s/step" if measured else "") +
          f", load {load_average()}", flush=True)
    method = build_method(args, name, steps)
    clock = StepClock(args.batch_size, warmup=3)
    meter = Meter(clock, args.log_every, name)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    fit(method, loader, steps, [meter])
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    ips, ips_cpu = clock.rates()
    losses = meter.losses
    tail = losses[-max(1, len(losses) // 20):]  # the last 5% of the steps
    window = max(1, len(losses) // 20)
    curve = [[min(i + window, len(losses)), round(sum(losses[i:i + window]) / len(losses[i:i + window]), 4)]
             for i in range(0, len(losses), window)]
    rec = {"pretrain_steps": clock.steps, "pretrain_epochs": round(clock.steps / per_epoch, 3),
           "pretrain_batch_size": args.batch_size, "pretrain_lr_base": args.pretrain_lr,
           "pretrain_lr": args.pretrain_lr * args.batch_size / 256, "pretrain_mask_ratio": method.cfg["mask_ratio"],
           "pretrain_measured_s_per_step": round(measured, 4) if measured else None,
           "pretrain_wall_s": round(wall, 1), "pretrain_cpu_s": round(cpu, 1),
           "pretrain_images_per_s": ips, "pretrain_images_per_cpu_s": ips_cpu,
           "first_loss": round(sum(losses[:window]) / window, 4), "final_loss": round(sum(tail) / len(tail), 4),
           "final_step_loss": round(losses[-1], 4), "loss_curve": curve, "pretrain_load_avg": load_average()}
    return method, rec


def reconstruction_figure(args, name: str, method, test_ds, title: str) -> str | None:
    if not args.figure_dir:
        return None
    # eight held-out images spread over the (class-sorted) split: one from each of eight classes
    picks = ImageFolderDataset(test_ds.root, files=[test_ds.files[i * len(test_ds) // 8 + 7] for i in range(8)])
    images = next(iter(make_eval_loader(picks, preset="cifar10", image_size=32, batch_size=8, num_workers=0)))
    path = Path(args.figure_dir) / f"masked_modelling_{name}.png"
    save_reconstruction_figure(method, images["image"][:8], path, title=title)
    return str(path)


def loss_figure(records: dict, path: Path) -> None:
    """Pretraining loss (mean over windows of 5% of the steps) of every model in `records`, against epochs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, rec in records.items():
        curve = rec.get("loss_curve")
        if curve:
            per_epoch = rec["pretrain_steps"] / rec["pretrain_epochs"]
            ax.plot([s / per_epoch for s, _ in curve], [v for _, v in curve], marker=".",
                    label=f"{name} ({rec['backbone']}), {rec['pretrain_steps']} steps")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("epochs of the 45,000 pretraining images")
    ax.set_ylabel("masked MSE (norm. pixels)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def finetune_arm(args, backbone: torch.nn.Module, train_sub, test_ds, channels_last: bool) -> dict:
    # Work-around: the pretrained backbone comes out of the method with some parameters frozen
    # (FCMAE freezes timm's head norm, MAE its fixed sin-cos pos_embed), and finetune() keeps
    # requires_grad as it finds it. Fine-tuning trains the whole network in both papers, so both arms
    # get every parameter trainable.
    encoder = copy.deepcopy(backbone).float().train().requires_grad_(True)
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    logits, labels, info = finetune(
        encoder, train_sub, test_ds, num_classes=10, epochs=args.finetune_epochs, batch_size=args.finetune_batch_size,
        lr=args.finetune_lr, weight_decay=args.finetune_weight_decay,
        layer_decay=args.layer_decay if args.layer_decay < 1 else None, warmup_epochs=args.finetune_warmup_epochs,
        label_smoothing=args.label_smoothing, mixup=args.mixup, cutmix=args.cutmix, ema_decay=args.ema_decay or None,
        drop_path=args.drop_path, augment=True, image_size=32, preset="cifar10", num_workers=args.num_workers,
        seed=args.seed, bf16=True, device="cpu")
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    acc = float((logits.argmax(1) == labels).float().mean())
    return {"top1": round(acc, 4), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "steps": info["steps"],
            "test_images": len(labels), "load_avg": load_average(), "settings": info}


def save_record(args, name: str, rec: dict) -> None:
    """Merge `rec` into --out (a later run of one model replaces that model's record only); redraw the loss plot."""
    if not args.out:
        return
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[name] = rec
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    if args.figure_dir:
        loss_figure(data, Path(args.figure_dir) / "masked_modelling_loss.png")


def run_model(args, name: str, train_ds, test_ds, train_sub) -> dict:
    print(f"# {name} ({MODELS[name]['backbone']}): {len(train_ds)} pretraining images, {len(train_sub)} labelled "
          f"fine-tuning images, {len(test_ds)} held-out test images; threads {torch.get_num_threads()}, "
          f"load {load_average()}", flush=True)
    rec: dict = {"model": name, "backbone": MODELS[name]["backbone"], "command": args.command}
    if args.load_dir:
        method = build_method(args, name, 1)
        state = torch.load(Path(args.load_dir) / f"{name}.pt", map_location="cpu")
        if any(k.startswith("backbone.") for k in state):  # the whole method (encoder + decoder)
            # files saved before the backbone was held once also hold it as `_encoder.*` (the same tensors); the
            # online probe (sized from the labels while pretraining) is not part of the model fine-tuned here
            method.load_state_dict({k: v for k, v in state.items() if not k.startswith(("_encoder.", "probe."))})
            rec["figure"] = reconstruction_figure(args, name, method, test_ds,
                                                  f"{name} ({MODELS[name]['backbone']}), loaded from {args.load_dir}")
        else:  # the backbone only
            method.backbone.load_state_dict(state)
        rec["pretrain_loaded_from"] = str(Path(args.load_dir) / f"{name}.pt")
    else:
        method, pre = pretrain(args, name, train_ds)
        rec.update(pre)
        if args.save_dir:
            Path(args.save_dir).mkdir(parents=True, exist_ok=True)
            torch.save(method.state_dict(), Path(args.save_dir) / f"{name}.pt")
        rec["figure"] = reconstruction_figure(
            args, name, method, test_ds, f"{name} ({MODELS[name]['backbone']}), {pre['pretrain_steps']} steps "
            f"({pre['pretrain_epochs']:.1f} epochs), mask {method.cfg['mask_ratio']}, held-out images")
        save_record(args, name, rec)  # saved as each part ends: a killed run keeps what it finished
    rec["backbone_spec"] = dict(method.backbone.spec)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for arm in arms:
        if arm == "pretrained":
            backbone = method.backbone
        elif arm == "random":
            torch.manual_seed(args.seed)
            backbone = create_backbone(**method.backbone.spec)
        else:
            raise SystemExit(f"unknown arm '{arm}' (pretrained, random)")
        if args.knn:  # what the frozen features give, before any fine-tuning
            t0 = time.perf_counter()
            rec[f"knn_{arm}"] = round(knn_top1(backbone.eval(), train_sub, test_ds, "cifar10", "cpu", bf16=True), 4)
            print(f"  {name} {arm}: k-NN top-1 {rec[f'knn_{arm}']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        print(f"# {name}: fine-tuning the {arm} backbone, load {load_average()}", flush=True)
        res = finetune_arm(args, backbone, train_sub, test_ds, MODELS[name]["channels_last"])
        print(f"  {name} {arm}: top-1 {res['top1']:.4f} in {res['wall_s']:.0f} s ({res['steps']} steps)", flush=True)
        rec[f"finetune_{arm}"] = res
        save_record(args, name, rec)
    if "pretrained" in arms and "random" in arms:
        rec["top1_gain"] = round(rec["finetune_pretrained"]["top1"] - rec["finetune_random"]["top1"], 4)
    rec["finetune_train_size"] = len(train_sub)
    rec["load_avg"] = load_average()
    return rec


def main(argv=None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    args.command = "python " + " ".join(shlex.quote(a) for a in ([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])))
    start = time.perf_counter()
    train_ds, test_ds = benchmark_datasets(args)
    train_sub = bank_subset(train_ds, args.finetune_train_size, args.seed)
    names = ["fcmae", "mae"] if args.model == "both" else [args.model]
    records = {}
    for name in names:
        t0 = time.perf_counter()
        rec = run_model(args, name, train_ds, test_ds, train_sub)
        rec["total_wall_s"] = round(time.perf_counter() - t0, 1)
        records[name] = rec
        emit({k: v for k, v in rec.items() if k != "loss_curve"}, None)
        save_record(args, name, rec)
    print(f"# done in {time.perf_counter() - start:.0f} s, load {load_average()}", flush=True)
    for name, rec in records.items():
        if "top1_gain" in rec:
            print(f"# {name}: random {rec['finetune_random']['top1']:.4f} -> pretrained "
                  f"{rec['finetune_pretrained']['top1']:.4f} ({rec['top1_gain']:+.4f})", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
