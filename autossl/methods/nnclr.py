"""NNCLR (Dwibedi et al., 2021, "With a Little Help from My Friends: Nearest-Neighbor Contrastive
Learning of Visual Representations", arXiv:2104.14548).

SimCLR with the positive replaced by a nearest neighbour: each view's projection z is looked up in a
support set of past projections (heads/support_set.py) and its neighbour NN(z) is contrasted with the
*other* view's prediction p = predictor(z) by NT-Xent, symmetrised:
loss = (NT-Xent(NN(z_a), p_b) + NT-Xent(NN(z_b), p_a)) / 2 (paper eq. 2 and lightly's NNCLR example).
The neighbour carries no gradient (it is a stored vector); after the loss, the first view's
projections are pushed into the support set (FIFO, gathered across processes, checkpointed).

Heads as the paper (§4.1) and solo-learn: a 3-layer projector with BN (2048 hidden, 256 output, BN
after the last layer, here affine-free as the other projectors of this library) and a 2-layer
predictor (4096 hidden). Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/nnclr.yaml:
temperature 0.2, queue 65536, LARS lr 0.4, wd 1e-5).
"""
from __future__ import annotations

from ..core.registry import METHODS
from ..heads import prediction_head
from ..heads.support_set import SupportSet
from ..losses import mean_over_cross_views, nt_xent_loss
from .base import SSLMethod


@METHODS.register("nnclr")
class NNCLR(SSLMethod):
    name = "nnclr"
    defaults = dict(optimizer="lars", lr=0.4, weight_decay=1e-5, proj_hidden_dim=2048, proj_output_dim=256,
                    proj_layers=3, pred_hidden_dim=4096, temperature=0.2, queue_size=65536)

    def build_heads(self):
        out = self.build_projector(last_bn=True)
        self.predictor = prediction_head(out, self.cfg["pred_hidden_dim"])
        self.support_set = SupportSet(self.cfg["queue_size"], out)

    def ssl_loss(self, feats, views):
        t = self.cfg["temperature"]
        zs = [self.projector(f) for f in feats]
        ps = [self.predictor(z) for z in zs]
        nns = [self.support_set.nearest(z) for z in zs]  # looked up before this batch is added
        # mean over ordered pairs (NN(z_i), p_j), i != j: with 2 views (l(nn_a, p_b) + l(nn_b, p_a)) / 2
        loss = mean_over_cross_views(lambda nn_, p: nt_xent_loss(nn_, p, t), nns, ps)
        self.support_set.push(zs[0])
        return loss
