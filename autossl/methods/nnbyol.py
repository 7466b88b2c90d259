"""NNBYOL: BYOL whose target is replaced by its nearest neighbour in a support set.

The nearest-neighbour idea of NNCLR (Dwibedi et al., 2021, arXiv:2104.14548, §3) applied to BYOL as
solo-learn does (solo/methods/nnbyol.py).

The online network predicts, for each view, the nearest neighbour NN(z'_j) of the momentum target's
projection of the *other* view, looked up among past target projections (heads/support_set.py:
cosine neighbours, FIFO, gathered across processes, checkpointed). A neighbour is another image that
the target finds similar, so the prediction task carries semantic variation beyond augmentation. The
loss is BYOL's negative cosine over the ordered view pairs; after it, the first view's target
projections are pushed into the support set.

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/nnbyol.yaml: 4096 hidden, 256 output,
4096 predictor hidden, support set 65536, tau 0.99 -> 1, LARS lr 1.0, wd 1e-5).
"""
from ..core.registry import METHODS
from ..heads import prediction_head
from ..heads.support_set import SupportSet
from ..losses import mean_over_cross_views, negative_cosine_loss
from .base import SSLMethod


@METHODS.register("nnbyol")
class NNBYOL(SSLMethod):
    name = "nnbyol"
    momentum_targets = {"target_backbone": "backbone", "target_projector": "projector"}
    defaults = dict(optimizer="lars", lr=1.0, weight_decay=1e-5, proj_hidden_dim=4096, proj_output_dim=256,
                    proj_layers=2, pred_hidden_dim=4096, queue_size=65536, momentum_base=0.99)

    def build_heads(self):
        out = self.build_projector()
        self.predictor = prediction_head(out, self.cfg["pred_hidden_dim"])
        self.support_set = SupportSet(self.cfg["queue_size"], out)

    def ssl_loss(self, feats, views):
        ps = [self.predictor(self.projector(f)) for f in feats]
        targets = self.encode_target(views)
        nns = [self.support_set.nearest(t) for t in targets]  # looked up before this batch is added
        loss = mean_over_cross_views(negative_cosine_loss, ps, nns)
        self.support_set.push(targets[0])
        return loss
