"""The LightningModule every method stands on. It owns the mechanics; a method file supplies only:

- `build_heads()`: its heads (and `build_backbone()` when it needs another encoder, e.g. a masked one);
- `step(batch) -> {"loss": ..., "feats": ...}`: which views each network sees and the loss call.
  Joint-embedding methods keep the default `step` and write `ssl_loss(feats, views)` instead;
- `momentum_targets`: which modules are EMA copies of which (`{"target_backbone": "backbone"}`);
- `param_groups()` when it needs more than "no weight decay on biases and norms" (layer-wise LR
  decay is a constructor option; a predictor with its own LR scale or betas overrides this).

Shared here: logging, the online linear probe and k-NN monitor on detached features, the NaN guard (the
loss here; gradients and checkpointed weights in guard.py),
skipped-file accounting, the LR schedule and the EMA updates with their cosine momentum schedule,
and checks when a checkpoint is loaded. `self.hparams` holds what the caller passed; `self.cfg` the
resolved values (method defaults filled in), read-only: one source of truth, never mutated.
"""
from __future__ import annotations

import gc
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.utilities import rank_zero_warn

from ..backbones import create_backbone
from ..backbones.registry import SMALL_IMAGE
from ..data.batch import Batch, unpack_batch
from ..heads import projection_head
from ..optim import build_optimizer, build_scheduler, decay_groups, layer_decay_groups, scaled_lr
from .fit_data import fit_loader, rng_state, seeded_sampler, set_rng_state, steps_per_epoch
from .guard import NonFiniteGuard, check_checkpoint, stop_message
from .momentum import cosine_tau, ema_update, momentum_copy
from .monitors import OnlineKNN, OnlineProbe
from .schedule import PlannedSchedule


