"""`autossl` command line: pretrain, launch, sweep, export, list, eval, compare, demo."""
from __future__ import annotations

import sys
from pathlib import Path

from ..core.registry import REGISTRIES, did_you_mean

# Each command imports what it runs when it runs (below): `autossl --help`, a typo and `autossl list` answer
# without loading Lightning, Hydra and the evaluation stack. Not a cycle workaround: these imports point down.

USAGE = """usage: autossl COMMAND [ARGS]

commands:
  pretrain [KEY=VALUE ...]        train one experiment (Hydra overrides), e.g.
                                  autossl pretrain experiment=cifar10_byol optimizer.lr=0.5 data.num_views=4
  launch [KEY=VALUE ...] [--dry-run]
                                  the same training as a SLURM job that requeues itself on preemption or at
                                  its time limit and resumes from last.ckpt, e.g. autossl launch
                                  experiment=cifar10_byol trainer.devices=4 trainer.num_nodes=2
                                  launch.partition=gpu launch.timeout_min=240 (launch.* keys: conf/global.yaml)
  sweep [KEY=A,B ...]             train every combination (Hydra multirun), e.g.
                                  autossl sweep experiment=mnist_simclr data.num_views=2,4 method=vicreg,barlowtwins
  export CHECKPOINT --out FILE    backbone weights only, as safetensors (name and arguments in its metadata);
                                  --decoder FILE also writes a masked-image-modelling decoder
  list [methods|backbones|datasets|protocols|experiments]
  eval knn|linear|semisup|finetune|transfer|embed --checkpoint PATH --data DATA
  compare RUN [RUN ...] --out table.md
  study SWEEP_DIR --out docs/views_study.md   tables and plots of a views sweep (accuracy and loss vs views)
  demo [--quick]                  pretrain on the built-in MNIST digits and report k-NN accuracy

main options (KEY=VALUE): method, model.backbone, model.projectionhead, model.params.*, data.dataset,
  data.path, data.num_views, data.batch_size, data.image_size, optimizer.name, optimizer.lr,
  trainer.max_epochs, trainer.max_steps, trainer.precision, checkpoint.dir, name, seed, resume=true
  `autossl pretrain --cfg` prints the composed config without training.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    handlers = {"pretrain": _pretrain, "launch": _launch, "sweep": _sweep, "export": _export, "list": _list, "eval": _eval,
                "compare": _compare, "demo": _demo, "study": _study}
    if command not in handlers:
        print(f"autossl: unknown command '{command}'{did_you_mean(command, handlers)} (autossl --help lists them)",
              file=sys.stderr)
        return 2
    try:
        return int(handlers[command](rest) or 0)
    except (ValueError, FileNotFoundError, PermissionError, FloatingPointError, RuntimeError) as err:
        # one clear line, not a traceback: every error we raise on bad input names the problem and the fix
        print(f"autossl {command}: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 1


def _pretrain(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    show = "--cfg" in args
    from omegaconf import OmegaConf

    from ..train import compose, pretrain

    notes: list[str] = []
    cfg = compose([a for a in args if a != "--cfg"], notes=notes)
    if show:
        print("".join(f"# {line}\n" for line in notes) + OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    summary = pretrain(cfg)
    state = "interrupted" if summary["interrupted"] else "finished"
    print(f"{state}: {summary['name']} after {summary['steps']} steps in {summary['seconds']} s; "
          f"checkpoint {summary['checkpoint']}")
    return 0


def _launch(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    from ..train import compose
    from ..train.launch import launch

    cfg = compose([a for a in args if a != "--dry-run"])
    out = launch(cfg, dry_run="--dry-run" in args)
    if out["job_id"] is None:
        print(out["script"])
        return 0
    print(f"submitted SLURM job {out['job_id']}: {cfg.name}, {cfg.trainer.num_nodes} node(s)\n"
          f"logs: {out['folder']} ({Path(out['log']).name}; the job script {Path(out['script']).name})\n"
          f"at its time limit or on preemption it requeues itself and resumes from last.ckpt")
    return 0


def _sweep(args: list[str]) -> int:
    from ..train.sweep import run_sweep

    run_sweep(args)
    return 0


def _export(args: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="autossl export", description="Export backbone weights as safetensors.")
    p.add_argument("checkpoint")
    p.add_argument("--out", default="backbone.safetensors")
    p.add_argument("--decoder", help="also write the decoder of a masked-image-modelling run to this file")
    a = p.parse_args(args)
    from ..train import export_backbone, export_decoder

    if a.decoder:
        print(f"wrote {export_decoder(a.checkpoint, a.decoder)}")
    print(f"wrote {export_backbone(a.checkpoint, a.out)}")
    return 0


def _list(args: list[str]) -> int:
    """Every registry: what each name is, one line per entry."""
    import autossl.evaluate  # noqa: F401  (each module below registers its entries when imported)
    import autossl.train  # noqa: F401

    for kind in args or list(REGISTRIES):
        registry = REGISTRIES.get(kind)
        if registry is None:
            raise ValueError(f"cannot list '{kind}'{did_you_mean(kind, REGISTRIES)}; choose from {', '.join(REGISTRIES)}")
        print(f"{kind}:")
        for name in registry.names():
            info = registry.describe(name)
            print(f"  {name:<18} {info}" if info else f"  {name}")
        if kind == "backbones":
            print("  <any timm model name>")
    return 0


def _eval(args: list[str]) -> int:
    from .evaluate import main_eval

    return main_eval(args)


def _compare(args: list[str]) -> int:
    from .evaluate import main_compare

    return main_compare(args)


def _study(args: list[str]) -> int:
    from ..experiments.study import main as study_main

    return study_main(args)


def _demo(args: list[str]) -> int:
    from ..experiments.demo import main as demo_main

    return demo_main(args)


if __name__ == "__main__":
    sys.exit(main())
