"""MoCo v2 (He et al., 2020; Chen et al., 2020): a momentum key encoder and, with
`memory_bank=True`, a queue of negatives. Without the queue, in-batch keys are the negatives."""
from ..core.registry import METHODS
from ..heads import FeatureQueue
from ..losses import infonce_loss, mean_over_cross_views, nt_xent_loss
from .base import SSLMethod


@METHODS.register("moco", aliases=("mocov2",))
class MoCo(SSLMethod):
    name = "moco"
    momentum_targets = {"target_backbone": "backbone", "target_projector": "projector"}
    supports_memory_bank = True
    defaults = dict(optimizer="sgd", lr=0.3, weight_decay=1e-4, proj_hidden_dim=2048, proj_output_dim=256,
                    proj_layers=2, temperature=0.2, queue_size=32768, momentum_base=0.99)

    def build_heads(self):
        out = self.build_projector()
        self.queue = FeatureQueue(self.cfg["queue_size"], out) if self.hparams.memory_bank else None

    def ssl_loss(self, feats, views):
        qs = [self.projector(f) for f in feats]
        ks = self.encode_target(views)
        t = self.cfg["temperature"]
        if self.queue is None:
            return mean_over_cross_views(lambda q, k: infonce_loss(q, k, t), qs, ks)
        loss = mean_over_cross_views(lambda q, k: nt_xent_loss(q, k, t, queue=self.queue.negatives()), qs, ks)
        self.queue.push(ks[0])
        return loss
