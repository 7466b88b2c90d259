"""The views study: how the number of augmented views per image changes accuracy and SSL loss.

    autossl sweep experiment=views_study data.num_views=2,4,8,16 method=vicreg,barlowtwins
    autossl study checkpoints/views_study --out docs/views_study.md

Every run folder under the given directories (config.yaml + summary.json + last.ckpt, as `autossl
pretrain` and `autossl sweep` write them) is scored on held-out labelled images that its pretraining
never saw: exactly the split `autossl.train.run.build_loaders` held out (data.val_split, seeded by
`seed`) or data.val_path. Per run: k-NN and linear-probe accuracy of the frozen backbone (the
projector dropped, a linear classifier trained with labels), the final training loss from the run,
and the SSL loss (projector kept) on the held-out images with 2 views, comparable across N.
Runs with trainer.view_budget form the equal-compute curve (images x views fixed); the others the
equal-epochs curve. Scores are cached in each run folder (study_eval.json) so re-runs only score new runs.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset

from ..core.io import atomic_write_text
from ..core.knn import knn_predict
from ..data.loader import TransformedDataset
from ..evaluate.features import extract_features
from ..evaluate.linear import linear_probe
from ..methods.checkpoint import backbone_from_checkpoint, method_from_checkpoint
from ..train.run import build_loaders, build_model

CACHE = "study_eval.json"
CACHE_START = "study_start_eval.json"  # the untrained start, scored beside the first run that used it
KNN_K = 20  # the bank is a few thousand images: 200 neighbours (the ImageNet/CIFAR default) would span whole classes
KEEP_START, KEEP_END = "<!-- keep -->", "<!-- /keep -->"  # hand-written notes that survive a re-run


def find_runs(dirs: Sequence[str | Path]) -> list[Path]:
    """Every finished run folder (config.yaml, summary.json, last.ckpt) under `dirs`, sorted."""
    runs = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise FileNotFoundError(f"sweep folder not found: {d}; give the checkpoint.dir of an `autossl sweep`")
        runs += [s.parent for s in d.rglob("summary.json")
                 if (s.parent / "config.yaml").is_file() and (s.parent / "last.ckpt").is_file()]
    if not runs:
        raise FileNotFoundError(f"no finished runs (config.yaml + summary.json + last.ckpt) under {', '.join(map(str, dirs))}; "
                                f"run `autossl sweep experiment=views_study ...` first")
    return sorted(set(runs))


def start_label(cfg: DictConfig) -> str:
    p = cfg.model.pretrained
    if p is False or p is None or str(p).lower() == "false":
        return "random"
    return "pretrained (timm)" if p is True or str(p).lower() == "true" else f"pretrained ({Path(str(p)).stem})"


def eval_split(cfg: DictConfig, num_views: int = 2):
    """(train images, held-out images, eval transform, eval collate, views transform, views collate),
    taken from the loaders `pretrain` builds, so the held-out images are exactly those it never trained on."""

    cfg = OmegaConf.merge(cfg, {"data": {"num_workers": 0, "num_views": num_views}})
    train, val = build_loaders(cfg)
    if val is None:
        raise ValueError(f"run '{cfg.name}' has no held-out images (data.val_split=0, no data.val_path); "
                         f"retrain it with data.val_split=0.5 (as experiment=views_study does)")
    return train.dataset.base, val.dataset.base, val.dataset.transform, val.collate_fn, train.dataset.transform, \
        train.collate_fn


def _loader(ds, transform, collate, batch_size: int, limit: int | None, seed: int) -> DataLoader:

    if limit and len(ds) > limit:  # a seeded subset: tests and quick looks
        ds = Subset(ds, np.sort(np.random.default_rng(seed).choice(len(ds), limit, replace=False)).tolist())
    return DataLoader(TransformedDataset(ds, transform), batch_size=batch_size, shuffle=False, collate_fn=collate)


def score_backbone(backbone: torch.nn.Module, cfg: DictConfig, *, knn_k: int = KNN_K, probe_epochs: int = 100,
                   max_train: int | None = None, max_test: int | None = None, device: str | None = None) -> dict:
    """k-NN and linear-probe accuracy of a frozen backbone: labelled pretraining images -> held-out images."""
    train, test, transform, collate, _, _ = eval_split(cfg)
    seed = int(cfg.seed)
    tr_x, tr_y = extract_features(backbone, _loader(train, transform, collate, 256, max_train, seed), device)
    te_x, te_y = extract_features(backbone, _loader(test, transform, collate, 256, max_test, seed), device)
    if (tr_y < 0).any() or (te_y < 0).any():
        raise ValueError(f"run '{cfg.name}' trained on unlabelled images; the study needs a labelled dataset")
    n_classes = int(max(tr_y.max(), te_y.max())) + 1
    knn = knn_predict(te_x, tr_x, tr_y, n_classes, k=knn_k)[:, 0]
    logits, _ = linear_probe(tr_x, tr_y, te_x, n_classes, epochs=probe_epochs, seed=seed, device=device)
    return {"knn_acc": (knn == te_y).float().mean().item(), "linear_acc": (logits.argmax(1) == te_y).float().mean().item(),
            "n_train": len(tr_y), "n_test": len(te_y)}


@torch.no_grad()
def heldout_ssl_loss(ckpt: Path, cfg: DictConfig, *, max_test: int | None = None, max_batches: int = 20) -> float:
    """The SSL objective (projector kept) on held-out images, 2 views each, at the run's batch size,
    BatchNorm on batch statistics as in training; no gradient, the model is a throwaway copy."""

    _, test, _, _, views, collate = eval_split(cfg, num_views=2)
    model = method_from_checkpoint(ckpt).train()
    torch.manual_seed(int(cfg.seed))  # the same augmentations for every run
    batch = min(int(cfg.data.batch_size), len(test) if not max_test else min(max_test, len(test)))
    losses = []
    for i, b in enumerate(_loader(test, views, collate, batch, max_test, int(cfg.seed))):
        if i >= max_batches or len(b["views"][0]) < batch:
            break  # full batches only: the redundancy losses depend on the batch size
        try:
            losses.append(float(model.ssl_loss(model.encode_views(b["views"]), b["views"])))
        except (RuntimeError, ValueError, AttributeError):
            return math.nan  # a method whose loss needs training state (e.g. a trainer): no held-out loss
    return float(np.mean(losses)) if losses else math.nan


def evaluate_run(folder: Path, **options: Any) -> dict:
    """One table row for a run folder; cached in <folder>/study_eval.json (keyed by checkpoint time and options)."""
    cfg = OmegaConf.load(folder / "config.yaml")
    summary = json.loads((folder / "summary.json").read_text())
    ckpt = folder / "last.ckpt"
    key = {"ckpt_mtime": ckpt.stat().st_mtime, **{k: v for k, v in options.items() if k != "device"}}
    cache = folder / CACHE
    scores = None
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
        except json.JSONDecodeError:
            saved = {}  # a damaged cache: score again
        scores = saved["scores"] if saved.get("key") == key else None
    if scores is None:
        scores = score_backbone(backbone_from_checkpoint(ckpt), cfg, **options)
        scores["heldout_loss"] = heldout_ssl_loss(ckpt, cfg, max_test=options.get("max_test"))
        # atomic: a study running beside this one never reads half a file
        atomic_write_text(cache, json.dumps({"key": key, "scores": scores}, indent=2))
    metrics = summary.get("metrics", {})
    steps, n_views, bs = int(summary["steps"]), int(cfg.data.num_views), int(cfg.data.batch_size)
    return {"method": str(cfg.method), "start": start_label(cfg),
            "regime": "equal compute" if cfg.trainer.view_budget else "equal epochs", "num_views": n_views,
            "seed": int(cfg.seed),
            "steps": steps, "images_seen": steps * bs, "views_seen": steps * bs * n_views,
            "train_loss": metrics.get("train_loss_step", metrics.get("train_loss", math.nan)),
            "heldout_loss": scores["heldout_loss"], "knn_acc": scores["knn_acc"], "linear_acc": scores["linear_acc"],
            "train_seconds": summary.get("seconds"), "run": str(folder), "n_train": scores["n_train"], "n_test": scores["n_test"]}


def evaluate_starts(rows: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """The untrained starting backbones (random init, pretrained file) scored the same way: the reference
    every curve starts from."""
    import pytorch_lightning as pl


    out = []
    for start, group in rows.groupby("start"):
        folder = Path(group.iloc[0]["run"])
        cache, key = folder / CACHE_START, {k: v for k, v in options.items() if k != "device"}
        saved = json.loads(cache.read_text()) if cache.is_file() else {}
        if saved.get("key") != key:
            cfg = OmegaConf.load(folder / "config.yaml")
            pl.seed_everything(int(cfg.seed), verbose=False)  # the initialisation the runs started from
            saved = {"key": key, "scores": score_backbone(build_model(cfg).backbone, cfg, **options)}
            cache.write_text(json.dumps(saved, indent=2))
        out.append({"start": start, **saved["scores"]})
    return pd.DataFrame(out)


def compute_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Equal-compute rows, plus each equal-epochs run whose views seen match that budget (N=2 at
    budget = 1 epoch x 2 views is the same run in both regimes, so it is trained once)."""
    compute = rows[rows.regime == "equal compute"]
    extra = []
    for (method, start), g in compute.groupby(["method", "start"]):
        budgets = set(g.views_seen)
        same = rows[(rows.regime == "equal epochs") & (rows.method == method) & (rows.start == start)]
        for _, r in same.iterrows():
            close = any(abs(r.views_seen - b) <= int(r.views_seen / max(1, r.steps)) for b in budgets)
            if close and r.num_views not in set(g.num_views):
                extra.append({**r.to_dict(), "regime": "equal compute"})
    return pd.concat([compute, pd.DataFrame(extra)], ignore_index=True) if extra else compute


