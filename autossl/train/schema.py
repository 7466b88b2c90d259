"""The type and range of every configuration key (conf/global.yaml), and of a method's own parameters
(model.params, checked against the value types of the method's signature and defaults). Each check fails in
one line that names the key, so `lr=true` or `model.params.temperature=abc` is refused before any work
instead of becoming 1.0 or a traceback mid-training."""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf


class Rule:
    """A value check: `kind` (what the value must be, in words) and a predicate."""

    def __init__(self, kind: str, ok: Callable[[Any], bool], nullable: bool = False):
        self.kind, self.ok, self.nullable = kind, ok, nullable

    def check(self, key: str, value: Any) -> str | None:
        if value is None and self.nullable:
            return None
        if not self.ok(value):
            shown = "null" if value is None else repr(value) if isinstance(value, str) else \
                str(value).lower() if isinstance(value, bool) else str(value)
            return f"{key} must be {self.kind}{' (or null)' if self.nullable else ''}, got {shown}"
        return None


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None, nullable: bool = False) -> Rule:
    return Rule(f"an integer >= {lo}" if lo is not None else "an integer",
                lambda v: _int(v) and (lo is None or v >= lo), nullable)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
           nullable: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        return _num(v) and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
    if lo is None and hi is None:
        return Rule("a number", ok, nullable)
    if hi is None and lo == 0:
        return Rule("a positive number" if lo_open else "a number >= 0", ok, nullable)
    lo_s = f"{'(' if lo_open else '['}{lo}" if lo is not None else "(-inf"
    hi_s = f"{hi}{')' if hi_open else ']'}" if hi is not None else "inf)"
    return Rule(f"a number in {lo_s}, {hi_s}", ok, nullable)


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def text(nullable: bool = False) -> Rule:
    return Rule("a string", lambda v: isinstance(v, str) and bool(v), nullable)


def choice(*options: str, nullable: bool = False) -> Rule:
    """A name from `options` (case-insensitive); an integer counts as its text (Hydra reads precision=32 as 32)."""
    return Rule(f"one of {', '.join(options)}", lambda v: (isinstance(v, str) or _int(v)) and
                str(v).lower() in {o.lower() for o in options}, nullable)


