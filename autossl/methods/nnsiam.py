"""NNSiam: SimSiam whose target is replaced by its nearest neighbour in a support set.

The nearest-neighbour idea of NNCLR (Dwibedi et al., 2021, arXiv:2104.14548, §3) applied to SimSiam
as solo-learn does (solo/methods/nnsiam.py).

Each view's prediction p_i = h(z_i) is pulled towards NN(z_j), the nearest neighbour of the other view's
projection among past projections (heads/support_set.py; a stored vector, so the stop-gradient of
SimSiam holds by construction). After the loss the first view's projections are pushed into the
support set. As in SimSiam, no momentum encoder and no negatives.

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/nnsiam.yaml and solo/methods/nnsiam.py:
3-layer projector, 2048 hidden, 2048 output with a final affine-free BN, 4096 predictor hidden,
support set 65536, SGD lr 0.5, wd 1e-5).
"""
from ..core.registry import METHODS
from ..heads import prediction_head
from ..heads.support_set import SupportSet
from ..losses import mean_over_cross_views, negative_cosine_loss
from .base import SSLMethod


@METHODS.register("nnsiam")
class NNSiam(SSLMethod):
    name = "nnsiam"
    defaults = dict(optimizer="sgd", lr=0.5, weight_decay=1e-5, proj_hidden_dim=2048, proj_output_dim=2048,
                    proj_layers=3, pred_hidden_dim=4096, queue_size=65536)

    def build_heads(self):
        out = self.build_projector(last_bn=True)
        self.predictor = prediction_head(out, self.cfg["pred_hidden_dim"])
        self.support_set = SupportSet(self.cfg["queue_size"], out)

    def ssl_loss(self, feats, views):
        zs = [self.projector(f) for f in feats]
        ps = [self.predictor(z) for z in zs]
        nns = [self.support_set.nearest(z) for z in zs]  # no gradient: SimSiam's stop-gradient
        loss = mean_over_cross_views(negative_cosine_loss, ps, nns)
        self.support_set.push(zs[0])
        return loss
