"""SimSiam (Chen & He, 2021): BYOL without the momentum target; stop-gradient on the other branch."""
from ..core.registry import METHODS
from ..heads import prediction_head
from ..losses import mean_over_cross_views, negative_cosine_loss
from .base import SSLMethod


@METHODS.register("simsiam", aliases=("siasiam",))
class SimSiam(SSLMethod):
    name = "simsiam"
    defaults = dict(optimizer="sgd", lr=0.5, weight_decay=1e-5, proj_hidden_dim=2048, proj_output_dim=2048,
                    proj_layers=2, pred_hidden_dim=512)

    def build_heads(self):
        out = self.build_projector(last_bn=True)
        self.predictor = prediction_head(out, self.cfg["pred_hidden_dim"])

    def ssl_loss(self, feats, views):
        zs = [self.projector(f) for f in feats]
        ps = [self.predictor(z) for z in zs]
        return mean_over_cross_views(negative_cosine_loss, ps, [z.detach() for z in zs])  # stop-gradient


SiaSiam = SimSiam  # the earlier autoSSL's spelling
