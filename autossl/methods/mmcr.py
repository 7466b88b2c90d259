"""MMCR (Yerxa et al., 2023): maximise the nuclear norm of the per-image centroids of many views.

"Learning Efficient Coding of Natural Images with Maximum Manifold Capacity Representations",
NeurIPS 2023, arXiv:2303.03307; reference code github.com/ThomasYerxa/mmcr.

Every view of an image goes through the backbone and projector; the loss (losses/mmcr.py) maximises
the nuclear norm of the matrix of per-image centroids of the normalised view embeddings. It works with
any number of views N >= 2 and gets better with more (the centroids are better estimates), so the
experiment uses many views of small batches, as the reference does on CIFAR. No momentum encoder: the
reference's CIFAR/STL recipe has none (its ImageNet recipe and lightly's example add one; not here).

Defaults: the reference's CIFAR recipe (pretrain_cifar_stl.py, mmcr/cifar_stl/models.py: projector
512 hidden -> 128 (the reference's last layer has no bias), lambda 0, 40 views of batches of 32, Adam
lr 1e-3, wd 1e-6; the lr here, 8e-3, is per 256 images under the linear scaling rule: 1e-3 at batch 32).
"""
from ..core.registry import METHODS
from ..losses.mmcr import mmcr_loss
from .base import SSLMethod


@METHODS.register("mmcr")
class MMCR(SSLMethod):
    name = "mmcr"
    defaults = dict(optimizer="adamw", lr=8e-3, weight_decay=1e-6, proj_hidden_dim=512, proj_output_dim=128,
                    proj_layers=2, lmda=0.0)

    def build_heads(self):
        self.build_projector()

    def ssl_loss(self, feats, views):
        return mmcr_loss([self.projector(f) for f in feats], self.cfg["lmda"])
