"""The LightningModule every method stands on. It owns the shared mechanics; a method file adds
only its heads and its loss (and its momentum target or queue, by switching them on here).

Shared here: N views through the backbone, an optional momentum target with a cosine schedule,
optimiser and per-step schedule, online linear probe and k-NN monitor on detached features,
skipped-file accounting, a NaN guard, and checks when a checkpoint is loaded.
"""
from __future__ import annotations

from typing import Any, Sequence

import pytorch_lightning as pl
import torch
import torch.nn as nn

from pytorch_lightning.utilities import rank_zero_warn

from ..backbones import create_backbone
from ..heads import projection_head
from ..train.optim import build_optimizer, build_scheduler, scaled_lr, split_decay
from .batch import unpack_batch
from .momentum import cosine_tau, ema_update, momentum_copy
from .online import OnlineKNN, OnlineProbe


class SSLMethod(pl.LightningModule):
    name = "base"
    min_views = 2
    uses_momentum = False  # True: a frozen EMA copy of backbone+projector is kept as `self.target_*`
    supports_memory_bank = False  # True: `memory_bank=True` turns on a queue of negatives
    defaults: dict[str, Any] = {}  # per-method hyper-parameter defaults (lr, optimizer, head sizes, ...)

    def __init__(self, backbone: str = "resnet18", projectionhead: str = "MLP", memory_bank: bool = False, *,
                 image_size: int = 32, in_chans: int = 3, pretrained: bool | str = False,
                 backbone_kwargs: dict | None = None, proj_hidden_dim: int | None = None,
                 proj_output_dim: int | None = None, proj_layers: int | None = None,
                 optimizer: str | None = None, lr: float | None = None, weight_decay: float | None = None,
                 sgd_momentum: float = 0.9, scale_lr: bool = True, warmup_epochs: float = 0.0,
                 warmup_steps: int | None = None, min_lr: float = 0.0, max_steps: int | None = None,
                 momentum_base: float | None = None, num_views: int = 2, num_classes: int | None = None,
                 probe_lr: float = 0.1, knn_k: int = 200, knn_t: float = 0.1, forward_views: str = "concat",
                 channels_last: bool = False, compile: bool = False, seed: int | None = None,
                 max_bad_fraction: float = 0.1, **method_kwargs: Any):
        super().__init__()
        self.save_hyperparameters()
        hp = {**self.defaults, **{k: v for k, v in self.hparams.items() if v is not None}}
        self.cfg = hp
        if num_views < self.min_views:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_views} views, got num_views={num_views}")
        if forward_views not in ("concat", "per_view"):
            raise ValueError(f"forward_views must be 'concat' or 'per_view', got '{forward_views}'")
        self.backbone = create_backbone(backbone, image_size=image_size, in_chans=in_chans,
                                        pretrained=pretrained, **(backbone_kwargs or {}))
        self.feat_dim = self.backbone.num_features
        self.build_heads()
        if self.uses_momentum:
            self.target_backbone = momentum_copy(self.backbone)
            self.target_projector = momentum_copy(self.projector)
        self.probe = OnlineProbe(self.feat_dim, num_classes) if num_classes else None
        self.knn = OnlineKNN(knn_k, knn_t)
        self._skipped = self._seen = 0
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self._encoder = torch.compile(self.backbone) if compile else self.backbone

    # ---- what a method provides -------------------------------------------------------------
    def build_heads(self) -> None:
        """Create `self.projector` (and any predictor); `build_projector` does the common part."""
        raise NotImplementedError

    def build_projector(self, last_bn: bool = False) -> int:
        """`self.projector` from the earlier API's `projectionhead` and the proj_* sizes; returns its width."""
        c = self.cfg
        self.projector, out = projection_head(self.hparams.projectionhead, self.feat_dim, c["proj_hidden_dim"],
                                              c["proj_output_dim"], c["proj_layers"], last_bn=last_bn)
        if self.hparams.memory_bank and not self.supports_memory_bank:
            rank_zero_warn(f"memory_bank=True has no effect on {type(self).__name__}: it uses no negatives")
        return out

    def ssl_loss(self, feats: list[torch.Tensor], views: list[torch.Tensor]) -> torch.Tensor:
        """The method's objective from the backbone features of each view."""
        raise NotImplementedError

    # ---- shared mechanics ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features: what evaluation uses."""
        return self.backbone(self._prepare(x))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg["channels_last"] else x

    def encode_views(self, views: Sequence[torch.Tensor], encoder: nn.Module | None = None) -> list[torch.Tensor]:
        """Features of every view. Views of one resolution go through the backbone in one
        concatenated forward (BatchNorm then sees all views together) unless forward_views='per_view'."""
        encoder = encoder or self._encoder
        if self.cfg["forward_views"] == "per_view":
            return [encoder(self._prepare(v)) for v in views]
        feats: list[torch.Tensor | None] = [None] * len(views)
        by_shape: dict[tuple, list[int]] = {}
        for i, v in enumerate(views):
            by_shape.setdefault(tuple(v.shape[1:]), []).append(i)
        for idx in by_shape.values():
            out = encoder(self._prepare(torch.cat([views[i] for i in idx]))).chunk(len(idx))
            for i, f in zip(idx, out):
                feats[i] = f
        return feats  # type: ignore[return-value]

    @torch.no_grad()
    def encode_target(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Projections of the momentum target (no gradient)."""
        return [self.target_projector(f) for f in self.encode_views(views, self.target_backbone)]

    def setup(self, stage: str) -> None:
        if self.probe is None and stage == "fit":
            n = _num_classes_from_trainer(self.trainer)
            if n:
                self.probe = OnlineProbe(self.feat_dim, n)
                self.hparams["num_classes"] = n  # so load_from_checkpoint rebuilds the probe

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        views, labels, skipped = unpack_batch(batch)
        self._skipped += skipped
        self._seen += skipped + (len(labels) if labels is not None else (len(views[0]) if views else 0))
        if not views:
            return None  # every file of this batch was unreadable
        if len(views) < self.min_views:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_views} views per image, the batch has "
                             f"{len(views)}; build the loader with num_views>={self.min_views}")
        feats = self.encode_views(views)
        loss = self.ssl_loss(feats, views)
        self._check_finite(loss)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(views[0]))
        if labels is not None:
            self.knn.add_train(feats[0], labels)
            if self.probe is not None:
                out = self.probe(feats[0], labels)
                if out is not None:
                    self.log_dict({"probe_loss": out[0], "probe_acc": out[1]}, on_step=False, on_epoch=True,
                                  batch_size=len(labels))
                    loss = loss + out[0]
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.uses_momentum:
            # global_step already counts the step just taken: index it from 0 so the first update
            # uses momentum_base and the last is not a no-op at tau=1 (BYOL's schedule, k=0..K-1)
            tau = cosine_tau(self.global_step - 1, self._total_steps(), self.cfg.get("momentum_base", 0.99))
            ema_update(self.backbone, self.target_backbone, tau)
            ema_update(self.projector, self.target_projector, tau)
            self.log("tau", tau, on_step=True, on_epoch=False)

    def on_train_epoch_start(self) -> None:
        self._skipped = self._seen = 0

    def on_train_epoch_end(self) -> None:
        if self._skipped:
            frac = self._skipped / max(1, self._seen)
            msg = f"skipped {self._skipped} unreadable image(s) of {self._seen} this epoch ({frac:.1%})"
            self.print(msg)
            if frac > self.cfg["max_bad_fraction"]:
                raise RuntimeError(f"{msg}, above data.max_bad_fraction={self.cfg['max_bad_fraction']}; "
                                   f"remove or fix the corrupt files (or raise the threshold)")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        views, labels, _ = unpack_batch(batch)
        if labels is None or not views:
            return
        self.knn.add_val(self(views[0]), labels)

    def on_validation_epoch_end(self) -> None:
        n = self.probe.classifier.out_features if self.probe is not None else _infer_classes(self.knn)
        acc = self.knn.compute(n) if n else None
        if acc is not None:
            self.log("knn_acc", acc, prog_bar=True)

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()):
            last = getattr(self.trainer.checkpoint_callback, "last_model_path", "") if self._trainer else ""
            where = f"last good checkpoint: {last} (left intact)" if last else "no checkpoint was written yet"
            raise FloatingPointError(f"loss is {loss.item()} at step {self.global_step}; {where}. "
                                     f"Lower optimizer.lr, add warmup, or train with precision=32")

    def _total_steps(self) -> int:
        """Optimiser steps in the whole run, for the lr and momentum schedules.

        Computed from the loader's length rather than `trainer.estimated_stepping_batches`, which
        would start iterating the loader before a resumed run restores the loader's state."""
        if self.cfg.get("max_steps"):
            return int(self.cfg["max_steps"])
        if not hasattr(self, "_total_steps_cache"):
            t = self.trainer
            per_epoch = 0
            try:
                per_epoch = len(_train_loader(t)) // max(1, t.world_size)
            except TypeError:  # an iterable without length
                pass
            by_epochs = per_epoch * (t.max_epochs or 0) // max(1, t.accumulate_grad_batches)
            candidates = [n for n in (t.max_steps if t.max_steps and t.max_steps > 0 else 0, by_epochs) if n > 0]
            self._total_steps_cache = min(candidates) if candidates else 1000
        return self._total_steps_cache

    def configure_optimizers(self):
        batch = _batch_size_from_trainer(self.trainer) or 256
        world = self.trainer.world_size if self._trainer else 1
        lr = scaled_lr(self.cfg["lr"], batch * world, self.cfg["scale_lr"])
        named = [(n, p) for n, p in self.named_parameters()
                 if not n.startswith(("probe.", "target_")) and p.requires_grad]
        decay, no_decay = split_decay(named)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        if self.probe is not None:
            groups.append({"params": list(self.probe.parameters()), "lr": self.cfg["probe_lr"], "weight_decay": 0.0})
        opt = build_optimizer(self.cfg["optimizer"], groups, lr, self.cfg["weight_decay"], self.cfg["sgd_momentum"])
        total = self._total_steps()
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1)) if self._trainer else 1
        warmup = self.cfg.get("warmup_steps") or int(self.cfg["warmup_epochs"] * steps_per_epoch)
        sched = build_scheduler(opt, total, warmup, self.cfg["min_lr"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        scheduler.step_update(num_updates=self.global_step + 1)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["autossl"] = {"method": self.name, "backbone": dict(self.backbone.spec)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._restore_loader_state(checkpoint)
        saved = checkpoint.get("autossl")
        if not saved:
            return
        mine = {"method": self.name, "backbone": self.backbone.spec.get("name")}
        theirs = {"method": saved.get("method"), "backbone": saved.get("backbone", {}).get("name")}
        if mine != theirs:
            raise ValueError(f"checkpoint is {theirs['method']} with backbone {theirs['backbone']}, but this model is "
                             f"{mine['method']} with {mine['backbone']}; resume with the same method and backbone")

    def _restore_loader_state(self, checkpoint: dict) -> None:
        """Lightning restores a stateful loader only when resuming mid-epoch; at an epoch boundary we
        do it, so the seeded loader continues with the next epoch's shuffle and augmentations."""
        states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader")
        loader = _train_loader(self.trainer) if self._trainer else None
        if states and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(states[0])


def _infer_classes(knn: OnlineKNN) -> int:
    ys = knn.bank_y + knn.query_y
    return int(max(int(y.max()) for y in ys)) + 1 if ys else 0


def _train_loader(trainer: pl.Trainer):
    try:  # the loader given to fit(); read before Lightning wraps it (setup runs before loading)
        return trainer.fit_loop._data_source.dataloader()
    except Exception:
        return None


def _num_classes_from_trainer(trainer: pl.Trainer) -> int:
    loader = _train_loader(trainer)
    ds = getattr(loader, "dataset", None)
    return int(getattr(ds, "num_classes", 0) or 0)


def _batch_size_from_trainer(trainer: pl.Trainer) -> int | None:
    loader = _train_loader(trainer)
    return getattr(loader, "batch_size", None)
