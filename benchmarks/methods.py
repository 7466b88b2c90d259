"""The method zoo on CIFAR-10: every registered method pretrained for the same CPU budget, then k-NN top-1
on held-out images against the same backbone at random initialisation and against the best of the earlier
six (SimCLR, MoCo, BYOL, SimSiam, Barlow Twins, VICReg).

    nice python benchmarks/methods.py --budget-minutes 2 --out docs/methods.json          # every method
    nice python benchmarks/methods.py --methods simclr dino mae fcmae --budget-minutes 0.2 \\
        --train-size 2000 --bank-size 2000 --out /tmp/methods_smoke.json                   # a smoke run
    nice python benchmarks/methods.py --check                  # every method: build + 1 step + tiny k-NN
    python benchmarks/methods.py --table --out docs/methods.json --doc docs/methods.md    # the table only

Protocol (docs/methods.md): the seeded `holdout_split` of cifar10.py, decoded once into memory; per method a
throw-away copy times a step and the run gets max_steps = budget / step time (as masked_modelling.py); `knn_top1`
against the training split (or `--bank-size`), trained and untrained (cached by a hash of the weights).

Recipes, one per family (FAMILIES, `plan`): bf16 autocast, batched view augmentation, the method's own heads, loss,
temperatures and augmentation (conf/experiment/cifar10_<name>.yaml), with these changes for a few hundred steps:
- joint embedding, distillation, clustering: ResNet-18 (ImageNet stem at 32 px, `--stem`), channels_last, AdamW
  1e-3 (not scaled), wd 1e-4, 5% warm-up, 2 views x 128 images; an experiment with more views gets at most 8 at
  the same views per step (FastSiam 4 x 64, EMP-SSL and MMCR 8 x 32); DINO and SwAV add 4 local 16 px crops.
- ViT-only self-distillation (iBOT, DINOv2, MSN, PMSN): ViT-tiny, 4 px patches, AdamW 5e-4 (not scaled) with the
  method's own weight decay, clipping and layer decay, 10% warm-up, 2 global + 4 local 16 px crops x 64 images.
- masked image modelling (MAE, SimMIM: ViT-tiny/4; FCMAE: ConvNeXt-V2-atto, stride-1 stem): one view x 128,
  AdamW 1.5e-3 per 256 images (masked_modelling.py's choice), wd 0.05, 5% warm-up.
- all: EMA momentum <= 0.99 (0.996-0.9995 leave the teacher near its random init for a few hundred steps);
  queues and support sets <= 8,192 (64 batches: 32k-65k would still be mostly random entries after an epoch);
  prototypes <= 8,192 (DINOv2's 65,536 on every patch token is 2 GB of logits a step); DINO's last layer not
  frozen (its frozen first epoch is the whole run); SwAV's prototypes frozen for the warm-up only; DeepCluster-v2
  (k-means at epoch starts; its first epoch only fills the bank) re-clusters every R = steps/5 (8..64) steps on
  a bank of R batches, with at most half as many prototypes as bank entries.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import sys
import time
import warnings
from pathlib import Path
from statistics import mean
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import autossl  # noqa: E402
from autossl.data import Augment, make_dataloader  # noqa: E402
from autossl.data.datasets import ArrayDataset  # noqa: E402
from autossl.methods import METHODS, get_method  # noqa: E402

from _common import (DEFAULT_CACHE, DEFAULT_TARBALL, StepClock, bank_subset, benchmark_datasets,  # noqa: E402
                     cpu_seconds, emit, extract_features, knn_top1, load_average)
from masked_modelling import Meter, fit  # noqa: E402
from mnist_methods import SIX  # noqa: E402

CONF = Path(autossl.__file__).resolve().parent / "conf"
FAMILIES = {
    "joint": dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, scale_lr=False, warmup=0.05),
    "vit": dict(optimizer="adamw", lr=5e-4, scale_lr=False, warmup=0.10),
    "mim": dict(optimizer="adamw", lr=1.5e-3, weight_decay=0.05, scale_lr=True, warmup=0.05),
}
MULTI_CROP = ("dino", "swav")  # ResNet methods built around global + local crops
MAX_VIEWS, EMA_CAP, QUEUE_CAP, PROTOTYPE_CAP = 8, 0.99, 8192, 8192
NOTES = {
    "supcon": "uses the labels (supervised contrastive): a supervised reference, not self-supervised",
    "empssl": "the paper evaluates the mean feature of many patches per image; this k-NN uses the whole image",
    "deepclusterv2": "re-clustered every R steps on a bank of the last R batches (loss 0 until the first k-means)",
}
MIM_NOTE = ("masked image modelling: k-NN on frozen features understates it (made for fine-tuning; "
            "docs/masked_modelling.md)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="default: every registered method")
    p.add_argument("--budget-minutes", type=float, default=2.0, help="training wall time per method")
    p.add_argument("--measure-steps", type=int, default=9, help="steps of a throw-away copy that time a step")
    p.add_argument("--image-size", type=int, default=32, help="training view size of the CNN methods (ViT/MIM: 32)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step of a 2-view method (see plan())")
    p.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"], help="ResNet-18 stem at 32 px")
    p.add_argument("--train-size", type=int, default=0, help="pretrain on a seeded class-balanced subset (0: all)")
    p.add_argument("--bank-size", type=int, default=0, help="k-NN bank: seeded class-balanced subset (0: all)")
    p.add_argument("--check", action="store_true", help="1 step per method on tiny data, tiny k-NN: does it run?")
    p.add_argument("--table", action="store_true", help="only print the table of --out (and write it into --doc)")
    p.add_argument("--doc", help="with --table: replace the table between the markers of this markdown file")
    p.add_argument("--out", help="JSON object keyed by method; each finished method is merged in")
    p.add_argument("--train-dir"), p.add_argument("--test-dir")
    p.add_argument("--tarball", default=str(DEFAULT_TARBALL)), p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--holdout", type=int, default=5000), p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument("--log-every", type=int, default=0, help="print the loss every N steps")
    return p.parse_args(argv)


def experiment(name: str) -> dict:
    path = CONF / "experiment" / f"cifar10_{name}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.exists() else {}


def augment_of(data: dict) -> Augment:
    """The experiment's augmentation over the defaults of conf/global.yaml, read as train/run.py does."""
    a = {**OmegaConf.to_container(OmegaConf.load(CONF / "global.yaml").data.augment), **data.get("augment", {})}
    return Augment(crop_scale=(float(a["crop_min_scale"]), 1.0), jitter=tuple(a["jitter"]), hflip=a["hflip"],
                   jitter_prob=a["jitter_prob"], grayscale_prob=a["grayscale_prob"],
                   blur_prob=float(a["blur_prob"] or 0), solarize_prob=a["solarize_prob"])


