"""BYOL (Grill et al., 2020): predict the momentum target's projection of the other view."""
from ..core.registry import METHODS
from ..heads import prediction_head
from ..losses import mean_over_cross_views, negative_cosine_loss
from .base import SSLMethod


@METHODS.register("byol")
class BYOL(SSLMethod):
    name = "byol"
    momentum_targets = {"target_backbone": "backbone", "target_projector": "projector"}
    defaults = dict(optimizer="lars", lr=1.0, weight_decay=1e-5, proj_hidden_dim=4096, proj_output_dim=256,
                    proj_layers=2, pred_hidden_dim=4096, momentum_base=0.99)

    def build_heads(self):
        out = self.build_projector()
        self.predictor = prediction_head(out, self.cfg["pred_hidden_dim"])

    def ssl_loss(self, feats, views):
        ps = [self.predictor(self.projector(f)) for f in feats]
        targets = self.encode_target(views)
        return mean_over_cross_views(negative_cosine_loss, ps, targets)
