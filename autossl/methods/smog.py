"""SMoG (Pang et al., 2022, "Unsupervised Visual Representation Learning by Synchronous Momentum Grouping",
arXiv:2207.06167), as lightly's SMoG example and CIFAR-10 benchmark run it (`SMoGModel`: SMoGPrototypes,
SMoGProjectionHead, SMoGPredictionHead).

Group-level contrast: per step the online network (backbone -> projector -> predictor) sees one view and the
momentum encoder (EMA of backbone and projector, `momentum_targets`) the other. The target projection is assigned to
its nearest group feature; the groups then take one momentum step towards the online projections assigned to them
(heads/smog.py, beta); the loss is the cross-entropy, at `temperature`, of the online prediction's cosine logits
over the *updated* groups against the target's group (losses/smog.py). The order is lightly's: assign the target
against the groups of the previous step, update with the online projections, score against the update, store the
update. As lightly's, the updated groups depend on the online projections, so the loss also reaches the projector
through them (scaled by 1 - beta). Under DDP the update uses every process's online projections (gathered,
heads/smog.py), so the groups stay the same on every process. Which view is online alternates every step (lightly
swaps x0 and x1 on odd batches), so each view feeds the online network half the time at the cost of one pass per
network; here by the global step's parity, which a resumed run restores (lightly uses the batch index within the
epoch). With more than two global views the online view cycles through them, the target taking the next one; local
crops are not used.

Heads as lightly's SMoG heads: the projector is Linear-BN-ReLU-Linear-BN (no affine on the last BN: "the output
layer of projection head also has BN", the paper as lightly's heads quote it), the predictor Linear-BN-ReLU-Linear.

Defaults: all from lightly's CIFAR-10 benchmark `SMoGModel`, ResNet-18: projector 2048 hidden, 128 output; predictor
2048 hidden; 300 groups (its comment puts the paper's best at 3000, 2% better); beta 0.99; temperature 0.1; momentum
encoder at 0.99; SGD lr 0.01 at its batch of 512, i.e. 0.005 per 256 images here, momentum 0.9, wd 1e-6. The
paper's text was not at hand here, so no default is taken from it directly.
Two differences with that benchmark: the EMA rate follows this library's cosine schedule from `momentum_base` to 1
(lightly keeps 0.99 fixed), and its reset every 300 steps (groups re-initialised by k-means on a bank of past
projections and the momentum encoder copied from the online one, the paper's Table 7b as lightly cites it) is not
done here: the groups move only by the momentum update above.
"""
from __future__ import annotations

from ..core.registry import METHODS
from ..heads import prediction_head
from ..heads.smog import SMoGGroups
from ..losses.smog import smog_loss
from .base import SSLMethod


@METHODS.register("smog")
class SMoG(SSLMethod):
    name = "smog"
    momentum_targets = {"target_backbone": "backbone", "target_projector": "projector"}
    defaults = dict(optimizer="sgd", lr=0.005, weight_decay=1e-6, proj_hidden_dim=2048, proj_output_dim=128,
                    proj_layers=2, pred_hidden_dim=2048, num_groups=300, beta=0.99, temperature=0.1,
                    momentum_base=0.99)

    def build_heads(self):
        out = self.build_projector(last_bn=True)
        self.predictor = prediction_head(out, self.cfg["pred_hidden_dim"])
        self.groups = SMoGGroups(self.cfg["num_groups"], out, self.cfg["beta"])

    def step(self, batch):
        g = batch.num_global
        if g < 2:
            raise ValueError(f"SMoG needs two views of the same size (online and momentum), the batch has {g}")
        i = self.global_step % g
        feats = self.encode_views([batch.views[i]])[0]
        z = self.projector(feats)
        target = self.encode_target([batch.views[(i + 1) % g]])[0]
        assignments = self.groups.assign(target)  # against the previous step's groups, as lightly
        groups = self.groups.updated(z)
        loss = smog_loss(self.predictor(z), groups, assignments, self.cfg["temperature"])
        self.groups.set(groups)
        return {"loss": loss, "feats": feats}
