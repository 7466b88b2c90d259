"""SimCLR (Chen et al., 2020): NT-Xent between views; `memory_bank=True` takes the negatives from a queue."""
from ..core.registry import METHODS
from ..heads import FeatureQueue
from ..losses import mean_over_view_pairs, nt_xent_loss
from .base import SSLMethod


@METHODS.register("simclr")
class SimCLR(SSLMethod):
    name = "simclr"
    supports_memory_bank = True
    defaults = dict(optimizer="lars", lr=0.4, weight_decay=1e-5, proj_hidden_dim=2048, proj_output_dim=256,
                    proj_layers=2, temperature=0.2, queue_size=4096)

    def build_heads(self):
        out = self.build_projector()
        self.queue = FeatureQueue(self.cfg["queue_size"], out) if self.hparams.memory_bank else None

    def ssl_loss(self, feats, views):
        zs = [self.projector(f) for f in feats]
        t = self.cfg["temperature"]
        if self.queue is None:
            return mean_over_view_pairs(lambda a, b: nt_xent_loss(a, b, t), zs)
        # With a memory bank the negatives are the queue of earlier embeddings (lightly's semantics).
        loss = mean_over_view_pairs(lambda a, b: nt_xent_loss(a, b, t, queue=self.queue.negatives()), zs)
        self.queue.push(zs[-1].detach())
        return loss