def study(dirs: Sequence[str | Path], *, knn_k: int = KNN_K, probe_epochs: int = 100, max_train: int | None = None,
          max_test: int | None = None, device: str | None = None, starts: bool = True,
          verbose: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run and regime, one row per starting backbone) for the runs under `dirs`."""
    options = dict(knn_k=knn_k, probe_epochs=probe_epochs, max_train=max_train, max_test=max_test, device=device)
    rows, skipped = [], []
    for folder in find_runs(dirs):
        try:
            rows.append(evaluate_run(folder, **options))
        except ValueError as err:  # e.g. the run that made a pretrained start, with no held-out labelled images
            skipped.append(str(err))
            print(f"skipped {folder}: {err}")
            continue
        if verbose:
            r = rows[-1]
            print(f"{folder}: k-NN {r['knn_acc']:.3f}, linear {r['linear_acc']:.3f}, held-out loss {r['heldout_loss']:.3f}")
    if not rows:
        raise ValueError(f"no run could be scored: {skipped[0]}")
    df = pd.DataFrame(rows)
    both = pd.concat([df[df.regime == "equal epochs"], compute_curves(df)], ignore_index=True)
    both = both.sort_values(["regime", "start", "method", "num_views", "seed"],
                            ascending=[False, False, True, True, True])
    ref = evaluate_starts(df, **options) if starts else pd.DataFrame(columns=["start", "knn_acc", "linear_acc"])
    return both.reset_index(drop=True), ref


# ---- the report -------------------------------------------------------------------------------
def plot_regime(rows: pd.DataFrame, ref: pd.DataFrame, regime: str, path: Path) -> Path:
    """Linear-probe and k-NN accuracy, and each method's SSL loss, against the number of views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows[rows.regime == regime]
    methods = sorted(rows.method.unique())
    starts = sorted(rows.start.unique(), key=lambda s: s != "random")
    styles = {s: ("-", "--", ":", "-.")[i % 4] for i, s in enumerate(starts)}
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, 2 + len(methods), figsize=(4.2 * (2 + len(methods)), 4.6), squeeze=False)
    axes = axes[0]
    for ax, metric, title in ((axes[0], "linear_acc", "linear-probe accuracy"), (axes[1], "knn_acc", "k-NN accuracy")):
        for (m, s), g in rows.groupby(["method", "start"]):
            mean, std = _over_seeds(g, metric)
            ax.errorbar(mean.index, mean, yerr=std, ls=styles[s], color=colours[m], marker="o", capsize=3,
                        label=f"{m}, {s}")
        low, high = ax.get_ylim()  # the curves' range: an untrained start far below it would squash them
        for _, r in ref.iterrows():
            if r.start in styles:
                ax.axhline(r[metric], color="grey", ls=styles[r.start], lw=0.8,
                           label=f"{r.start}, untrained: {r[metric]:.3f}")
        ax.set_ylim(low, high)
        ax.set_title(title)
        ax.set_ylabel("held-out accuracy")
    for ax, m in zip(axes[2:], methods):
        for s, g in rows[rows.method == m].groupby("start"):
            for metric, marker, alpha, what in (("heldout_loss", "o", 1.0, "held-out"),
                                                 ("train_loss", "x", 0.5, "last training batch")):
                mean, std = _over_seeds(g, metric)
                ax.errorbar(mean.index, mean, yerr=std, ls=styles[s], color=colours[m], marker=marker, alpha=alpha,
                            capsize=3, label=f"{what}, {s}")
        ax.set_title(f"{m} SSL loss (projector kept)")
        ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xscale("log", base=2)
        views = sorted(rows.num_views.unique())
        ax.set_xticks(views, [str(v) for v in views])
        ax.set_xlabel("views per image")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels: inside, it hides the curves
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{regime}: " + ("same images, N views each" if regime == "equal epochs"
                                  else "same number of views (images x N) processed"))
    fig.tight_layout(rect=(0, 0.02 + 0.045 * math.ceil(len(handles) / 3), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _over_seeds(g: pd.DataFrame, metric: str) -> tuple[pd.Series, pd.Series]:
    """Mean and standard deviation (0 for a single seed) of a metric per number of views."""
    by = g.groupby("num_views")[metric]
    return by.mean(), by.std(ddof=1).fillna(0.0)


def _table(rows: pd.DataFrame) -> str:
    cols = ["method", "start", "num_views", "seed", "steps", "images_seen", "views_seen", "train_loss", "heldout_loss",
            "knn_acc", "linear_acc", "train_seconds"]
    head = ["method", "start", "views N", "seed", "steps", "images seen", "views seen", "train loss (last batch)",
            "held-out SSL loss", "k-NN acc", "linear acc", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in rows.iterrows():
        cells = [f"{r[c]:.4f}" if c.endswith("acc") else f"{r[c]:.3f}" if c.endswith("loss") else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary(rows: pd.DataFrame) -> list[str]:
    out = []
    for (regime, start, method), g in rows.groupby(["regime", "start", "method"], sort=False):
        g = g.groupby("num_views")[["linear_acc", "knn_acc", "heldout_loss"]].mean().reset_index()  # over seeds
        best = g.loc[g.linear_acc.idxmax()]
        first, last = g.iloc[0], g.iloc[-1]
        out.append(f"- {regime}, {start}, {method}: linear accuracy {first.linear_acc:.3f} at N={first.num_views:.0f} -> "
                   f"{last.linear_acc:.3f} at N={last.num_views:.0f} (best N={best.num_views:.0f}); k-NN "
                   f"{first.knn_acc:.3f} -> {last.knn_acc:.3f}; held-out loss {first.heldout_loss:.3f} -> "
                   f"{last.heldout_loss:.3f}")
    return out


def kept_block(report: Path, default: str) -> str:
    """The hand-written text between <!-- keep --> and <!-- /keep --> in an existing report, else `default`."""
    if report.is_file() and KEEP_START in (old := report.read_text()) and KEEP_END in old:
        return old.split(KEEP_START, 1)[1].split(KEEP_END, 1)[0].strip("\n")
    return default


def write_report(rows: pd.DataFrame, ref: pd.DataFrame, out: str | Path, knn_k: int = KNN_K) -> Path:
    """Markdown table + one PNG per regime beside it (<stem>_equal_epochs.png, ...). A block between
    <!-- keep --> and <!-- /keep --> in an existing report (commands, findings) is carried over."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keep = kept_block(out, "Commands and findings go here; `autossl study` keeps this block when it rewrites the "
                           "report.")
    cfg = OmegaConf.load(Path(rows.iloc[0]["run"]) / "config.yaml")
    d = cfg.data
    held = f"data.val_path={d.val_path}" if d.val_path else f"data.val_split={d.val_split}, seed {cfg.seed}"
    parts = [
        "# Views study: accuracy and SSL loss against the number of views per image", "",
        f"Written by `autossl study` from {rows.run.nunique()} runs (tables, plots and the automatic summary are "
        "regenerated; the block below is kept).", "", KEEP_START, keep, KEEP_END, "",
        "## Protocol", "",
        f"- Data: {d.dataset}{' ' + str(d.path) if d.path else ''} at {d.image_size or 'preset'} px; "
        f"{int(rows.n_train.iloc[0]) if 'n_train' in rows else '?'} labelled pretraining images score the probes, "
        f"{int(rows.n_test.iloc[0])} held-out images ({held}) that no pretraining run saw are the test set.",
        f"- Backbone {cfg.model.backbone}, batch {d.batch_size}, optimiser {cfg.optimizer.name} lr {cfg.optimizer.lr}, "
        f"precision {cfg.trainer.precision}.",
        f"- k-NN: weighted cosine, k={knn_k}, T=0.1, bank = frozen features of the pretraining images.",
        "- Linear probe: the projector replaced by a linear classifier on frozen, standardised backbone features "
        "(Adam, lr x L2 grid picked on a 10% validation cut of the pretraining images).",
        "- Held-out SSL loss: the method's own objective, projector kept, on the held-out images with 2 views "
        "each at the run's batch size (comparable across N: multi-view losses average over view pairs). "
        "'train loss' is the last training batch's loss as the run logged it.",
        "- Equal epochs: every run sees the same images, N views each (compute grows with N). Equal compute: "
        "trainer.view_budget fixes images x N, so runs with more views take fewer steps.", "",
        "## Untrained starting backbones", "", "| start | k-NN acc | linear acc |", "|---|---|---|",
        *[f"| {r.start} | {r.knn_acc:.4f} | {r.linear_acc:.4f} |" for _, r in ref.iterrows()], ""]
    for regime in ("equal epochs", "equal compute"):
        sub = rows[rows.regime == regime]
        if sub.empty:
            continue
        png = plot_regime(rows, ref, regime, out.with_name(f"{out.stem}_{regime.replace(' ', '_')}.png"))
        parts += [f"## {regime.capitalize()}", "", _table(sub), "", f"![{regime}]({png.name})", ""]
    parts += ["## Automatic summary (means over seeds where runs were repeated)", "", *_summary(rows), ""]
    out.write_text("\n".join(parts))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="autossl study", description="Accuracy and SSL loss against the number of views, "
                                "for the runs of one or more sweeps (docs/views_study.md).")
    p.add_argument("sweep_dirs", nargs="+", help="checkpoint.dir of the sweep(s); every run folder below is scored")
    p.add_argument("--out", default="docs/views_study.md", help="Markdown report; plots are written beside it")
    p.add_argument("--knn-k", type=int, default=KNN_K, help="neighbours (20 suits banks of a few thousand images)")
    p.add_argument("--probe-epochs", type=int, default=100)
    p.add_argument("--max-train", type=int, default=None, help="score on a seeded subset of the pretraining images")
    p.add_argument("--max-test", type=int, default=None, help="score on a seeded subset of the held-out images")
    p.add_argument("--device", default=None)
    p.add_argument("--no-starts", action="store_true", help="skip scoring the untrained starting backbones")
    a = p.parse_args(list(argv) if argv is not None else None)
    rows, ref = study(a.sweep_dirs, knn_k=a.knn_k, probe_epochs=a.probe_epochs, max_train=a.max_train,
                      max_test=a.max_test, device=a.device, starts=not a.no_starts)
    print(f"wrote {write_report(rows, ref, a.out, knn_k=a.knn_k)}")
    return 0
