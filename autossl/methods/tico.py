"""TiCo (Zhu et al., 2022): invariance to an EMA target plus contrast against a running covariance.

"TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised Visual Representation
Learning", arXiv:2206.10698.

The online network (backbone + 2-layer projector) embeds the first view; an EMA copy of both
(`momentum_targets`, BYOL's cosine schedule) embeds the others without gradient. The loss
(losses/tico.py) pulls the pair together and pushes the online embeddings away from the directions
held in C, a running average of the embeddings' second-moment matrix: C is TiCo's implicit memory
bank, so it is a registered buffer (checkpointed, restored on resume), updated once per step. With 2
views this is exactly lightly's TiCo example and benchmark (online sees x0, momentum x1); with N views
the online first view is paired with each target view and the losses and C updates are averaged.

Defaults: the paper's projector (4096 hidden, 256 output, BN + ReLU, TiCoProjectionHead) and loss
weights (beta 0.9, rho 8, lightly's TiCoLoss defaults); optimisation from lightly's ResNet-18 benchmark
(SGD lr 0.3 per 128 images = 0.6 per 256, wd 1e-4, momentum 0.996 -> 1).
"""
import torch

from ..core.registry import METHODS
from ..losses.tico import tico_loss
from .base import SSLMethod


@METHODS.register("tico")
class TiCo(SSLMethod):
    name = "tico"
    momentum_targets = {"target_backbone": "backbone", "target_projector": "projector"}
    defaults = dict(optimizer="sgd", lr=0.6, weight_decay=1e-4, proj_hidden_dim=4096, proj_output_dim=256,
                    proj_layers=2, beta=0.9, rho=8.0, momentum_base=0.996)

    def build_heads(self):
        out = self.build_projector()
        self.register_buffer("cov", torch.zeros(out, out))

    def step(self, batch):
        c = self.cfg
        online = self.encode_views(batch.views[:1])[0]
        z = self.projector(online)
        targets = self.encode_target(batch.views[1:])
        losses, covs = zip(*(tico_loss(z, t, self.cov, c["beta"], c["rho"]) for t in targets))
        self.cov.copy_(torch.stack(covs).mean(0))
        return {"loss": torch.stack(losses).mean(), "feats": online}
