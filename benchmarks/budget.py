"""Time-budget benchmark: `autossl pretrain ... trainer.budget_minutes=M` on CIFAR-10 (all but a held-out split),
then k-NN top-1 of the trained backbone on the held-out images, against the same ResNet at random initialisation.

    python benchmarks/budget.py --minutes 20 method=simclr            # one row of docs/budget.md
    python benchmarks/budget.py --minutes 5 --bank 10000 method=vicreg data.view_size=32   # a lever, quick bank
    python benchmarks/budget.py --table docs/budget.jsonl              # the rows as a markdown table

Everything after the options is passed to `autossl pretrain` as it is: the run is exactly what a user's command
does (recipe=auto included, the default with a budget). The training split is a folder of links to the JPEGs of
`../shared/data/cifar10-train-jpeg.tar.gz` less the held-out 500 per class (benchmarks/_common.py), made once;
the k-NN (k=200, cosine, T=0.1, bf16 features of the clean 32 px images) is `autossl eval knn` on it. Each run
appends one JSON line (its two commands included) to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (DEFAULT_CACHE, DEFAULT_TARBALL, bank_subset, emit, extract_cifar10, holdout_split,  # noqa: E402
                     cpu_model, load_average)
from autossl.data import ImageFolderDataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AUTOSSL = [sys.executable, "-m", "autossl"]


def link_split(files: list[Path], root: Path, dest: Path) -> Path:
    """`dest/<class>/<file>` links to `files` (made once; a folder any autossl command reads)."""
    done = dest / ".complete"
    if done.exists():
        return dest
    for f in files:
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(f)
    done.touch()
    return dest


def split_folders(args) -> tuple[Path, Path, Path]:
    """(training folder, k-NN bank folder, test folder): the held-out split of the tarball as folders of links."""
    root = extract_cifar10(Path(args.tarball), Path(args.cache_dir))
    train, test = holdout_split(root, args.holdout, args.seed)
    base = Path(args.cache_dir) / f"split-holdout{args.holdout}-seed{args.seed}"
    train_dir, test_dir = link_split(train, root, base / "train"), link_split(test, root, base / "test")
    if not args.bank:
        return train_dir, train_dir, test_dir
    bank = bank_subset(ImageFolderDataset(root, files=train), args.bank, args.seed).files  # cifar10.py's bank too
    return train_dir, link_split(bank, root, base / f"bank{args.bank}"), test_dir


def run(cmd: list[str], log: Path) -> float:
    """Run a command (its output to `log`); returns its wall time. A failure ends the benchmark with the log's tail."""
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if code:
        tail = log.read_text().splitlines()[-5:]
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n" + "\n".join(tail))
    return time.perf_counter() - start


def eval_command(protocol: str, checkpoint: str, bank: Path, test: Path, out: Path) -> list[str]:
    return AUTOSSL + ["eval", protocol, "--checkpoint", checkpoint, "--data", str(bank), "--test-data", str(test),
                      "--preset", "cifar10", "--image-size", "32", "--bf16", "--batch-size", "512", "--out", str(out)]


