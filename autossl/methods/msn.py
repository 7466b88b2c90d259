"""MSN (Assran et al., 2022, "Masked Siamese Networks for Label-Efficient Learning", ECCV 2022,
arXiv:2204.07141; reference code github.com/facebookresearch/msn, `src/msn_train.py`) and PMSN (Assran et al.,
2023, "The Hidden Uniform Cluster Prior in Self-Supervised Learning", ICLR 2023, arXiv:2210.07277). ViT only.

Views: the first global crop is the *target*, seen unmasked by the EMA teacher (backbone + projector); the
other global crops are *anchors*, seen by the student with a fraction `mask_ratio` of their patches dropped
(`MaskedViT.encode` on the kept tokens, MAE-style, as the reference's `patch_drop`); local crops are *focal*
anchors, unmasked (the reference drops patches only in its first, full-size group of anchor views). Anchor and
target projections are soft-assigned to K learnable prototypes; each anchor predicts the target's sharpened,
Sinkhorn-balanced assignment, with the me-max regulariser (MSN) or a power-law prior (PMSN) on the mean
anchor assignment (losses/msn.py; PMSN: methods/pmsn.py). The EMA momentum rises *linearly* from
`momentum_base` to 1 over 1.25x the run's steps, as the reference's `momentum_scheduler` (not BYOL's cosine): the
EMA copies are therefore listed in `ema_targets`, not the base's `momentum_targets` (whose cosine update would
also run), and updated right after each optimiser step taken (`momentum_update`). The prototypes get no weight
decay. With 2 views: one target, one masked anchor.

Defaults: the reference's `configs/pretrain/msn_vits16.yaml` (3-layer projector 2048 hidden with BN and GELU,
256 output, 1024 prototypes, temperature 0.1, sharpening 0.25, Sinkhorn on, me-max weight 1, patch_drop 0.15,
AdamW lr 1e-3, wd 0.04, EMA 0.996, gradient norm of backbone + projector clipped at 3.0); PMSN's power-law
exponent 0.25 (the paper's tau). The reference's lr is absolute, not scaled by the batch: train with
`scale_lr=False` (the experiment YAMLs do). Its weight decay rises to 0.4 on a cosine; here it stays at 0.04.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..backbones.masked_vit import MaskedViT
from ..backbones.masking import random_token_mask
from ..backbones.vit_crops import is_vit, vit_tokens
from ..core.registry import METHODS
from ..heads import mlp
from ..losses.msn import msn_loss
from .base import SSLMethod
from .momentum import ema_update, momentum_copy


def linear_tau(step: int, total_steps: int, base: float = 0.996) -> float:
    """MSN's momentum at optimiser step `step` (0-based): base + (1 - base) * step / (1.25 * total_steps)."""
    return min(1.0, base + (1.0 - base) * step / (1.25 * max(1, total_steps)))


@METHODS.register("msn")
class MSN(SSLMethod):
    name = "msn"
    ema_targets = {"target_backbone": "backbone", "target_projector": "projector"}  # linear schedule, see above
    defaults = dict(optimizer="adamw", lr=1e-3, weight_decay=0.04, proj_hidden_dim=2048, proj_output_dim=256,
                    proj_layers=3, num_prototypes=1024, temperature=0.1, target_sharpen_temperature=0.25,
                    sinkhorn_iterations=3, me_max_weight=1.0, mask_ratio=0.15, momentum_base=0.996, clip_grad=3.0)

    def build_heads(self):
        if not is_vit(self.backbone):
            raise ValueError(f"{self.name} needs a ViT backbone (e.g. vit_tiny), got '{self.hparams.backbone}'")
        c = self.cfg
        self.projector = mlp(self.feat_dim, c["proj_hidden_dim"], c["proj_output_dim"], c["proj_layers"],
                             act_layer=nn.GELU)
        bound = 1.0 / math.sqrt(c["proj_output_dim"])  # the reference's uniform(-1/sqrt(d), 1/sqrt(d))
        self.prototypes = nn.Parameter(torch.empty(c["num_prototypes"], c["proj_output_dim"]).uniform_(-bound, bound))
        for target, online in self.ema_targets.items():
            setattr(self, target, momentum_copy(getattr(self, online)))

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(getattr(self, online), getattr(self, target)) for target, online in self.ema_targets.items()]

    def loss_fn(self, anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return msn_loss(anchors, targets, self.prototypes, c["temperature"], c["target_sharpen_temperature"],
                        c["sinkhorn_iterations"], c["me_max_weight"])

    def step(self, batch):
        g = batch.num_global
        vit = self.backbone.model
        enc = MaskedViT(vit, use_mask_token=False)
        feats = []
        if g > 1:
            anchors = self._prepare(torch.cat(batch.views[1:g]))
            # one draw per anchor view: under DDP each process masks its rows as one process masks the global batch
            idx_keep = torch.cat([random_token_mask(batch.size, enc.num_patches, self.cfg["mask_ratio"],
                                                    device=anchors.device)[0] for _ in batch.views[1:g]])
            feats.append(vit.forward_head(enc.encode(anchors, idx_keep), pre_logits=True))
        by_size: dict[int, list[torch.Tensor]] = {}
        for v in batch.local_views:
            by_size.setdefault(v.shape[-1], []).append(v)
        feats += [vit.forward_head(vit_tokens(vit, self._prepare(torch.cat(vs))), pre_logits=True)
                  for vs in by_size.values()]
        if not feats:
            raise ValueError(f"{self.name} needs an anchor view besides the target: 2 global crops or local crops")
        anchors_z = self.projector(torch.cat(feats))
        with torch.no_grad():
            targets_z = self.target_projector(self.target_backbone(self._prepare(batch.views[0])))
        loss = self.loss_fn(anchors_z, targets_z)
        return {"loss": loss, "feats": feats[0][: batch.size].detach()}

    def param_groups(self) -> list[dict]:
        groups = [{**g, "params": [p for p in g["params"] if p is not self.prototypes]} for g in super().param_groups()]
        return [g for g in groups if g["params"]] + [{"params": [self.prototypes], "weight_decay": 0.0}]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if self.cfg["clip_grad"]:  # the reference's clip_grad_norm_(encoder.parameters()): not the prototypes
            params = list(self.backbone.parameters()) + list(self.projector.parameters())
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], self.cfg["clip_grad"])

    def momentum_update(self) -> None:
        # after each optimiser step taken (base.optimizer_step); global_step still counts the steps before this
        # one: the first update uses momentum_base
        tau = linear_tau(self.global_step, self._total_steps(), self.cfg["momentum_base"])
        for online, target in self.momentum_pairs:
            ema_update(online, target, tau)
        self.log("tau", tau, on_step=True, on_epoch=False)
