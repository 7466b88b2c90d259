"""EMP-SSL (Tong et al., 2023): many patches per image, total coding rate plus invariance to the mean.

"EMP-SSL: Towards Self-Supervised Learning in One Training Epoch", arXiv:2304.03977; reference code
github.com/tsb0601/EMP-SSL.

Many small fixed-size patches per image (20 on CIFAR; `batch.views`, data.num_views) go through the
backbone in one pass and a 3-layer projector onto the unit sphere; the loss (losses/emp.py) maximises
each patch set's total coding rate and each patch's cosine similarity to its image's mean patch
embedding. Seeing so many patches of every image per step, the paper reaches most of its accuracy in
one epoch and needs no momentum encoder, predictor or negatives.

Evaluation (out of scope of this class): the paper evaluates a "bag of features", the embedding of an
image being the mean over many patches of it (128 at test time, evaluate.py of the reference), not the
backbone feature of the whole image. `forward` here returns the backbone features of what it is given;
to evaluate as the paper does, embed N patches of each test image with `forward` (the training view
recipe without colour augmentation) and average the N feature vectors per image before the k-NN or
linear probe. The reference averages its 4096-d pre-projection features; the backbone features are what
this library's evaluation uses.

Defaults: the reference's CIFAR recipe (main.py, model/model.py: projector 4096 hidden, 4096 hidden,
1024 output; eps 0.2, invariance weight 200, LARS-wrapped SGD lr 0.3 at batch 100 = 0.768 per 256,
wd 1e-4).
"""
import torch.nn.functional as F

from ..core.registry import METHODS
from ..losses.emp import emp_ssl_loss
from .base import SSLMethod


@METHODS.register("empssl", aliases=("emp_ssl", "emp-ssl"))
class EMPSSL(SSLMethod):
    name = "empssl"
    defaults = dict(optimizer="lars", lr=0.768, weight_decay=1e-4, proj_hidden_dim=4096, proj_output_dim=1024,
                    proj_layers=3, tcr_eps=0.2, inv_coef=200.0)

    def build_heads(self):
        self.build_projector()

    def ssl_loss(self, feats, views):
        c = self.cfg
        zs = [F.normalize(self.projector(f), dim=1) for f in feats]
        return emp_ssl_loss(zs, c["tcr_eps"], c["inv_coef"])
