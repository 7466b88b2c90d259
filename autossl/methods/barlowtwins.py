"""Barlow Twins (Zbontar et al., 2021): cross-correlation of two views' embeddings towards identity."""
from ..heads import projection_head
from ..losses import barlow_twins_loss, mean_over_view_pairs
from .base import SSLMethod


class BarlowTwins(SSLMethod):
    name = "barlowtwins"
    defaults = dict(optimizer="lars", lr=0.3, weight_decay=1e-4, proj_hidden_dim=2048, proj_output_dim=2048,
                    proj_layers=3, lambda_param=0.0051, scale_loss=0.1)

    def build_heads(self):
        c = self.cfg
        self.projector, _ = projection_head(self.hparams.projectionhead, self.feat_dim, c["proj_hidden_dim"],
                                            c["proj_output_dim"], c["proj_layers"])
        _warn_memory_bank(self)

    def ssl_loss(self, feats, views):
        zs = [self.projector(f) for f in feats]
        lam = self.cfg["lambda_param"]
        return self.cfg["scale_loss"] * mean_over_view_pairs(lambda a, b: barlow_twins_loss(a, b, lam), zs)


def _warn_memory_bank(method: SSLMethod) -> None:
    if method.hparams.memory_bank:
        from pytorch_lightning.utilities import rank_zero_warn

        rank_zero_warn(f"memory_bank=True has no effect on {type(method).__name__}: it uses no negatives")
