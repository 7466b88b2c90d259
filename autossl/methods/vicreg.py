"""VICReg (Bardes et al., 2022): invariance, variance and covariance terms on the embeddings."""
from ..core.registry import METHODS
from ..losses import mean_over_view_pairs, vicreg_loss
from .base import SSLMethod


@METHODS.register("vicreg")
class VICReg(SSLMethod):
    name = "vicreg"
    defaults = dict(optimizer="lars", lr=0.3, weight_decay=1e-4, proj_hidden_dim=2048, proj_output_dim=2048,
                    proj_layers=3, sim_weight=25.0, var_weight=25.0, cov_weight=1.0)

    def build_heads(self):
        self.build_projector()

    def ssl_loss(self, feats, views):
        zs = [self.projector(f) for f in feats]
        c = self.cfg
        return mean_over_view_pairs(
            lambda a, b: vicreg_loss(a, b, c["sim_weight"], c["var_weight"], c["cov_weight"]), zs)
