"""Barlow Twins (Zbontar et al., 2021): cross-correlation of two views' embeddings towards identity."""
from ..core.registry import METHODS
from ..losses import barlow_twins_loss, mean_over_view_pairs
from .base import SSLMethod


@METHODS.register("barlowtwins", aliases=("barlow_twins", "barlow"))
class BarlowTwins(SSLMethod):
    name = "barlowtwins"
    defaults = dict(optimizer="lars", lr=0.3, weight_decay=1e-4, proj_hidden_dim=2048, proj_output_dim=2048,
                    proj_layers=3, lambda_param=0.0051, scale_loss=0.1)

    def build_heads(self):
        self.build_projector()

    def ssl_loss(self, feats, views):
        zs = [self.projector(f) for f in feats]
        lam = self.cfg["lambda_param"]
        return self.cfg["scale_loss"] * mean_over_view_pairs(lambda a, b: barlow_twins_loss(a, b, lam), zs)