class ResolvedConfig(dict):
    """The method's resolved hyper-parameters, read-only (a method reads `self.cfg`, never writes it)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a method's cfg is read-only: pass hyper-parameters to the constructor instead")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _refuse  # type: ignore[assignment]

    def __reduce__(self):
        return type(self), (dict(self),)


class SSLMethod(PlannedSchedule, pl.LightningModule):
    name = "base"
    min_views = 2
    supports_memory_bank = False  # True: `memory_bank=True` turns on a queue of negatives
    momentum_targets: dict[str, str] = {}  # EMA copy name -> online module name, built after build_heads
    defaults: dict[str, Any] = {}  # per-method hyper-parameter defaults (lr, optimizer, head sizes, ...)

    def __init__(self, backbone: str = "resnet18", projectionhead: str = "MLP", memory_bank: bool = False, *,
                 image_size: int = 32, in_chans: int = 3, pretrained: bool | str = False,
                 backbone_kwargs: dict | None = None, proj_hidden_dim: int | None = None,
                 proj_output_dim: int | None = None, proj_layers: int | None = None,
                 optimizer: str | None = None, lr: float | None = None, weight_decay: float | None = None,
                 sgd_momentum: float = 0.9, betas: Sequence[float] | None = None, layer_decay: float | None = None,
                 scale_lr: bool = True, warmup_epochs: float = 0.0, warmup_steps: int | None = None,
                 min_lr: float = 0.0, max_steps: int | None = None, momentum_base: float | None = None,
                 num_views: int = 2, num_classes: int | None = None, probe_lr: float = 0.1, knn_k: int = 200,
                 knn_t: float = 0.1, forward_views: str = "concat", channels_last: bool = False,
                 compile: bool = False, seed: int | None = None, max_bad_fraction: float = 0.1, **method_kwargs: Any):
        super().__init__()
        self.save_hyperparameters()
        given = {k: v for k, v in self.hparams.items() if v is not None}
        self.cfg = ResolvedConfig({**self.defaults, **given})
        if num_views < self.min_views:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_views} views, got num_views={num_views}")
        if forward_views not in ("concat", "per_view"):
            raise ValueError(f"forward_views must be 'concat' or 'per_view', got '{forward_views}'")
        if layer_decay is not None and not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        self.backbone = self.build_backbone()
        self.feat_dim = self.backbone.num_features
        self.build_heads()
        for target, online in self.momentum_targets.items():
            setattr(self, target, momentum_copy(getattr(self, online)))
        self.probe = OnlineProbe(self.feat_dim, num_classes) if num_classes else None
        self.knn = OnlineKNN(knn_k, knn_t)
        self._skipped = self._seen = 0
        self._data_position, self._pending_rng = (0, 0), None
        if channels_last:
            self.to(memory_format=torch.channels_last)
        # a function, not a module attribute: a registered `_encoder` put every backbone weight in the
        # state dict twice, under names that changed with `compile` (such checkpoints would not load across it)
        self._compiled_backbone = self.compiled(self.backbone.forward) if compile else None

    # ---- what a method provides -------------------------------------------------------------
    def build_backbone(self) -> nn.Module:
        """The encoder whose features evaluation uses; `self.backbone.num_features` wide."""
        hp = self.hparams
        return create_backbone(hp.backbone, image_size=hp.image_size, in_chans=hp.in_chans,
                               pretrained=hp.pretrained, **(hp.backbone_kwargs or {}))

    def build_heads(self) -> None:
        """Create `self.projector` (and any predictor); `build_projector` does the common part."""
        raise NotImplementedError

    def step(self, batch: Batch) -> dict[str, Any]:
        """One training step's objective: {'loss': scalar, 'feats': [B, D] backbone features of the
        first view for the online monitors (None: no monitor), 'log': {name: scalar} (optional)}.
        The default serves the joint-embedding family: every view through the backbone, then `ssl_loss`."""
        feats = self.encode_views(batch.views)
        return {"loss": self.ssl_loss(feats, batch.views), "feats": feats[0]}

    def ssl_loss(self, feats: list[torch.Tensor], views: list[torch.Tensor]) -> torch.Tensor:
        """The joint-embedding objective from the backbone features of each view."""
        raise NotImplementedError(f"{type(self).__name__} must define ssl_loss(feats, views) or step(batch)")

    def param_groups(self) -> list[dict]:
        """Optimiser groups of the trained parameters (not the probe, not EMA copies): no weight decay on
        biases and norms; with `layer_decay`, timm's layer-wise LR decay over the backbone."""
        trained = [(n, p) for n, p in self.named_parameters()
                   if p.requires_grad and not n.startswith("probe.") and not self._is_target(n)]
        if not self.cfg.get("layer_decay"):
            return decay_groups(trained)
        groups = layer_decay_groups(self.backbone.model, self.cfg["weight_decay"], self.cfg["layer_decay"])
        return groups + decay_groups([(n, p) for n, p in trained if not n.startswith("backbone.")])

    # ---- helpers a method calls ---------------------------------------------------------------
    def compiled(self, fn):
        """`fn` (a module or a function) through `torch.compile` when the method was built with
        compile=True, else `fn` itself. Methods that run the backbone through a wrapper of their own
        (the masked encoders) compile that wrapper's forward with it."""
        return torch.compile(fn) if self.hparams.compile else fn

    def build_projector(self, last_bn: bool = False) -> int:
        """`self.projector` from the earlier API's `projectionhead` and the proj_* sizes; returns its width."""
        c = self.cfg
        self.projector, out = projection_head(self.hparams.projectionhead, self.feat_dim, c["proj_hidden_dim"],
                                              c["proj_output_dim"], c["proj_layers"], last_bn=last_bn)
        if self.hparams.memory_bank and not self.supports_memory_bank:
            rank_zero_warn(f"memory_bank=True has no effect on {type(self).__name__}: it uses no negatives")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features: what evaluation uses."""
        return self.backbone(self._prepare(x))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg["channels_last"] else x

    @property
    def _encoder(self):
        """What `encode_views` runs by default: the backbone, or its compiled forward with compile=True."""
        return self._compiled_backbone or self.backbone

    def encode_views(self, views: Sequence[torch.Tensor], encoder: nn.Module | None = None) -> list[torch.Tensor]:
        """Features of every view. Views of one resolution go through the encoder in one
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
        """Projections of the momentum target (no gradient) for the views it is shown."""
        return [self.target_projector(f) for f in self.encode_views(views, self.target_backbone)]

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, EMA copy) module pairs, updated after every optimiser step."""
        return [(getattr(self, online), getattr(self, target)) for target, online in self.momentum_targets.items()]

    def _is_target(self, param_name: str) -> bool:
        return param_name.split(".", 1)[0] in self.momentum_targets

    # ---- the training loop's mechanics ------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # A finished Trainer and its model hold reference cycles that Python frees only when its collector
        # runs: a script training several models in a row (the earlier autoSSL README) kept 1-3 GB of the
        # previous runs alive beside the new one (4.9 GB peak measured, 2.1 GB with this collection).
        gc.collect()
        if self.probe is None and stage == "fit":
            ds = getattr(fit_loader(self.trainer), "dataset", None)
            n = int(getattr(ds, "num_classes", 0) or 0)
            if n:
                self.probe = OnlineProbe(self.feat_dim, n)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        b = unpack_batch(batch)
        self._skipped += b.skipped
        self._seen += b.skipped + (len(b.labels) if b.labels is not None else b.size)
        sizes = self._sizes_on_every_rank(b.size)
        if len(sizes) > 1 and min(sizes) == 0:
            # Lightning cannot skip a step under DDP, and a rank with nothing to show cannot join the others'
            raise RuntimeError(f"every file of a batch on one of the {len(sizes)} processes was unreadable (batch "
                               f"sizes {sizes}); remove the unreadable files (they are counted in the log)")
        if max(sizes) < 2:
            # every file of the batch was unreadable, or one was left: batch statistics (BatchNorm, the losses'
            # variances) need two samples, so the step is skipped and this image counted as skipped
            self._skipped += b.size
            return None
        # equal sizes on every rank for the losses that gather (a rank that dropped unreadable files repeats
        # its readable images); a lone image is repeated too, so BatchNorm sees two samples under DDP
        b = b.padded_to(max(sizes))
        if len(b.views) < self.min_views:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_views} views per image, the batch has "
                             f"{len(b.views)}; build the loader with num_views>={self.min_views}")
        self._check_image_size(b.views[0])
        out = self.step(b)
        loss = out["loss"]
        self._check_finite(loss)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=b.size, sync_dist=True)
        for key, value in out.get("log", {}).items():
            self.log(key, value, on_step=True, on_epoch=False, batch_size=b.size)
        feats = out.get("feats")
        if b.labels is not None and feats is not None:
            self.knn.add_train(feats, b.labels)
            if self.probe is not None:
                probe = self.probe(feats, b.labels)
                if probe is not None:
                    self.log_dict({"probe_loss": probe[0], "probe_acc": probe[1]}, on_step=False, on_epoch=True,
                                  batch_size=len(b.labels), sync_dist=True)
                    loss = loss + probe[0]
        return loss

    @property
    def nonfinite(self) -> NonFiniteGuard:
        """The gradient guard's counters (guard.py): steps `skipped`, the `limit` of them in a row."""
        if getattr(self, "_nonfinite", None) is None:
            self._nonfinite = NonFiniteGuard()
        return self._nonfinite

    def on_before_optimizer_step(self, optimizer) -> None:
        # after backward (and AMP's unscaling), before clipping and the update: non-finite gradients skip the step
        self.nonfinite.check_gradients(self, optimizer)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if not self.nonfinite.step_skipped:  # a skipped step moved no weight: no EMA update either
            self.momentum_update()

    def momentum_update(self) -> None:
        """The EMA copies after each optimiser step taken (BYOL's cosine schedule; MSN overrides it)."""
        if self.momentum_targets:
            # Right after the optimiser, before any callback's on_train_batch_end: a checkpoint written there
            # holds this step's EMA. global_step counts the steps before this one here, so the first update
            # uses momentum_base and the last is not a no-op at tau=1 (BYOL's schedule, k=0..K-1).
            tau = cosine_tau(self.global_step, self._total_steps(), self.cfg.get("momentum_base", 0.99))
            for online, target in self.momentum_pairs:
                ema_update(online, target, tau)
            self.log("tau", tau, on_step=True, on_epoch=False)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:  # resumed: the random state of the step the checkpoint ends
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        self._data_position = (self.current_epoch, batch_idx + 1)  # batches of this epoch done after this one

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
        b = unpack_batch(batch)
        if b.labels is None or not b.views:
            return
        self.knn.add_val(self(b.views[0]), b.labels)

    def on_validation_epoch_end(self) -> None:
        n = self.probe.classifier.out_features if self.probe is not None else self.knn.num_classes()
        acc = self.knn.compute(n) if n else None
        if acc is not None:
            self.log("knn_acc", acc, prog_bar=True, sync_dist=True)  # each rank's queries: averaged over ranks

    def _sizes_on_every_rank(self, size: int) -> list[int]:
        """The batch size of every process (one all-gather of a scalar under DDP; `[size]` otherwise)."""
        if not self._trainer or self.trainer.world_size == 1:
            return [size]
        return [int(n) for n in self.all_gather(torch.tensor(size, device=self.device)).flatten()]

    def _check_image_size(self, images: torch.Tensor) -> None:
        """Before any forward: a batch the model was not built for fails in one line. A CNN adapts soundly to
        another size of the same class (28 px digits in a 32 px model); a fixed-size model (ViT, Swin: their
        position grid) or a CNN whose stem was chosen for the other class (a small-image stem fed 224 px
        images needs ~49x the activation memory) does not."""
        built, got = int(self.hparams.image_size), int(max(images.shape[-2:]))
        if got == built:
            return
        fixed = hasattr(self.backbone.model, "patch_embed")  # ViT/Swin/...: positions for one grid size
        if fixed or (got > SMALL_IMAGE) != (built > SMALL_IMAGE):
            raise ValueError(f"the batches hold {got} px images but {type(self).__name__} was built for {built} px; "
                             f"build the loader with image_size={built} or the model with image_size={got}")

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(stop_message(f"loss is {loss.item()} at step {self.global_step}", self))

    def configure_optimizers(self):
        loader = fit_loader(self.trainer)
        batch = getattr(loader, "batch_size", None) or 256
        world = self.trainer.world_size if self._trainer else 1
        c = self.cfg
        lr = scaled_lr(c["lr"], batch * world, c["scale_lr"])
        groups = self.param_groups()
        if self.probe is not None:
            groups.append({"params": list(self.probe.parameters()), "lr": c["probe_lr"], "weight_decay": 0.0})
        opt = build_optimizer(c["optimizer"], groups, lr, c["weight_decay"], c["sgd_momentum"],
                              betas=tuple(c.get("betas") or (0.9, 0.999)))
        total = self._total_steps()
        per_epoch = 1
        if self._trainer:  # the loader's epoch, else the run's steps over its epochs
            per_epoch = steps_per_epoch(self.trainer) or max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = c.get("warmup_steps") or int(c["warmup_epochs"] * per_epoch)
        sched = build_scheduler(opt, total, warmup, c["min_lr"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        scheduler.step_update(num_updates=self.global_step + 1)

    # ---- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        check_checkpoint(self, checkpoint.get("state_dict", {}))  # non-finite weights: refused, nothing written
        checkpoint["autossl"] = {"method": self.name, "backbone": dict(self.backbone.spec),
                                 "data_position": list(self._data_position), "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("autossl") or {}
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("_encoder.")]:  # written before the backbone was held once
            del state[key]
        sampler = seeded_sampler(self._trainer)
        loader = fit_loader(self._trainer)
        if sampler is not None and "data_position" in saved:  # continue after the checkpoint's last batch
            epoch, batches_done = saved["data_position"]
            if batches_done >= len(loader):  # the epoch's last batch was done: the next iteration is a new epoch
                epoch, batches_done = epoch + 1, 0
            sampler.resume_at(epoch, batches_done * loader.batch_size * self.trainer.world_size)  # every process's
        if self._trainer is not None and "rng" in saved:
            self._pending_rng = saved["rng"]
        probe = checkpoint.get("state_dict", {}).get("probe.classifier.weight")
        if self.probe is None and probe is not None:  # the probe was sized from the data when training began
            self.probe = OnlineProbe(self.feat_dim, probe.shape[0]).to(self.device)
        if not saved:
            return
        mine = {"method": self.name, "backbone": self.backbone.spec.get("name")}
        theirs = {"method": saved.get("method"), "backbone": saved.get("backbone", {}).get("name")}
        if mine != theirs:
            raise ValueError(f"checkpoint is {theirs['method']} with backbone {theirs['backbone']}, but this model is "
                             f"{mine['method']} with {mine['backbone']}; resume with the same method and backbone")
