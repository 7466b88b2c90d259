"""Configuration: Hydra composes `global.yaml` + an experiment YAML + command-line overrides; then
every key and value is validated, so a typo fails in one line that names the nearest valid key."""
from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..backbones import is_fixed_size, resolve_name
from ..core.registry import EXPERIMENTS, did_you_mean
from ..data.datasets import DATASETS
from ..methods import SSLMethod, get_method
from .recipe import apply_recipe
from .schema import check_method_params, check_values

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
USER_EXPERIMENTS = "experiments"  # ./experiments/NAME.yaml, as the earlier autoSSL laid them out
FREE_FORM = ("model.params",)  # method hyper-parameters: checked against the method instead
# SLURM's names for what the trainer keys already say (one value, not two that could disagree)
SAME_AS = {"launch.nodes": "trainer.num_nodes", "launch.tasks_per_node": "trainer.devices",
           "launch.ntasks_per_node": "trainer.devices"}


class ConfigError(ValueError):
    """A bad configuration key or value (the message is one line)."""


def _known_keys() -> set[str]:
    base = OmegaConf.load(CONF_DIR / "global.yaml")
    base.pop("defaults", None)
    return set(_flatten(OmegaConf.to_container(base, resolve=False)))


def _flatten(d: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(d, dict):
        if prefix:
            yield prefix
        for k, v in d.items():
            if prefix in FREE_FORM:
                continue
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix


def _check_key(key: str, known: set[str], where: str) -> None:
    if key in known or any(key.startswith(f + ".") for f in FREE_FORM) or key.startswith("hydra.") or key == "experiment":
        return
    if key in SAME_AS:
        raise ConfigError(f"unknown config key '{key}' {where}: use '{SAME_AS[key]}' (autossl launch asks SLURM "
                          f"for trainer.num_nodes nodes of trainer.devices processes each)")
    raise ConfigError(f"unknown config key '{key}' {where}{did_you_mean(key, known, 0.5)}")


def available_experiments() -> list[str]:
    """Shipped (conf/experiment) and the user's (./experiments) YAML experiments, each registered in
    the EXPERIMENTS registry under its file name with the file as its entry."""
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")) + sorted(Path(USER_EXPERIMENTS).glob("*.yaml")):
        if path.stem not in EXPERIMENTS:
            EXPERIMENTS.register(path.stem, path, info=_first_comment(path))
    return EXPERIMENTS.names()


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
    return str(path)


def compose(overrides: list[str] | None = None, notes: list[str] | None = None) -> DictConfig:
    """global.yaml <- experiment <- recipe (recipe=auto, the default with a time budget) <- overrides, validated.
    `notes`, when given, receives the recipe's picks and why (what `autossl pretrain --cfg` prints)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    overrides = list(overrides or [])
    known = _known_keys()
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" not in o:
            raise ConfigError(f"override '{o}' has no value; write key=value, e.g. optimizer.lr=0.5")
        _check_key(key, known, "on the command line")
        if key == "experiment" and o.split("=", 1)[1] not in available_experiments() + ["null"]:
            name = o.split("=", 1)[1]
            raise ConfigError(f"unknown experiment '{name}'{did_you_mean(name, available_experiments(), 0.6)} "
                              f"(autossl list experiments shows them)")
    explicit = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    overrides = [_free_form(o) for o in overrides]
    GlobalHydra.instance().clear()
    with tempfile.TemporaryDirectory() as tmp:
        search = []
        if Path(USER_EXPERIMENTS).is_dir():  # expose ./experiments as the `experiment` group too
            (Path(tmp) / "experiment").symlink_to(Path(USER_EXPERIMENTS).resolve())
            search = [f"hydra.searchpath=[file://{tmp}]"]
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = hydra_compose("global", overrides=search + overrides)
        except HydraException as err:
            raise ConfigError(str(err).splitlines()[0]) from None
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    validate(cfg, known, views=False)  # the recipe reads a valid method and backbone; it may set the view keys
    picked = apply_recipe(cfg, explicit, experiment=_experiment_keys(overrides))
    validate(cfg, known)
    if notes is not None:
        notes.extend(picked)
    return cfg


def _experiment_keys(overrides: list[str]) -> set[str]:
    """The keys the chosen experiment sets (recipe=auto keeps the network an experiment chose)."""
    names = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == "experiment"]
    if not names or names[-1] in ("null", ""):
        return set()
    available_experiments()
    exp = OmegaConf.to_container(OmegaConf.load(EXPERIMENTS.get(names[-1])), resolve=False)
    return set(_flatten(exp))


def _free_form(override: str) -> str:
    """Keys under model.params may be new: Hydra needs '+' to add them."""
    key = override.split("=", 1)[0]
    if key.startswith("model.params.") and not key.startswith(("+", "~")):
        return "++" + override
    return override


def validate(cfg: DictConfig, known: set[str] | None = None, views: bool = True) -> DictConfig:
    """Reject unknown keys (a typo in an experiment YAML) and bad values, each in one line. `views=False` leaves
    out the checks between the view keys (compose runs them after recipe=auto has set its keys)."""
    known = known or _known_keys()
    for key in _flatten(OmegaConf.to_container(cfg, resolve=False)):
        _check_key(key, known, "in the experiment")
    try:
        problem = check_values(cfg)
    except OmegaConfBaseException as err:  # e.g. an interpolation ${...} that does not resolve
        raise ConfigError(str(err).splitlines()[0]) from None
    if problem:
        raise ConfigError(problem)
    method = _value(lambda: get_method(str(cfg.method)))
    _value(lambda: resolve_name(str(cfg.model.backbone)))
    if cfg.data.dataset not in DATASETS:
        raise ConfigError(f"data.dataset='{cfg.data.dataset}' is not one of {', '.join(DATASETS[:5])}"
                          f"{did_you_mean(str(cfg.data.dataset), DATASETS)}")
    if cfg.data.dataset == "folder" and not cfg.data.path:
        raise ConfigError("data.dataset=folder needs data.path=/path/to/images")
    if cfg.trainer.budget_minutes and cfg.trainer.view_budget:
        raise ConfigError("trainer.budget_minutes and trainer.view_budget both set the run's length; set one of them")
    problem = _check_view_sizes(cfg) if views else None
    if problem:
        raise ConfigError(problem)
    if int(cfg.data.num_views) < method.min_views:
        raise ConfigError(f"data.num_views={cfg.data.num_views} is too few for {cfg.method}: it needs at least {method.min_views}")
    allowed = set(method.defaults) | _init_args()
    for k in (cfg.model.params or {}):
        if k not in allowed:
            raise ConfigError(f"unknown parameter model.params.{k} for {cfg.method}{did_you_mean(str(k), allowed)}")
    problem = check_method_params(method, cfg.model.params, SSLMethod)
    if problem:
        raise ConfigError(problem)
    return cfg


def _check_view_sizes(cfg: DictConfig) -> str | None:
    d = cfg.data
    if d.get("final_view_size") and not (d.batched_views and d.num_workers == 0):
        return ("data.final_view_size changes the views' size while training, in the training process: it needs "
                "data.batched_views=true and data.num_workers=0")
    sized = [k for k in ("view_size", "final_view_size") if d.get(k) and d.get(k) != d.image_size]
    if sized and is_fixed_size(str(cfg.model.backbone)):
        return (f"data.{sized[0]}={d.get(sized[0])} differs from the image size, which {cfg.model.backbone} cannot "
                f"take (its position grid is built for one size); leave data.{sized[0]} unset for it")
    return None


def _init_args() -> set[str]:
    return {p for p in inspect.signature(SSLMethod.__init__).parameters if p not in ("self", "method_kwargs")}


def _value(fn):
    try:
        return fn()
    except ValueError as err:
        raise ConfigError(str(err)) from None


available_experiments()  # register the shipped and ./experiments YAMLs, so `autossl list` shows them
