"""VIbCReg (Lee & Aune, 2021, "VIbCReg: Variance-Invariance-better-Covariance Regularization for
Self-Supervised Learning on Time Series", arXiv:2109.00783; as solo-learn runs it, `solo/methods/vibcreg.py`).

VICReg with two changes: the covariance term is computed on batch-normalised (correlation) embeddings and
averaged over all D^2 entries (losses/vibcreg.py), and the projector ends in IterNorm whitening
(heads/iternorm.py: 64 groups, 5 Newton steps). The projector is solo-learn's: Linear-BN-GELU twice, then
Linear, then IterNorm. More than 2 views: the loss is averaged over view pairs.

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/vibcreg.yaml: 2048 hidden, 2048 output, weights
25 / 25 / 200, iternorm on, LARS lr 0.3, wd 1e-4).
"""
from __future__ import annotations

import torch.nn as nn

from ..core.registry import METHODS
from ..heads import mlp
from ..heads.iternorm import IterNorm
from ..losses import mean_over_view_pairs
from ..losses.vibcreg import vibcreg_loss
from .base import SSLMethod


@METHODS.register("vibcreg")
class VIbCReg(SSLMethod):
    name = "vibcreg"
    defaults = dict(optimizer="lars", lr=0.3, weight_decay=1e-4, proj_hidden_dim=2048, proj_output_dim=2048,
                    proj_layers=3, sim_weight=25.0, var_weight=25.0, cov_weight=200.0, iternorm=True,
                    iternorm_groups=64, iternorm_iters=5)

    def build_heads(self):
        c = self.cfg
        head = mlp(self.feat_dim, c["proj_hidden_dim"], c["proj_output_dim"], c["proj_layers"], act_layer=nn.GELU)
        if c["iternorm"]:
            head.append(IterNorm(c["proj_output_dim"], num_groups=c["iternorm_groups"], T=c["iternorm_iters"]))
        self.projector = head

    def ssl_loss(self, feats, views):
        c = self.cfg
        zs = [self.projector(f) for f in feats]
        return mean_over_view_pairs(lambda a, b: vibcreg_loss(a, b, c["sim_weight"], c["var_weight"], c["cov_weight"]),
                                    zs)
