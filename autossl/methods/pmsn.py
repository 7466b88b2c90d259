"""PMSN (Assran et al., 2023, "The Hidden Uniform Cluster Prior in Self-Supervised Learning", ICLR 2023,
arXiv:2210.07277): MSN (methods/msn.py) with its me-max regulariser, which the paper shows imposes a uniform
prior on the cluster sizes, replaced by KL(power law || mean anchor prediction) (losses/msn.py `pmsn_loss`),
better suited to data whose classes are not balanced. ViT only, views and schedules as MSN.

Defaults: MSN's (configs/pretrain/msn_vits16.yaml, see methods/msn.py) with the paper's power-law exponent
tau = 0.25 and weight 1.
"""
from __future__ import annotations

import torch

from ..core.registry import METHODS
from ..losses.msn import pmsn_loss
from .msn import MSN


@METHODS.register("pmsn")
class PMSN(MSN):
    name = "pmsn"
    defaults = dict({k: v for k, v in MSN.defaults.items() if k != "me_max_weight"}, power_law_exponent=0.25,
                    prior_weight=1.0)

    def loss_fn(self, anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return pmsn_loss(anchors, targets, self.prototypes, c["temperature"], c["target_sharpen_temperature"],
                         c["sinkhorn_iterations"], c["prior_weight"], c["power_law_exponent"])
