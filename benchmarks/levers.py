"""Measure the CPU speed levers one at a time (short runs, configurations interleaved round-robin so
that a changing machine load hits each of them alike).

    python benchmarks/levers.py model --method byol --batch-size 128 --steps 3 --rounds 3
    python benchmarks/levers.py data

`model`: one training step of our method (forward of all views, loss, backward, optimiser step,
EMA) on a fixed batch of real augmented CIFAR-10 views, per configuration; median seconds per step
(wall and CPU) -> views/s. `data`: per-image cost of JPEG decoding and of the view pipelines.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from autossl.data import make_dataloader  # noqa: E402
from autossl.methods import get_method  # noqa: E402

from _common import (DEFAULT_CACHE, DEFAULT_TARBALL, autocast, benchmark_datasets, cpu_seconds,  # noqa: E402
                     load_average)

CONFIGS = {  # name -> (forward_views, channels_last, bf16, compile)
    "fp32 per_view": ("per_view", False, False, False),
    "fp32 concat": ("concat", False, False, False),
    "fp32 concat channels_last": ("concat", True, False, False),
    "bf16 concat": ("concat", False, True, False),
    "bf16 concat channels_last": ("concat", True, True, False),
    "bf16 concat channels_last compile": ("concat", True, True, True),
}


def one_step(model, opt, batch, bf16: bool) -> None:
    with autocast("cpu", bf16):
        loss = model.training_step(batch, 0)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.on_train_batch_end(None, batch, 0)


def model_levers(args) -> None:
    train_ds, _ = benchmark_datasets(args)
    loader = make_dataloader(train_ds, preset="cifar10", num_views=2, batch_size=args.batch_size, num_workers=0,
                             seed=0)
    batch = next(iter(loader))
    batch.pop("label")  # no online probe / k-NN bank: the SSL step alone
    names = args.configs or [n for n in CONFIGS if args.compile or "compile" not in n]
    runs = {}
    for name in names:
        fv, cl, bf16, comp = CONFIGS[name]
        pl.seed_everything(0, verbose=False)
        model = get_method(args.method)(backbone=args.backbone, image_size=32, forward_views=fv, channels_last=cl,
                                        compile=comp, max_steps=100)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        start = time.perf_counter()
        one_step(model, opt, batch, bf16)  # warm-up (and compilation)
        runs[name] = dict(model=model, opt=opt, bf16=bf16, wall=[], cpu=[], first_s=time.perf_counter() - start)
    for _ in range(args.rounds):
        for name, r in runs.items():
            for _ in range(args.steps):
                w, c = time.perf_counter(), cpu_seconds()
                one_step(r["model"], r["opt"], batch, r["bf16"])
                r["wall"].append(time.perf_counter() - w)
                r["cpu"].append(cpu_seconds() - c)
    views = 2 * args.batch_size
    print(f"\n{args.method}, {views} views of 32 px per step, load {load_average()}, threads {torch.get_num_threads()}")
    print(f"| configuration | views/s (wall) | views/CPU-s | first step s |")
    print("|---|---|---|---|")
    for name, r in runs.items():
        wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
        print(f"| {name} | {views / wall:.1f} | {views / cpu:.1f} | {r['first_s']:.1f} |", flush=True)


def data_levers(args) -> None:
    from PIL import Image
    from torchvision.io import decode_jpeg, read_file

    from autossl.data.images import read_image
    from autossl.data.views import make_views

    train_ds, _ = benchmark_datasets(args)
    files = train_ds.files[: args.images]
    torch.set_num_threads(1)

    def rate(fn, items) -> float:
        start = time.perf_counter()
        for item in items:
            fn(item)
        return len(items) / (time.perf_counter() - start)

    print(f"\nper-image costs on one thread, {len(files)} images, load {load_average()}")
    print("| step | images/s | ms/image |")
    print("|---|---|---|")
    rows = {"decode: PIL (autossl read_image)": rate(read_image, files),
            "decode: PIL open+convert (torchvision ImageFolder)": rate(lambda f: Image.open(f).convert("RGB"), files),
            "decode: torchvision decode_jpeg": rate(lambda f: decode_jpeg(read_file(str(f))), files)}
    tensors = [read_image(f) for f in files]
    pils = [Image.open(f).convert("RGB") for f in files]
    rows["2 views: autossl v2 transforms on uint8 tensors"] = rate(make_views("cifar10", 2), tensors)
    try:
        from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform

        lt = BYOLTransform(BYOLView1Transform(input_size=32, gaussian_blur=0.0),
                           BYOLView2Transform(input_size=32, gaussian_blur=0.0))
        rows["2 views: lightly BYOLTransform on PIL"] = rate(lt, pils)
    except ImportError:
        pass
    from autossl.data.batch_views import make_batch_views

    batched = make_batch_views("cifar10", 2)
    stack = torch.stack(tensors)
    start = time.perf_counter()
    for i in range(0, len(stack), 128):
        batched(stack[i:i + 128])
    rows["2 views: autossl batched views (per batch of 128)"] = len(stack) / (time.perf_counter() - start)
    for name, r in rows.items():
        print(f"| {name} | {r:.0f} | {1000 / r:.2f} |")


def main() -> None:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["model", "data"])
    p.add_argument("--method", default="byol")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=2, help="steps per configuration per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="include torch.compile (slow first step)")
    p.add_argument("--configs", nargs="*", choices=list(CONFIGS))
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--train-dir"), p.add_argument("--test-dir")
    p.add_argument("--tarball", default=str(DEFAULT_TARBALL))
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--holdout", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model_levers(args) if args.what == "model" else data_levers(args)


if __name__ == "__main__":
    main()
