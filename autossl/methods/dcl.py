"""DCL (Yeh et al., 2022): SimCLR with the positive pair removed from the loss's denominator.

"Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848; the loss is in losses/dcl.py.

The paper's point is efficiency: without the negative-positive coupling term, the gradient no longer
vanishes for easy positives, so small batches (256 on CIFAR) and no momentum encoder or large queue
suffice. Everything else is SimCLR: one backbone, a SimCLR projector, the loss symmetrised over the two
views and averaged over all view pairs for N views.

Defaults: solo-learn's SimCLR CIFAR recipe (scripts/pretrain/cifar/simclr.yaml: 2048 hidden, 256 output,
LARS lr 0.4, wd 1e-5), which DCL's paper reuses from SimCLR, with DCL's temperature 0.1 (lightly's
`DCLLoss` default, as the paper's reference implementation).
"""
from ..core.registry import METHODS
from ..losses import mean_over_view_pairs
from ..losses.dcl import dcl_loss
from .base import SSLMethod


@METHODS.register("dcl")
class DCL(SSLMethod):
    name = "dcl"
    defaults = dict(optimizer="lars", lr=0.4, weight_decay=1e-5, proj_hidden_dim=2048, proj_output_dim=256,
                    proj_layers=2, temperature=0.1)

    def build_heads(self):
        self.build_projector()

    def pair_loss(self, z_a, z_b):
        return dcl_loss(z_a, z_b, self.cfg["temperature"])

    def ssl_loss(self, feats, views):
        return mean_over_view_pairs(self.pair_loss, [self.projector(f) for f in feats])
