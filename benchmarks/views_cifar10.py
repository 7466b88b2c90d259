"""The views study at CIFAR-10 scale: how the number of augmented views per image (N = 2, 4, 8, 16) changes k-NN and
linear-probe accuracy at equal compute (the same minutes per run), for VICReg, Barlow Twins and SimCLR, from a
random and from a pretrained start, with a second seed at both ends of every curve.

    python benchmarks/views_cifar10.py --dry-run                  # the runs, as commands
    python benchmarks/views_cifar10.py --minutes 10               # run what is not in --out yet (resumable)
    python benchmarks/views_cifar10.py --report docs/views_cifar10.md   # tables + figure from --out

Each run is one `benchmarks/budget.py --linear` row (`autossl pretrain ... trainer.budget_minutes=M data.num_views=N`,
then `autossl eval knn` and `autossl eval linear` on the held-out split): the recipe is the budget's own
(recipe=auto), the batch stays 128 images, so N views cost N/2 times the compute of 2 per step and equal minutes
mean fewer steps. A run already in --out is skipped, so the grid can be spread over several sessions.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import budget  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("vicreg", "barlowtwins", "simclr")
VIEWS = (2, 4, 8, 16)


def grid(pretrained: str | None) -> list[dict]:
    runs = []
    for start in ["random"] + (["pretrained"] if pretrained else []):
        for method in METHODS:
            for n in VIEWS:
                for seed in (0, 1) if n in (VIEWS[0], VIEWS[-1]) else (0,):
                    runs.append({"method": method, "views": n, "seed": seed, "start": start})
    return runs


def overrides(run: dict, pretrained: str | None, backbone: str) -> list[str]:
    out = [f"method={run['method']}", f"model.backbone={backbone}", f"data.num_views={run['views']}",
           f"seed={run['seed']}"]
    return out + ([f"model.pretrained={pretrained}"] if run["start"] == "pretrained" else [])


def run_name(run: dict, minutes: float) -> str:
    return f"views_{run['method']}_n{run['views']}_{run['start']}_seed{run['seed']}_{minutes:g}min"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="budget of every run (equal compute)")
    p.add_argument("--pretrained", help="weights of the pretrained start (e.g. an exported 20-minute SimCLR backbone, "
                                        "autossl export ... --out simclr20.safetensors)")
    p.add_argument("--backbone", default="resnet18",
                   help="one network for every run (a pretrained start must match it): ResNet-18, on which all six "
                        "seed methods beat random init in 5 minutes; VICReg starts slower on WRN-28-2")
    p.add_argument("--bank", type=int, default=0, help="k-NN bank and probe training images (0: all 45,000)")
    p.add_argument("--out", default=str(REPO / "docs" / "views_cifar10.jsonl"))
    p.add_argument("--work-dir", default="/tmp/autossl-views")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--report", metavar="MARKDOWN", help="write the tables and figure from --out, and exit")
    args = p.parse_args(argv)
    if args.report:
        return report(Path(args.out), Path(args.report))
    done = {json.loads(line)["name"] for line in Path(args.out).read_text().splitlines()} \
        if Path(args.out).exists() else set()
    for run in grid(args.pretrained):
        name = run_name(run, args.minutes)
        command = ["--minutes", f"{args.minutes:g}", "--linear", "--bank", str(args.bank), "--name", name,
                   "--out", args.out, "--work-dir", args.work_dir, *overrides(run, args.pretrained, args.backbone)]
        if name in done:
            continue
        if args.dry_run:
            print("python benchmarks/budget.py " + " ".join(command))
            continue
        budget.main(command)


def report(jsonl: Path, markdown: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        method, n, start = r["name"].split("_")[1], int(r["name"].split("_")[2][1:]), r["name"].split("_")[3]
        by.setdefault((method, start, n), []).append(r)
    lines = ["| method | start | views | runs | steps | k-NN top-1 | linear top-1 |", "|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (method, start) in sorted({k[:2] for k in by}):
        xs, knn, lin = [], [], []
        for n in VIEWS:
            group = by.get((method, start, n))
            if not group:
                continue
            mean = {k: sum(g[k] for g in group) / len(group) for k in ("knn_top1", "linear_top1", "steps")}
            spread = "" if len(group) == 1 else f" ± {50 * abs(group[0]['knn_top1'] - group[1]['knn_top1']):.2f}"
            lines.append(f"| {method} | {start} | {n} | {len(group)} | {mean['steps']:.0f} | "
                         f"{100 * mean['knn_top1']:.2f}%{spread} | {100 * mean['linear_top1']:.2f}% |")
            xs.append(n), knn.append(100 * mean["knn_top1"]), lin.append(100 * mean["linear_top1"])
        for ax, ys in zip(axes, (knn, lin)):
            ax.plot(xs, ys, marker="o", label=f"{method}, {start}")
    for ax, title in zip(axes, ("k-NN top-1 (%)", "linear probe top-1 (%)")):
        ax.set_xscale("log", base=2), ax.set_xticks(VIEWS, [str(v) for v in VIEWS])
        ax.set_xlabel("views per image (equal minutes)"), ax.set_title(title), ax.legend(fontsize=7)
    figure = markdown.with_suffix(".png")
    fig.tight_layout(), fig.savefig(figure, dpi=110)
    markdown.write_text("\n".join(lines) + f"\n\n![views]({figure.name})\n")
    print(markdown.read_text())


if __name__ == "__main__":
    main()