def plan(name: str, args, steps: int) -> dict:
    """Everything one run of `name` needs for `steps` optimiser steps: family, backbone, method kwargs, views."""
    cls, exp = get_method(name), experiment(name)
    model, data = exp.get("model", {}), exp.get("data", {})
    backbone = str(model.get("backbone") or "resnet18")
    family = "mim" if cls.min_views == 1 else "vit" if backbone.startswith(("vit", "swin")) else "joint"
    fam = FAMILIES[family]
    views, local, local_size, batch, size = 2, 0, None, args.batch_size, 32
    if family == "mim":
        views = 1
    elif family == "vit":
        backbone, local, local_size, batch = "vit_tiny", 4, 16, max(2, args.batch_size // 2)
    else:
        backbone, size = "resnet18", args.image_size
        views = min(MAX_VIEWS, max(2, int(data.get("num_views", 2))))
        batch = max(2, 2 * args.batch_size // views)
        if name in MULTI_CROP:
            local, local_size = 4, max(8, size // 2)
    warmup = max(1, round(fam["warmup"] * steps))
    params = dict(model.get("params", {}))
    own = {**cls.defaults, **params}
    kw = dict(params, optimizer=fam["optimizer"], lr=fam["lr"], scale_lr=fam["scale_lr"], warmup_steps=warmup,
              max_steps=steps, num_views=views, memory_bank=bool(model.get("memory_bank", False)))
    if "weight_decay" in fam:
        kw["weight_decay"] = fam["weight_decay"]
    if "momentum_base" in own:
        kw["momentum_base"] = min(float(own["momentum_base"]), EMA_CAP)
    if own.get("queue_size"):
        kw["queue_size"] = min(int(own["queue_size"]), QUEUE_CAP)
    if isinstance(own.get("num_prototypes"), int):
        kw["num_prototypes"] = min(own["num_prototypes"], PROTOTYPE_CAP)
    if "freeze_last_layer" in own:
        kw["freeze_last_layer"] = 0
    if "freeze_prototypes_epochs" in own:
        kw["freeze_prototypes_steps"] = warmup
    recluster = 0
    if "memory_size" in own:
        recluster = min(64, max(8, steps // 5))
        kw["memory_size"] = recluster * batch
        kw["num_prototypes"] = min(kw.get("num_prototypes", PROTOTYPE_CAP), recluster * batch // 2)
    if backbone == "resnet18":
        bb_kwargs, label = dict(cifar_stem=args.stem == "cifar", zero_init_last=False), f"resnet18 ({args.stem} stem)"
    else:
        bb_kwargs, label = {}, {"vit_tiny": "vit_tiny/4"}.get(backbone, f"{backbone} (small-image stem)")
    return dict(method=name, family=family, backbone=backbone, backbone_kwargs=bb_kwargs, label=label, kwargs=kw,
                channels_last=not backbone.startswith(("vit", "swin")), views=views, local=local,
                local_size=local_size, batch=batch, size=size, asymmetric=bool(data.get("asymmetric", False)),
                augment=augment_of(data), recluster=recluster,
                note=MIM_NOTE if family == "mim" else NOTES.get(name, ""))


def build(p: dict, args) -> pl.LightningModule:
    pl.seed_everything(args.seed, verbose=False)  # every method of a backbone starts from the same weights
    return get_method(p["method"])(backbone=p["backbone"], backbone_kwargs=p["backbone_kwargs"] or None,
                                   image_size=32, channels_last=p["channels_last"], seed=args.seed, **p["kwargs"])


def loader_for(p: dict, train, args):
    return make_dataloader(train, num_views=p["views"], batch_size=p["batch"], image_size=p["size"], preset="cifar10",
                           asymmetric=p["asymmetric"], num_local=p["local"], local_size=p["local_size"],
                           augment=p["augment"], batched_views=True, num_workers=0, seed=args.seed)


class Recluster(pl.Callback):
    """DeepCluster-v2's k-means every `every` steps (the method runs it at epoch starts, none within one epoch)."""

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step, biggest = trainer.global_step, max(p.shape[0] for p in pl_module._all_prototypes())
        if step and step % self.every == 0 and int(pl_module.memory_filled) >= biggest:
            pl_module.cluster_memory()


def in_memory(ds, memo: dict) -> ArrayDataset:
    """The images of an image-folder dataset decoded once (uint8 [N, 3, 32, 32]) and shared by every method."""
    key = tuple(ds.files)
    if key not in memo:
        pairs = [ds[i] for i in range(len(ds))]
        memo[key] = ArrayDataset(torch.stack([x for x, _ in pairs]), [y for _, y in pairs], classes=ds.classes)
    return memo[key]


def prepare_data(args) -> SimpleNamespace:
    train, test = benchmark_datasets(args)
    pre = bank_subset(train, args.train_size, args.seed)
    bank = bank_subset(train, args.bank_size, args.seed)
    if args.check:  # tiny: two batches of the largest recipe to train on, 100 + 100 images for the k-NN
        pre, bank, test = bank_subset(train, 2 * args.batch_size), bank_subset(train, 100), bank_subset(test, 100)
    ident = "\n".join(map(str, bank.files + ["|"] + test.files)).encode()
    memo: dict = {}
    start = time.perf_counter()
    out = SimpleNamespace(train=in_memory(pre, memo), bank=in_memory(bank, memo), test=in_memory(test, memo),
                          key=hashlib.sha1(ident).hexdigest()[:16])
    print(f"# data: {len(out.train)} pretraining, {len(out.bank)} bank, {len(out.test)} held-out images "
          f"(decoded in {time.perf_counter() - start:.0f} s), load {load_average()}", flush=True)
    return out


def weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def evaluate(backbone, data) -> tuple[float, float]:
    """k-NN top-1; and a collapse check: the mean per-dimension std of the L2-normalised held-out features."""
    acc = knn_top1(backbone, data.bank, data.test, "cifar10", "cpu", bf16=True)
    feats, _ = extract_features(backbone, data.test, "cifar10", "cpu")
    return acc, float(F.normalize(feats, dim=1).std(0).mean())


def random_init(args, backbone, data) -> tuple[float, float, bool]:
    """`evaluate` of the untrained backbone, cached by its weights and the bank/test files (nothing trained in it)."""
    key = {"weights": weights_hash(backbone), "data": data.key, "torch": torch.__version__}
    cache = Path(args.cache_dir) / "methods_random_init.jsonl"
    for entry in map(json.loads, cache.read_text().splitlines() if cache.exists() else []):
        if entry["key"] == key and "std" in entry:
            return entry["knn"], entry["std"], True
    acc, std = evaluate(backbone, data)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "a") as f:
        f.write(json.dumps({"key": key, "knn": acc, "std": std}) + "\n")
    return acc, std, False


def run_method(name: str, args, data) -> dict:
    t_all, measured = time.perf_counter(), None
    if args.check:
        steps = 1
    else:  # a throw-away copy times a step; the real run's schedules are laid out over budget / step time
        p = plan(name, args, args.measure_steps)
        clock = StepClock(p["batch"], warmup=3)
        fit(build(p, args), loader_for(p, data.train, args), args.measure_steps, [Meter(clock)])
        gaps = sorted(b - a for a, b in zip(clock.wall[3:], clock.wall[4:]))
        measured = gaps[len(gaps) // 2]
        steps = max(10, int(args.budget_minutes * 60 / measured))
    p = plan(name, args, steps)
    loader = loader_for(p, data.train, args)
    method = build(p, args)
    t0 = time.perf_counter()
    knn_random, std_random, cached = (None, None, False) if args.check else random_init(args, method.backbone, data)
    random_s = time.perf_counter() - t0
    print(f"# {name} ({p['family']}, {p['label']}): {steps} steps of {p['batch']} x {p['views']} views"
          + (f" + {p['local']} x {p['local_size']} px" if p["local"] else "")
          + (f", measured {measured:.3f} s/step" if measured else "")
          + (f", k-NN random {knn_random:.4f}" + (" (cached)" if cached else f" ({random_s:.0f} s)")
             if knn_random is not None else "") + f", load {load_average()}", flush=True)
    clock = StepClock(p["batch"], warmup=3)
    meter = Meter(clock, args.log_every, name)
    callbacks = [meter] + ([Recluster(p["recluster"])] if p["recluster"] else [])
    load_start, start, cpu0 = load_average(), time.perf_counter(), cpu_seconds()
    fit(method, loader, steps, callbacks)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    load_end, t0 = load_average(), time.perf_counter()
    backbone = method.backbone
    knn_trained, std = evaluate(backbone, data)
    eval_s = time.perf_counter() - t0
    losses, (ips, ips_cpu) = meter.losses, clock.rates()
    window = max(1, len(losses) // 20)
    return {"method": name, "family": p["family"], "backbone": p["label"], "backbone_spec": dict(backbone.spec),
            "steps": clock.steps, "epochs": round(clock.steps * p["batch"] / len(data.train), 3),
            "batch_size": p["batch"], "num_views": p["views"], "num_local": p["local"], "local_size": p["local_size"],
            "view_size": p["size"], "budget_s": None if args.check else args.budget_minutes * 60,
            "measured_s_per_step": round(measured, 4) if measured else None, "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "images_per_s": ips, "images_per_cpu_s": ips_cpu,
            "knn_random": None if knn_random is None else round(knn_random, 4), "knn_trained": round(knn_trained, 4),
            "gain": None if knn_random is None else round(knn_trained - knn_random, 4),
            "first_loss": round(mean(losses[:window]), 4), "final_loss": round(mean(losses[-window:]), 4),
            # collapse check: mean per-dimension std of the L2-normalised held-out features (1/sqrt(D) if spread)
            "feature_std": round(std, 4), "feature_std_random": std_random and round(std_random, 4),
            "feature_dim": backbone.num_features,
            "eval_s": round(eval_s, 1), "train_images": len(data.train), "bank_images": len(data.bank),
            "test_images": len(data.test), "load_avg_start": load_start, "load_avg_end": load_end,
            "load_avg": load_average(), "total_s": round(time.perf_counter() - t_all, 1),
            "recipe": {k: v for k, v in p["kwargs"].items() if k != "max_steps"}, "note": p["note"],
            "threads": torch.get_num_threads(), "command": args.command}


def load_json(path: str | None) -> dict:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else {}


def save(path: str | None, name: str, rec: dict) -> None:
    """Merge `rec` into the JSON at `path` (a later run of a method replaces that method's row only)."""
    if not path:
        return
    data = load_json(path)
    data[name] = rec
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def pts(x) -> str:
    return "—" if x is None else f"{100 * x:+.1f}"


def table(data: dict) -> str:
    order = [n for n in METHODS if n in data] + [n for n in data if n not in METHODS]
    six = {n: data[n]["knn_trained"] for n in SIX if data.get(n, {}).get("knn_trained") is not None}
    best = max(six, key=six.get) if six else None
    lines = ["| method | family | backbone | steps | epochs | wall s | CPU s | images/s | k-NN random | k-NN trained "
             "| gain vs random | vs best of six | final loss | feature std (random) | load |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []

    for n in order:
        r = data[n]
        if "error" in r:
            lines.append(f"| {n} | {r.get('family', '')} | {r.get('backbone', '')} | failed: {r['error'][:80]} |"
                         + " |" * 11)
            continue
        if r.get("note") and r["note"] not in notes:
            notes.append(r["note"])
        mark = f" [{notes.index(r['note']) + 1}]" if r.get("note") else ""
        vs_six = r["knn_trained"] - six[best] if best else None
        ips = f"{r['images_per_s']:.1f}" if r.get("images_per_s") else "—"
        lines.append(f"| {n}{mark} | {r['family']} | {r['backbone']} | {r['steps']} | {r['epochs']:.2f} | "
                     f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} | {ips} | {pct(r['knn_random'])} | "
                     f"{pct(r['knn_trained'])} | {pts(r['gain'])} | {pts(vs_six)} | {r['final_loss']:.4g} | "
                     f"{r['feature_std']:.3f}" + (f" ({r['feature_std_random']:.3f})" if r.get("feature_std_random")
                                                   else "") + f" | {r['load_avg_end']:.1f} |")
    ok = [data[n] for n in order if "error" not in data[n]]
    sizes = sorted({(r["budget_s"], r["train_images"], r["bank_images"], r["test_images"]) for r in ok}, key=str)
    lines.append("\n" + (f"Best of the six: {best} ({pct(six[best])}). " if best else "") + "; ".join(
        f"Budget {b or 0:g} s a method, {t} pretraining images, k-NN bank {k}, {q} held out" for b, t, k, q in sizes))
    lines += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines).rstrip() + "\n"


START, END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"


def write_doc(path: str, md: str) -> None:
    text = Path(path).read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} markers to put the table between")
    head, rest = text.split(START, 1)
    Path(path).write_text(head + START + "\n" + md + END + rest.split(END, 1)[1])


def main(argv=None) -> None:
    args = parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    args.command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/methods.py"] + given)
    if args.table:
        md = table(load_json(args.out))
        print(md)
        if args.doc:
            write_doc(args.doc, md)
        return
    warnings.filterwarnings("ignore")
    for logger in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(logger).setLevel(logging.ERROR)  # its per-fit banners, 60 times over
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [METHODS.canonical(n) for n in args.methods]
    start = time.perf_counter()
    data = prepare_data(args)
    rows: dict = {}
    for name in names:
        try:
            rec = run_method(name, args, data)
        except Exception as err:  # noqa: BLE001 - one method failing must not lose the others' rows
            msg = f"{type(err).__name__}: {err}".splitlines()[0]
            rec = {"method": name, "error": msg, "load_avg": load_average()}
            print(f"# {name} FAILED: {msg}", flush=True)
        rows[name] = rec
        emit(rec, None)
        save(args.out, name, rec)
    print(f"# {len(names)} methods in {time.perf_counter() - start:.0f} s, load {load_average()}", flush=True)
    print(table(load_json(args.out) if args.out else rows))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
