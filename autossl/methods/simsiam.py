"""SimSiam (Chen & He, 2021): BYOL without the momentum target; stop-gradient on the other branch."""
import torch

from ..heads import prediction_head, projection_head
from ..losses import negative_cosine_loss
from .base import SSLMethod


class SimSiam(SSLMethod):
    name = "simsiam"
    defaults = dict(optimizer="sgd", lr=0.5, weight_decay=1e-5, proj_hidden_dim=2048, proj_output_dim=2048,
                    proj_layers=2, pred_hidden_dim=512)

    def build_heads(self):
        c = self.cfg
        self.projector, out = projection_head(self.hparams.projectionhead, self.feat_dim, c["proj_hidden_dim"],
                                              c["proj_output_dim"], c["proj_layers"], last_bn=True)
        self.predictor = prediction_head(out, c["pred_hidden_dim"])
        if self.hparams.memory_bank:
            from pytorch_lightning.utilities import rank_zero_warn

            rank_zero_warn("memory_bank=True has no effect on SimSiam: it uses no negatives")

    def ssl_loss(self, feats, views):
        zs = [self.projector(f) for f in feats]
        ps = [self.predictor(z) for z in zs]
        terms = [negative_cosine_loss(p, z.detach()) for i, p in enumerate(ps) for j, z in enumerate(zs) if i != j]
        return torch.stack(terms).mean()


SiaSiam = SimSiam  # the earlier autoSSL's spelling