PROB = number(0, 1)
SLURM_NAME = Rule("a name", lambda v: (isinstance(v, str) and bool(v)) or _int(v), nullable=True)  # Hydra reads 2080 as int
SCHEMA: dict[str, Rule] = {
    "name": text(), "method": text(), "seed": integer(0), "resume": boolean(),
    "recipe": choice("auto", "none", nullable=True),
    "model.backbone": text(), "model.projectionhead": choice("MLP", "linear", "none"), "model.memory_bank": boolean(),
    "model.pretrained": Rule("true, false or a weights file path", lambda v: isinstance(v, (bool, str))),
    "model.forward_views": choice("concat", "per_view"),
    "model.params": Rule("a mapping of parameter: value", lambda v: isinstance(v, dict), nullable=True),
    "data.dataset": text(), "data.path": text(nullable=True), "data.root": text(nullable=True),
    "data.val_path": text(nullable=True), "data.val_split": number(0, 1, hi_open=True),
    "data.image_size": integer(8, nullable=True), "data.view_size": integer(8, nullable=True),
    "data.final_view_size": integer(8, nullable=True), "data.final_view_share": number(0, 1, lo_open=True),
    "data.cache_images": boolean(), "data.num_views": integer(1), "data.asymmetric": boolean(),
    "data.num_local": integer(0), "data.local_size": integer(4, nullable=True), "data.batch_size": integer(1),
    "data.num_workers": integer(0, nullable=True), "data.batched_views": boolean(), "data.max_bad_fraction": PROB,
    "data.augment.crop_min_scale": number(0, 1, lo_open=True),
    "data.augment.jitter": Rule("a list of 4 numbers >= 0 (brightness, contrast, saturation, hue)",
                                lambda v: isinstance(v, list) and len(v) == 4 and all(_num(x) and x >= 0 for x in v)),
    "data.augment.jitter_prob": PROB, "data.augment.grayscale_prob": PROB,
    "data.augment.blur_prob": number(0, 1, nullable=True), "data.augment.solarize_prob": PROB,
    "data.augment.hflip": boolean(),
    "optimizer.name": choice("sgd", "adamw", "lars", nullable=True), "optimizer.lr": number(0, lo_open=True, nullable=True),
    "optimizer.weight_decay": number(0, nullable=True), "optimizer.momentum": number(0, 1, hi_open=True),
    "optimizer.scale_lr": boolean(), "optimizer.warmup_epochs": number(0), "optimizer.min_lr": number(0),
    "trainer.max_epochs": integer(-1), "trainer.max_steps": integer(-1), "trainer.view_budget": integer(1, nullable=True),
    "trainer.budget_minutes": number(0, lo_open=True, nullable=True),
    "trainer.precision": choice("32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64"),
    "trainer.accelerator": choice("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
    "trainer.devices": Rule("a positive integer, a list of device ids, -1 or 'auto'",
                            lambda v: (_int(v) and (v >= 1 or v == -1)) or v == "auto" or
                            (isinstance(v, list) and bool(v) and all(_int(x) and x >= 0 for x in v))),
    "trainer.strategy": text(), "trainer.num_nodes": integer(1), "trainer.sync_batchnorm": boolean(),
    "trainer.channels_last": boolean(), "trainer.compile": boolean(),
    "trainer.log_every_n_steps": integer(1), "trainer.check_val_every_n_epoch": integer(1),
    "trainer.progress_bar": boolean(),
    "checkpoint.dir": text(), "checkpoint.every_n_epochs": integer(1, nullable=True),
    "checkpoint.every_n_steps": integer(1, nullable=True), "checkpoint.every_n_minutes": number(0, lo_open=True, nullable=True),
    "checkpoint.keep_last": integer(1),
    "logging.dir": text(), "logging.csv": boolean(), "logging.tensorboard": boolean(), "logging.wandb": boolean(),
    "logging.wandb_project": text(),
    "launch.partition": SLURM_NAME, "launch.account": SLURM_NAME, "launch.qos": SLURM_NAME,
    "launch.gpus_per_node": integer(0, nullable=True), "launch.cpus_per_task": integer(1, nullable=True),
    "launch.mem_gb": number(0, lo_open=True, nullable=True), "launch.timeout_min": integer(1),
    "launch.signal_delay_s": integer(10), "launch.max_timeouts": integer(0),
    "launch.setup": Rule("a list of shell lines", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "launch.folder": text(nullable=True), "launch.dry_run": boolean(),
}


def check_values(cfg: DictConfig) -> str | None:
    """The first problem with a value of the composed config, as one line; None when every value is valid."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key, rule in SCHEMA.items():
        node: Any = container
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        problem = rule.check(key, node)
        if problem:
            return problem
    return None


def check_method_params(method: type, params: dict, base: type) -> str | None:
    """model.params against the method: each value of the type of its default (numbers for numbers, true/false
    for flags, text for names), so a bad value fails here rather than mid-training."""
    defaults: dict[str, Any] = {}
    for cls in (base, method):
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if p.default is not inspect.Parameter.empty:
                defaults[name] = p.default
    defaults.update(getattr(method, "defaults", {}))
    params = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else params
    for key, value in (params or {}).items():
        default = None if key == "pretrained" else defaults.get(key)  # pretrained: a flag or a path
        if default is None or value is None:
            continue
        if isinstance(default, bool):
            rule = boolean()
        elif isinstance(default, (int, float)):
            rule = number()
        elif isinstance(default, str):
            rule = text()
        elif isinstance(default, (list, tuple)):
            rule = Rule("a list", lambda v: isinstance(v, (list, tuple)))
        else:
            continue
        problem = rule.check(f"model.params.{key}", value)
        if problem:
            return problem
    return None
