"""DCLW (Yeh et al., 2022): DCL with von Mises-Fisher weights on the positive pairs.

"Decoupled Contrastive Learning", arXiv:2110.06848, eq. 7: the positive term is weighted by a negative
von Mises-Fisher weight, w_i = 2 - N softmax_i(<z_i, z_i'> / sigma) (losses/dcl.py). Pairs whose views
are far apart (hard positives) get weights above 1 and easy ones below, which the paper reports adds
accuracy over DCL at no cost.

Defaults: DCL's (solo-learn's SimCLR CIFAR recipe) with sigma 0.5 and temperature 0.1, lightly's
`DCLWLoss` defaults (the paper's reference implementation).
"""
from ..core.registry import METHODS
from ..losses.dcl import dclw_loss
from .dcl import DCL


@METHODS.register("dclw")
class DCLW(DCL):
    name = "dclw"
    defaults = dict(DCL.defaults, sigma=0.5)

    def pair_loss(self, z_a, z_b):
        return dclw_loss(z_a, z_b, self.cfg["temperature"], self.cfg["sigma"])
