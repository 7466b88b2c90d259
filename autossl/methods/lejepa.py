"""LeJEPA (Balestriero & LeCun, Nov 2025, "LeJEPA: Provable and Scalable Self-Supervised Learning Without the
Heuristics", arXiv:2511.08544; reference code github.com/rbalestr-lab/lejepa): multi-view prediction plus
SIGReg, a sketched test that the embeddings are an isotropic Gaussian.

Every crop, global and local, goes through the backbone and one projector; each view's projection
predicts the mean projection of the global crops, and SIGReg (losses/lejepa.py: the Epps-Pulley
characteristic-function test along random 1-D directions, averaged over views) keeps the projections
N(0, I). That is all: no EMA teacher, no predictor, no stop-gradient, no centering or temperature
schedule, no negatives. The global-view mean is not detached, as in the paper's listing.

Why it is here: it is newer than solo-learn's and lightly's core method lists (lightly 1.6 ships only
the loss and a projection head), and it replaces the anti-collapse heuristics of the distillation family
with one principled term whose optimum the paper derives (isotropic Gaussian embeddings minimise the
downstream probe's worst-case risk), leaving one trade-off hyper-parameter, lambd. The authors also
report that its training loss tracks downstream accuracy, so it is informative without labels.

Defaults and their sources:
- lambd = 0.05: lightly's default, which it documents as the reference implementation's (and the paper's
  range as 0.01-0.1); the authors' minimal example runs 0.02;
- num_slices = 1024 directions, drawn afresh every step and shared by all views: the authors' package
  (README quick start) and lightly (the paper's listing shows 256 by default);
- knots = 17 on [0, t_max = 3], mirrored: the authors' package (`EppsPulley`) and minimal example, and
  lightly (the paper's listing, 17 points on [-5, 5], is knots = 9, t_max = 5 here);
- projector 2048-2048-128 with BatchNorm, over all views at once: the authors' minimal example
  (torchvision MLP(.., [2048, 2048, proj_dim=128], BatchNorm1d));
- AdamW, lr 5e-4, weight decay 5e-4: the authors' README ("GOTO hyperparameters": lr 5e-4, wd 5e-4 for
  ResNets, 5e-2 for ViTs); the lr is per 256 images here (scale_lr).
Multi-crop (2 global + 6 local crops in the authors' README) is the data layer's: data.num_local.
"""
import torch

from ..core.registry import METHODS
from ..losses.lejepa import lejepa_loss
from .base import SSLMethod


@METHODS.register("lejepa", aliases=("le-jepa", "le_jepa"))
class LeJEPA(SSLMethod):
    name = "lejepa"
    defaults = dict(optimizer="adamw", lr=5e-4, weight_decay=5e-4, proj_hidden_dim=2048, proj_output_dim=128,
                    proj_layers=3, lambd=0.05, num_slices=1024, knots=17, t_max=3.0)

    def build_heads(self):
        self.build_projector()

    def step(self, batch):
        c = self.cfg
        feats = self.encode_views(batch.views)  # global crops first, then local ones
        # one projector pass over every view, as the reference: its BatchNorm sees global and local crops together
        zs = self.projector(torch.cat(feats)).split([len(f) for f in feats])
        # the slices come from the global generator, which checkpoints save and resumes restore
        terms = lejepa_loss(zs, batch.num_global, c["lambd"], c["num_slices"], c["t_max"], c["knots"])
        return {"loss": terms.loss, "feats": feats[0],
                "log": {"lejepa_prediction": terms.prediction.detach(), "sigreg": terms.sigreg.detach()}}
