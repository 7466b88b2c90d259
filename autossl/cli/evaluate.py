"""`autossl eval` and `autossl compare` (called from autossl/cli/main.py). Bad input ends in one line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.io import UnsafeCheckpointError
from ..evaluate.api import Plot_embedding
from ..evaluate.compare import compare, plot_comparison, to_markdown
from ..evaluate.protocols import evaluate

EVAL_KINDS = ("knn", "linear", "semisup", "finetune", "transfer", "embed")
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, PermissionError, ImportError, FloatingPointError,
               UnsafeCheckpointError)


class _UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the whole usage; one line is enough
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset name, image folder, or .npz with X and y")
    p.add_argument("--test-data", help="a separate test set (default: the official test split, or a "
                                       "stratified 20%% cut, seed 0)")
    p.add_argument("--metric", "--metrics", dest="metric", default="accuracy",
                   help="comma list: accuracy, top5_accuracy, precision, recall, f1, balanced_accuracy")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--average", default="macro", choices=("macro", "micro", "weighted"))
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--preset", help="normalisation preset (mnist, cifar10, ..., imagenet); default from --data")
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the backbone")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")


def _eval_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="autossl eval", description="Evaluate a pretrained backbone.")
    p.add_argument("kind", choices=EVAL_KINDS)
    p.add_argument("--checkpoint", required=True, help=".ckpt, run folder (last.ckpt) or exported .safetensors")
    _common(p)
    p.add_argument("--out", help="write the result as JSON (embed: the PNG path, default embedding.png)")
    p.add_argument("--k", type=int, default=200, help="knn: neighbours")
    p.add_argument("--temperature", type=float, default=0.1, help="knn: vote temperature")
    p.add_argument("--augment", action="store_true", help="linear: the classic augmented protocol")
    p.add_argument("--label-fractions", default="0.01,0.1", help="semisup: label fractions")
    p.add_argument("--epochs", type=int, help="linear/finetune/transfer: training epochs")
    p.add_argument("--lr", type=float, help="finetune/transfer: base learning rate")
    p.add_argument("--layer-decay", type=float, default=0.75, help="finetune: layer-wise lr decay (1 = off)")
    p.add_argument("--mixup", type=float, default=0.0, help="finetune: mixup alpha")
    p.add_argument("--cutmix", type=float, default=0.0, help="finetune: cutmix alpha")
    p.add_argument("--ema", type=float, help="finetune: EMA decay of the weights, e.g. 0.999")
    p.add_argument("--drop-path", type=float, default=0.0, help="finetune: stochastic depth rate (ConvNeXt-V2, MAE: 0.1)")
    p.add_argument("--protocols", default="linear,finetune", help="transfer: which of linear,finetune")
    p.add_argument("--method", default="umap", choices=("umap", "tsne"), help="embed: the 2-D map")
    return p


def _options(a: argparse.Namespace) -> dict:
    opts = dict(test_dataset=a.test_data, metric=_csv(a.metric), top_k=a.top_k, average=a.average,
                image_size=a.image_size, preset=a.preset, test_size=a.test_size, batch_size=a.batch_size,
                num_workers=a.num_workers, seed=a.seed, bf16=a.bf16, device=a.device)
    if len(opts["metric"]) == 1:
        opts["metric"] = opts["metric"][0]
    return opts


def _protocol_options(a: argparse.Namespace) -> dict:
    finetune = {k: v for k, v in dict(epochs=a.epochs, lr=a.lr, layer_decay=a.layer_decay if a.layer_decay != 1 else None,
                                      mixup=a.mixup, cutmix=a.cutmix, ema_decay=a.ema,
                                      drop_path=a.drop_path).items() if v is not None}
    if a.kind == "knn":
        return dict(k=a.k, temperature=a.temperature)
    if a.kind == "linear":
        return dict(augment=a.augment, **({"epochs": a.epochs} if a.epochs else {}))
    if a.kind == "semisup":
        return dict(fractions=tuple(float(f) for f in _csv(a.label_fractions)))
    if a.kind == "finetune":
        return finetune
    return dict(protocols=tuple(_csv(a.protocols)), finetune_kwargs=finetune)


def _run(parser_fn, body, argv: list[str], prog: str) -> int:
    try:
        return body(parser_fn().parse_args(argv))
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except USER_ERRORS as err:
        line = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 2 if isinstance(err, _UsageError) else 1


def main_eval(argv: list[str]) -> int:
    """`autossl eval knn|linear|semisup|finetune|transfer|embed --checkpoint PATH --data DATA [...]`."""
    return _run(_eval_parser, _eval, argv, "autossl eval")


def _eval(a: argparse.Namespace) -> int:
    if a.kind == "embed":
        out = Plot_embedding(a.checkpoint, a.data, a.out or "embedding.png", a.method, image_size=a.image_size,
                             preset=a.preset, seed=a.seed, batch_size=a.batch_size, num_workers=a.num_workers,
                             device=a.device)
        print(f"wrote {out}")
        return 0
    result = evaluate(a.checkpoint, a.data, a.kind, **_options(a), **_protocol_options(a))
    settings = result.pop("settings")
    for name, value in result.items():
        print(f"{name}: {value:.4f}")
    print(f"({settings['protocol']}, {settings['split']}, {settings['n_train']} train / {settings['n_test']} test "
          f"images, {settings['seconds']} s)")
    if "effective_rank" in settings:  # RankMe: near 1, the features have collapsed onto a few directions
        print(f"effective rank of the test features: {settings['effective_rank']} of {settings['feature_dim']}")
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**result, "settings": settings}, indent=2, default=str))
        print(f"wrote {out}")
    return 0


def _compare_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="autossl compare", description="Evaluate several runs with one protocol on one split.")
    p.add_argument("runs", nargs="+", help="run folders (last.ckpt), .ckpt or .safetensors files")
    _common(p)
    p.set_defaults(metric="accuracy,precision,recall")
    p.add_argument("--protocol", default="knn", choices=("knn", "linear"))
    p.add_argument("--names", help="comma list of row names, one per run")
    p.add_argument("--out", default="comparison.md", help="Markdown table; the bar chart is written beside it (.png)")
    return p


def main_compare(argv: list[str]) -> int:
    """`autossl compare RUN [RUN ...] --data DATA --out table.md`: table + bar chart."""
    return _run(_compare_parser, _compare, argv, "autossl compare")


def _compare(a: argparse.Namespace) -> int:
    opts = _options(a)
    metrics = opts.pop("metric")
    names = _csv(a.names) if a.names else None
    df = compare(a.runs, a.data, metrics=metrics, protocol=a.protocol, names=names, **opts)
    table = to_markdown(df)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    png = plot_comparison(df, out.with_suffix(".png"))
    print(table, end="")
    print(f"wrote {out} and {png}")
    return 0
