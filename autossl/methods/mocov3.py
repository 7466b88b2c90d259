"""MoCo v3 (Chen, Xie & He, 2021, "An Empirical Study of Training Self-Supervised Vision Transformers",
arXiv:2104.02057; reference code github.com/facebookresearch/moco-v3, `moco/builder.py`).

Query: backbone -> projector -> predictor; key: the momentum encoder (EMA of backbone and projector;
the predictor has no momentum copy, as in the paper's Algorithm 1). The loss is InfoNCE with the other
samples' keys of the (global) batch as negatives, no queue (paper §3: large batches make the memory
queue unnecessary), symmetrised, each term scaled by 2 * tau as the reference's `contrastive_loss`
does (it makes the gradient scale independent of tau): ctr(q1, k2) + ctr(q2, k1).

Heads as the reference's `_build_mlp`: Linear layers without bias, BN + ReLU between them, and an
affine-free BN after the last projector layer (SimCLR's design). CNN backbones (MoCo_ResNet) get a
2-layer projector and a 2-layer predictor without the final BN; transformer backbones (MoCo_ViT, any
backbone with a `patch_embed`) get a 3-layer projector and a predictor with the final BN. For ViTs the
patch embedding is frozen at its random init by default (`freeze_patch_embed`): the paper's
"random patch projection" (§4.2), which removes the training instability it reports.

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/mocov3.yaml: 4096 hidden, 256 output,
4096 predictor hidden, temperature 0.2, tau 0.99 -> 1, LARS lr 0.3, wd 1e-6).
"""
from __future__ import annotations

import torch.nn as nn

from ..core.registry import METHODS
from ..heads import mlp, projection_head
from ..losses import infonce_loss, mean_over_cross_views
from .base import SSLMethod


@METHODS.register("mocov3", aliases=("moco_v3",))
class MoCoV3(SSLMethod):
    name = "mocov3"
    momentum_targets = {"target_backbone": "backbone", "target_projector": "projector"}
    defaults = dict(optimizer="lars", lr=0.3, weight_decay=1e-6, proj_hidden_dim=4096, proj_output_dim=256,
                    proj_layers=None, pred_hidden_dim=4096, temperature=0.2, momentum_base=0.99,
                    freeze_patch_embed=True)

    @property
    def is_transformer(self) -> bool:
        return getattr(self.backbone.model, "patch_embed", None) is not None

    def build_heads(self):
        c, vit = self.cfg, self.is_transformer
        layers = c.get("proj_layers") or (3 if vit else 2)
        self.projector, out = projection_head(self.hparams.projectionhead, self.feat_dim, c["proj_hidden_dim"],
                                              c["proj_output_dim"], layers, last_bn=True)
        self.predictor = mlp(out, c["pred_hidden_dim"], out, num_layers=2, last_bn=vit)
        if not vit:  # MoCo_ResNet's predictor: _build_mlp(..., last_bn=False), whose last Linear has no bias either
            self.predictor[-1] = nn.Linear(c["pred_hidden_dim"], out, bias=False)
        if vit and c["freeze_patch_embed"]:
            self.backbone.model.patch_embed.requires_grad_(False)

    def ssl_loss(self, feats, views):
        t = self.cfg["temperature"]
        qs = [self.predictor(self.projector(f)) for f in feats]
        ks = self.encode_target(views)

        def ctr(q, k):
            return infonce_loss(q, k, t) * (2 * t)

        # mean over the N(N-1) ordered view pairs, times 2: with 2 views exactly ctr(q1, k2) + ctr(q2, k1)
        return 2 * mean_over_cross_views(ctr, qs, ks)
