"""W-MSE (Ermolov et al., 2021): whitened embeddings of the views pulled together by a normalised MSE.

"Whitening for Self-Supervised Representation Learning", ICML 2021, arXiv:2007.06346.

Backbone and a 2-layer projector on every view; the loss (losses/wmse.py) whitens each view's
embeddings over random sub-batches of `w_size` (Cholesky whitening: the scatter of whitened vectors is
the identity, so they cannot collapse) and pulls the normalised whitened positives together, over all
view pairs. No negatives, no predictor, no momentum encoder: whitening alone prevents collapse.

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/wmse.yaml and solo/methods/wmse.py:
1024 hidden, 64 output, whitening size 128, 1 iteration, eps 0, Adam lr 2e-3, wd 1e-6; AdamW here,
the library's Adam, whose decoupled decay at 1e-6 differs negligibly).
"""
from ..core.registry import METHODS
from ..losses.wmse import wmse_loss
from .base import SSLMethod


@METHODS.register("wmse", aliases=("w_mse",))
class WMSE(SSLMethod):
    name = "wmse"
    defaults = dict(optimizer="adamw", lr=2e-3, weight_decay=1e-6, proj_hidden_dim=1024, proj_output_dim=64,
                    proj_layers=2, w_size=128, w_iter=1, w_eps=0.0)

    def build_heads(self):
        self.build_projector()

    def ssl_loss(self, feats, views):
        c = self.cfg
        return wmse_loss([self.projector(f) for f in feats], c["w_size"], c["w_iter"], c["w_eps"])
