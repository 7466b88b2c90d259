"""BYOL (Grill et al., 2020): predict the momentum target's projection of the other view."""
import torch

from ..heads import prediction_head, projection_head
from ..losses import negative_cosine_loss
from .base import SSLMethod


class BYOL(SSLMethod):
    name = "byol"
    uses_momentum = True
    defaults = dict(optimizer="lars", lr=1.0, weight_decay=1e-5, proj_hidden_dim=4096, proj_output_dim=256,
                    proj_layers=2, pred_hidden_dim=4096, momentum_base=0.99)

    def build_heads(self):
        c = self.cfg
        self.projector, out = projection_head(self.hparams.projectionhead, self.feat_dim, c["proj_hidden_dim"],
                                              c["proj_output_dim"], c["proj_layers"])
        self.predictor = prediction_head(out, c["pred_hidden_dim"])

    def ssl_loss(self, feats, views):
        ps = [self.predictor(self.projector(f)) for f in feats]
        targets = self.encode_target(views)
        terms = [negative_cosine_loss(p, z) for i, p in enumerate(ps) for j, z in enumerate(targets) if i != j]
        return torch.stack(terms).mean()
