"""ReSSL (Zheng et al., 2021, "ReSSL: Relational Self-Supervised Learning with Weak Augmentation", NeurIPS
2021, arXiv:2107.09282; as solo-learn runs it, `solo/methods/ressl.py`).

A student (backbone + projector) and its EMA teacher; a FIFO queue of the teacher's past L2-normalised
projections. The teacher embeds the second view (the *weakly* augmented one in the paper), the student every
other view; each student view's similarity distribution over the queue (temperature 0.1) must match the
teacher's, which is sharper (0.04) (losses/ressl.py). After the step the teacher's batch enters the queue,
gathered over processes. With 2 views this is solo-learn's step exactly (q from view 1, k from view 2); more
views average the loss over the student views. The queue is used from its filled part (solo-learn starts from
random unit vectors and uses all of them until they are overwritten). The projector is solo-learn's
Linear-ReLU-Linear, without BatchNorm.

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/ressl.yaml: 4096 hidden, 256 output, tau 0.99 -> 1,
temperatures 0.1 / 0.04, SGD lr 0.05, wd 1e-4; queue 65536: solo/methods/ressl.py's default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.registry import METHODS
from ..heads import FeatureQueue, mlp
from ..losses.ressl import ressl_loss
from .base import SSLMethod


@METHODS.register("ressl")
class ReSSL(SSLMethod):
    name = "ressl"
    momentum_targets = {"target_backbone": "backbone", "target_projector": "projector"}
    defaults = dict(optimizer="sgd", lr=0.05, weight_decay=1e-4, proj_hidden_dim=4096, proj_output_dim=256,
                    proj_layers=2, temperature_q=0.1, temperature_k=0.04, queue_size=65536, momentum_base=0.99)

    def build_heads(self):
        c = self.cfg
        self.projector = mlp(self.feat_dim, c["proj_hidden_dim"], c["proj_output_dim"], c["proj_layers"],
                             batch_norm=False)
        self.queue = FeatureQueue(c["queue_size"], c["proj_output_dim"])

    def ssl_loss(self, feats, views):
        c = self.cfg
        with torch.no_grad():
            k = F.normalize(self.target_projector(self.target_backbone(self._prepare(views[1]))), dim=1)
        queue = self.queue.negatives().clone()  # push() below overwrites it in place
        students = [f for i, f in enumerate(feats) if i != 1]
        loss = torch.stack([ressl_loss(F.normalize(self.projector(f), dim=1), k, queue, c["temperature_q"],
                                       c["temperature_k"]) for f in students]).mean()
        self.queue.push(k)
        return loss
