"""FastSiam (Pototzky et al., 2022): SimSiam whose views each predict the mean of the other views.

Pototzky, Sultan & Schmidt-Thieme, "FastSiam: Resource-Efficient Self-supervised Learning on a Single
GPU", GCPR 2022.

SimSiam with K > 2 views per image: each view's prediction p_i targets the mean of the *other* views'
projections, mean_{j != i} z_j (stop-gradient), and the loss averages -cos(p_i, target_i) over the K
views. Averaging K - 1 projections gives a less noisy target than SimSiam's single other view, which the
paper shows converges in fewer epochs at a small batch (one GPU). With K = 2 it is exactly SimSiam.
Views come from `batch.views` (data.num_views; the experiment uses the paper's 4), all through the
backbone in one pass.

Defaults: the SimSiam heads and optimisation of solo-learn's CIFAR recipe (scripts/pretrain/cifar/
simsiam.yaml: 2048 hidden, 2048 output, 512 predictor hidden, SGD lr 0.5, wd 1e-5), as lightly's
FastSiam example reuses SimSiam's heads.
"""
import torch

from ..core.registry import METHODS
from ..losses import negative_cosine_loss
from .simsiam import SimSiam


@METHODS.register("fastsiam")
class FastSiam(SimSiam):  # SimSiam's heads and defaults; only the targets differ
    name = "fastsiam"

    def ssl_loss(self, feats, views):
        zs = [self.projector(f) for f in feats]
        ps = [self.predictor(z) for z in zs]
        z_all = torch.stack([z.detach() for z in zs])  # stop-gradient on every target
        k = len(zs)
        others = (z_all.sum(0, keepdim=True) - z_all) / (k - 1)  # mean of the other views, per view
        return torch.stack([negative_cosine_loss(p, t) for p, t in zip(ps, others)]).mean()