def start_score(args, protocol: str, bank: Path, test: Path, overrides: list[str]) -> float:
    """k-NN (or linear probe) of the run's backbone at initialisation (built as `autossl pretrain` builds it: same
    config, same seed), cached by backbone, seed, split and CPU. A run from `model.pretrained=...` is scored against
    those weights, its start."""
    from autossl.evaluate.protocols import evaluate
    from autossl.train import compose
    from autossl.train.run import build_model
    import pytorch_lightning as pl

    named = ("method", "model.backbone", "model.pretrained", "seed")
    cfg = compose([o for o in overrides if o.split("=", 1)[0] in named] +
                  ["data.dataset=folder", f"data.path={bank}"])
    key = json.dumps({"backbone": str(cfg.model.backbone), "seed": int(cfg.seed), "bank": str(bank), "test": str(test),
                      "cpu": cpu_model(),  # one WRN-28-2 at seed 0: 34.84% on an Intel Xeon, 34.96% on an AMD EPYC
                      **({"protocol": protocol} if protocol != "knn" else {}),
                      **({"pretrained": str(cfg.model.pretrained)} if cfg.model.get("pretrained") else {})})
    cache = Path(args.cache_dir) / "budget_random_init.jsonl"
    for line in cache.read_text().splitlines() if cache.exists() else []:
        entry = json.loads(line)
        if entry["key"] == key:
            return entry["knn"]
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    result = evaluate(build_model(cfg).backbone, str(bank), protocol, test_dataset=str(test), preset="cifar10",
                      image_size=32, bf16=True, batch_size=512)
    with open(cache, "a") as f:
        f.write(json.dumps({"key": key, "knn": result["accuracy"]}) + "\n")
    return result["accuracy"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, help="trainer.budget_minutes")
    p.add_argument("--name", help="run name (default: from the overrides)")
    p.add_argument("--bank", type=int, default=0, help="k-NN bank: a class-balanced subset of this many training "
                                                        "images (0: all 45,000)")
    p.add_argument("--linear", action="store_true", help="also a linear probe (autossl eval linear) on the same split")
    p.add_argument("--holdout", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0, help="the split's seed (the run's seed is seed=... in overrides)")
    p.add_argument("--tarball", default=str(DEFAULT_TARBALL))
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--work-dir", default="/tmp/autossl-budget", help="checkpoints and logs of the runs")
    p.add_argument("--out", default=str(REPO / "docs" / "budget.jsonl"))
    p.add_argument("--table", metavar="JSONL", help="print the rows of this file as a markdown table and exit")
    args, overrides = p.parse_known_args(argv)
    if args.table:
        return print_table(Path(args.table))
    if not args.minutes:
        p.error("give --minutes (or --table)")
    train, bank, test = split_folders(args)
    name = args.name or "_".join([f"{args.minutes:g}min"] + [o.replace("=", "-").replace("/", "") for o in overrides])
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"{name}.log"
    pretrain = AUTOSSL + ["pretrain", *overrides, f"trainer.budget_minutes={args.minutes:g}", "data.dataset=folder",
                          f"data.path={train}", "data.val_split=0", f"name={name}", f"checkpoint.dir={work}",
                          f"logging.dir={work / 'logs'}", "trainer.progress_bar=false"]
    load_before = load_average()
    wall = run(pretrain, log)
    summary = json.loads((work / name / "summary.json").read_text())
    scores, commands, eval_s = {}, [pretrain], 0.0
    for protocol in ["knn"] + (["linear"] if args.linear else []):
        out = work / f"{name}.{protocol}.json"
        command = eval_command(protocol, str(work / name / "last.ckpt"), bank, test, out)
        eval_s += run(command, log)
        result = json.loads(out.read_text())
        scores[f"{protocol}_top1"] = result["accuracy"]
        if "effective_rank" in result["settings"]:  # RankMe of the held-out features: a collapse shows here
            scores["effective_rank"] = result["settings"]["effective_rank"]
        scores[f"random_init_{protocol}_top1"] = start_score(args, protocol, bank, test, overrides)
        commands.append(command)
    shown = [" ".join(c[3:]) for c in commands]  # without `python -m autossl`
    from omegaconf import OmegaConf

    run_cfg = OmegaConf.load(work / name / "config.yaml")
    batch = int(run_cfg.data.batch_size)
    emit({"name": name, "minutes": args.minutes, "overrides": overrides, "backbone": str(run_cfg.model.backbone),
          "steps": summary["steps"],
          "epochs": round(summary["steps"] * batch / len(list(train.rglob("*.jpg"))), 2), "batch_size": batch,
          "train_s": summary["seconds"], "wall_s": round(wall, 1),
          **scores, "gain": round(scores["knn_top1"] - scores["random_init_knn_top1"], 4),
          "bank": args.bank or "all", "eval_s": round(eval_s, 1),
          "load_avg": [load_before, load_average()], "cpu": cpu_model(),
          "commands": ["autossl " + s for s in shown]}, args.out)


def print_table(path: Path) -> None:
    print("| run | network | budget | steps | k-NN top-1 | random init | gain | effective rank | bank | cpu |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for line in path.read_text().splitlines():
        r = json.loads(line)
        named = [o.split("=", 1)[1] for o in r["overrides"] if o.startswith("model.backbone=")]
        net = r.get("backbone") or (named or ["resnet18"])[-1]  # older rows: recipe=auto picked no network then
        print(f"| {' '.join(r['overrides']) or '(defaults)'} | {net} | {r['minutes']:g} min | {r['steps']} | "
              f"{100 * r['knn_top1']:.2f}% | {100 * r['random_init_knn_top1']:.2f}% | {100 * r['gain']:+.2f} | "
              f"{r.get('effective_rank', '')} | {r['bank']} | {r.get('cpu', '')} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
