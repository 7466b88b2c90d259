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
from statistics import fmean

sys.path.insert(0, str(Path(__file__).resolve().parent))

import budget  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("vicreg", "barlowtwins", "simclr")
VIEWS = (2, 4, 8, 16)


def grid(pretrained: str | None) -> list[dict]:
    """Every first seed before any second one, so that a grid cut short across sessions has whole curves."""
    runs = []
    for seed in (0, 1):
        for start in ["random"] + (["pretrained"] if pretrained else []):
            for method in METHODS:
                for n in VIEWS if seed == 0 else (VIEWS[0], VIEWS[-1]):
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
    p.add_argument("--bank", type=int, default=10000,
                   help="k-NN bank and probe training images (0: all 45,000; two feature passes over them cost about "
                        "6 of a 10-minute run's 18 minutes on a 2-core CPU, the 10,000 default under 2)")
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


def _mean_spread(group: list[dict], key: str) -> str:
    """Mean in %, with half the range of the seeds where there are two or more (their spread, not an error bar)."""
    values = [100 * g[key] for g in group]
    return f"{fmean(values):.2f}%" + (f" ± {(max(values) - min(values)) / 2:.2f}" if len(values) > 1 else "")


def report(jsonl: Path, markdown: Path) -> None:
    """The table and figure from the rows; a block between <!-- keep --> and <!-- /keep --> in an existing report
    (the protocol, commands and findings) is carried over."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from autossl.experiments.study import KEEP_END, KEEP_START, kept_block

    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    by: dict[tuple, list[dict]] = {}
    untrained: dict[str, dict] = {}  # start -> seed -> its scores before training (random init depends on the seed)
    for r in rows:
        _, method, n, start, seed, _minutes = r["name"].split("_")
        by.setdefault((method, start, int(n[1:])), []).append(r)
        untrained.setdefault(start, {})[seed] = {k: r[f"random_init_{k}_top1"] for k in ("knn", "linear")}
    starts = {start: {k: fmean(s[k] for s in seeds.values()) for k in ("knn", "linear")}
              for start, seeds in untrained.items()}
    lines = ["| method | start | views | runs | steps | k-NN top-1 | linear top-1 | k-NN gain over the start |",
             "|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    colours = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green")))
    for (method, start) in sorted({k[:2] for k in by}, key=lambda k: (k[1] != "random", METHODS.index(k[0]))):
        xs, curves = [], {"knn": [], "linear": []}
        for n in VIEWS:
            group = by.get((method, start, n))
            if not group:
                continue
            steps = fmean(g["steps"] for g in group)
            gain = fmean(g["knn_top1"] - g["random_init_knn_top1"] for g in group)  # each against its own seed
            lines.append(f"| {method} | {start} | {n} | {len(group)} | {steps:.0f} | {_mean_spread(group, 'knn_top1')} "
                         f"| {_mean_spread(group, 'linear_top1')} | {100 * gain:+.2f} |")
            xs.append(n)
            for ax, k in zip(axes, curves):
                curves[k].append(100 * fmean(g[f"{k}_top1"] for g in group))
                if len(group) > 1:  # each seed as a dot: the spread the curve's mean hides
                    ax.scatter([n] * len(group), [100 * g[f"{k}_top1"] for g in group], s=9, alpha=0.5,
                               color=colours[method])
        for ax, k in zip(axes, curves):
            ax.plot(xs, curves[k], marker="o", color=colours[method], linestyle="-" if start == "random" else "--",
                    label=f"{method}, {start} start")
    for ax, k, title in zip(axes, ("knn", "linear"), ("k-NN top-1 (%)", "linear probe top-1 (%)")):
        for start, scores in starts.items():
            ax.axhline(100 * scores[k], color="grey", linestyle=":" if start == "random" else "-.", linewidth=1,
                       label=f"{start} start, untrained")
        ax.set_xscale("log", base=2), ax.set_xticks(VIEWS, [str(v) for v in VIEWS])
        ax.set_xlabel("views per image (equal minutes)"), ax.set_title(title)
    figure = markdown.with_suffix(".png")
    # one legend below both panels: inside either, it hid the curves it names
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1)), fig.savefig(figure, dpi=110)
    keep = kept_block(markdown, "The protocol, commands and findings go here; `--report` keeps this block when it "
                                "rewrites the file.")
    references = [f"- {start} start, untrained: k-NN {100 * s['knn']:.2f}%, linear probe {100 * s['linear']:.2f}%"
                  + (f" (mean of {len(untrained[start])} seeds)" if len(untrained[start]) > 1 else "")
                  for start, s in starts.items()]
    markdown.write_text("\n".join(
        ["# The views study on CIFAR-10: accuracy against the number of views per image, at equal minutes", "",
         f"Tables and figure written by `python benchmarks/views_cifar10.py --report {markdown}` from "
         f"{len(rows)} runs in `{jsonl.name}` (the block below is kept).", "", KEEP_START, keep, KEEP_END, "",
         "## Results", "", *references, "", *lines, "", f"![views]({figure.name})", ""]))
    print(markdown.read_text())


if __name__ == "__main__":
    main()
