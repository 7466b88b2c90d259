"""Pretraining from a validated config: data, model, Lightning trainer, checkpoints, resume."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset

from ..core.io import atomic_write_text
from ..data import Augment, make_dataloader, make_eval_loader
from ..data.cache import DecodedCache
from ..data.datasets import build_dataset, check_same_classes, default_image_size
from ..data.views import preset_for
from ..methods import get_method
from .budget import TimeBudget
from .callbacks import GatheredSyncBatchNorm, GracefulStop
from .checkpoint import AtomicCheckpointIO, check_writable
from .figures import ReconstructionFigure
from .progressive import ProgressiveViewSize
from .run_checkpoints import RunCheckpoints, resume_checkpoint


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.checkpoint.dir) / str(cfg.name)


def image_size_of(cfg: DictConfig) -> int:
    """data.image_size, else the dataset preset's, else (a folder) the images' own size (16 to 224 px):
    the loaders and the model are both built for this size."""
    d = cfg.data
    if d.image_size:
        return int(d.image_size)
    if d.dataset != "folder":
        return preset_for(d.dataset).image_size
    return default_image_size(build_dataset(d.path)) or preset_for(None).image_size


def build_loaders(cfg: DictConfig):
    """Training loader of views, and a validation loader (held-out labelled images) or None."""
    d = cfg.data
    source: Any = d.path if d.dataset == "folder" else d.dataset
    extra = {"root": d.root} if d.root else {}
    full = build_dataset(source, train=True, **extra)
    if d.get("cache_images"):
        full = DecodedCache(full)
    val_data = None
    if d.val_path:
        val_data = build_dataset(d.val_path, labelled=True)
        check_same_classes(full, val_data, "training", "validation")
    elif float(d.val_split) > 0 and any(t >= 0 for t in getattr(full, "targets", [])[:1000]):
        g = torch.Generator().manual_seed(int(cfg.seed))
        order = torch.randperm(len(full), generator=g).tolist()
        n_val = max(1, int(len(full) * float(d.val_split)))
        val_data, full = Subset(full, order[:n_val]), Subset(full, order[n_val:])
    preset = d.dataset if d.dataset != "folder" else None
    size = image_size_of(cfg)
    a = d.augment
    augment = Augment(crop_scale=(float(a.crop_min_scale), 1.0), jitter=tuple(a.jitter), jitter_prob=a.jitter_prob,
                      grayscale_prob=a.grayscale_prob, solarize_prob=a.solarize_prob, hflip=a.hflip,
                      blur_prob=(0.5 if preset_for(preset).blur else 0.0) if a.blur_prob is None else a.blur_prob)
    view_size = int(d.view_size) if d.get("view_size") else size  # smaller views of the same images (CNNs)
    train = make_dataloader(full, num_views=int(d.num_views), batch_size=int(d.batch_size), image_size=view_size,
                            preset=preset, asymmetric=bool(d.asymmetric), num_local=int(d.num_local),
                            local_size=d.local_size, augment=augment, num_workers=d.num_workers, seed=int(cfg.seed),
                            batched_views=bool(d.get("batched_views", False)))
    val = None
    if val_data is not None:
        val = make_eval_loader(val_data, batch_size=max(256, int(d.batch_size)), image_size=size,
                               preset=preset, num_workers=d.num_workers)
    return train, val


def build_model(cfg: DictConfig, num_classes: int | None = None) -> pl.LightningModule:
    m, o, d = cfg.model, cfg.optimizer, cfg.data
    kwargs = dict(backbone=m.backbone, projectionhead=m.projectionhead, memory_bank=bool(m.memory_bank),
                  image_size=image_size_of(cfg),
                  pretrained=m.pretrained, forward_views=m.forward_views, optimizer=o.name, lr=o.lr,
                  weight_decay=o.weight_decay, sgd_momentum=o.momentum, scale_lr=o.scale_lr,
                  warmup_epochs=o.warmup_epochs, min_lr=o.min_lr, num_views=int(d.num_views), num_classes=num_classes,
                  channels_last=bool(cfg.trainer.channels_last), compile=bool(cfg.trainer.compile), seed=int(cfg.seed),
                  max_bad_fraction=float(d.max_bad_fraction))
    kwargs.update(OmegaConf.to_container(m.params, resolve=True) or {})
    return get_method(str(cfg.method))(**kwargs)


def build_trainer(cfg: DictConfig, ckpt_dir: Path, callbacks: list | None = None,
                  plugins: list | None = None) -> pl.Trainer:
    from pytorch_lightning.callbacks import LearningRateMonitor, TQDMProgressBar
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    t, lg = cfg.trainer, cfg.logging
    log_dir = Path(lg.dir) / str(cfg.name)
    loggers: list = []
    if lg.csv:
        loggers.append(CSVLogger(str(log_dir), name="csv", version=""))
    if lg.tensorboard:
        loggers.append(TensorBoardLogger(str(log_dir), name="tensorboard", version=""))
    if lg.wandb:
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(WandbLogger(project=lg.wandb_project, name=str(cfg.name), save_dir=str(log_dir)))
    c = cfg.checkpoint
    ckpt = RunCheckpoints(ckpt_dir, every_n_steps=c.get("every_n_steps"), every_n_minutes=c.get("every_n_minutes"),
                          every_n_epochs=c.every_n_epochs, keep_last=int(c.get("keep_last", 2)))
    cbs = [ckpt, GracefulStop(ckpt_dir / "last.ckpt"), ReconstructionFigure(log_dir)] + (callbacks or [])
    if loggers:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    if t.progress_bar:  # tqdm whether or not `rich` is installed: it streams to logs and pipes line by line
        cbs.append(TQDMProgressBar())
    precision = str(t.precision)
    if precision == "16-mixed" and not torch.cuda.is_available():
        raise ValueError("trainer.precision=16-mixed needs a GPU; on CPU use bf16-mixed or 32")
    # torch's SyncBatchNorm runs on CUDA only: on CPU processes the same statistics come from GatheredBatchNorm
    cpu_sync = bool(t.sync_batchnorm) and (str(t.accelerator) == "cpu" or not torch.cuda.is_available())
    layer_sync = [GatheredSyncBatchNorm()] if cpu_sync else []
    max_steps, max_epochs = int(t.max_steps), int(t.max_epochs)
    if t.view_budget:  # equal compute across num_views: fewer steps when each image gives more views
        max_steps = max(1, -(-int(t.view_budget) // (int(cfg.data.batch_size) * int(cfg.data.num_views))))
        max_epochs = -1
    if cfg.data.get("final_view_size"):
        cbs.append(ProgressiveViewSize(int(cfg.data.final_view_size), float(cfg.data.final_view_share)))
    if t.budget_minutes:  # wall time decides: steps and epochs unbounded, TimeBudget stops the run
        cbs.append(TimeBudget(float(t.budget_minutes)))
        max_steps, max_epochs = -1, -1
    return pl.Trainer(max_epochs=max_epochs, max_steps=max_steps, precision=precision,
                      accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=int(t.num_nodes),
                      sync_batchnorm=bool(t.sync_batchnorm) and not cpu_sync, logger=loggers or False,
                      callbacks=cbs, plugins=[AtomicCheckpointIO()] + layer_sync + (plugins or []), log_every_n_steps=int(t.log_every_n_steps),
                      check_val_every_n_epoch=int(t.check_val_every_n_epoch), enable_progress_bar=bool(t.progress_bar),
                      default_root_dir=str(log_dir), num_sanity_val_steps=0)


def pretrain(cfg: DictConfig, callbacks: list | None = None, plugins: list | None = None) -> dict:
    """Train one experiment. Writes <checkpoint.dir>/<name>/{config.yaml,last.ckpt,...}. Returns a summary.
    `callbacks` and `plugins` are added to the Trainer's (`autossl launch` adds its SLURM ones)."""
    ckpt_dir = check_writable(run_dir(cfg))
    check_writable(Path(cfg.logging.dir) / str(cfg.name))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    train, val = build_loaders(cfg)
    model = build_model(cfg)
    last = ckpt_dir / "last.ckpt"
    ckpt_path = None
    if cfg.resume:
        found = resume_checkpoint(ckpt_dir)
        if found is None:
            raise FileNotFoundError(f"resume=true but {last} does not exist (nor an intact step checkpoint); "
                                    f"run without resume=true first")
        ckpt_path = str(found)
        _say(f"resuming {cfg.name} from {found}")
    _write_config(cfg, ckpt_dir)
    trainer = build_trainer(cfg, ckpt_dir, callbacks, plugins)
    start = time.time()
    trainer.fit(model, train, val, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    summary = {"name": str(cfg.name), "method": str(cfg.method), "steps": trainer.global_step,
               "epochs": trainer.current_epoch, "seconds": round(time.time() - start, 1), "metrics": metrics,
               "checkpoint": str(last), "interrupted": any(getattr(c, "received", None) for c in trainer.callbacks)}
    atomic_write_text(ckpt_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


@rank_zero_only
def _say(text: str) -> None:
    print(text, flush=True)


def _write_config(cfg: DictConfig, folder: Path) -> None:
    """The resolved config beside the checkpoints (atomically, like them)."""
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
