"""MoCo v2 (He et al., 2020; Chen et al., 2020): a momentum key encoder and, with
`memory_bank=True`, a queue of negatives. Without the queue, in-batch keys are the negatives."""
import torch

from ..heads import projection_head
from ..losses import nt_xent_loss
from .base import SSLMethod
from .queue import FeatureQueue


class MoCo(SSLMethod):
    name = "moco"
    uses_momentum = True
    defaults = dict(optimizer="sgd", lr=0.3, weight_decay=1e-4, proj_hidden_dim=2048, proj_output_dim=256,
                    proj_layers=2, temperature=0.2, queue_size=32768, momentum_base=0.99)

    def build_heads(self):
        c = self.cfg
        self.projector, out = projection_head(self.hparams.projectionhead, self.feat_dim, c["proj_hidden_dim"],
                                              c["proj_output_dim"], c["proj_layers"])
        self.queue = FeatureQueue(c["queue_size"], out) if self.hparams.memory_bank else None

    def ssl_loss(self, feats, views):
        qs = [self.projector(f) for f in feats]
        ks = self.encode_target(views)
        t = self.cfg["temperature"]
        terms = []
        for i, q in enumerate(qs):
            for j, k in enumerate(ks):
                if i == j:
                    continue
                if self.queue is not None:
                    terms.append(nt_xent_loss(q, k, t, queue=self.queue.negatives()))
                else:
                    terms.append(_in_batch_infonce(q, k, t))
        loss = torch.stack(terms).mean()
        if self.queue is not None:
            self.queue.push(ks[0])
        return loss


def _in_batch_infonce(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """Query-vs-keys InfoNCE where the other samples' keys are the negatives (MoCo v3 form)."""
    import torch.nn.functional as F

    from ..losses.distributed import gather, rank

    q, k = F.normalize(q, dim=1), F.normalize(gather(k), dim=1)
    logits = q @ k.T / temperature
    labels = torch.arange(len(q), device=q.device) + rank() * len(q)
    return F.cross_entropy(logits, labels)
