"""SupCon (Khosla et al., 2020): contrastive learning whose positives are all images of the class.

"Supervised Contrastive Learning", NeurIPS 2020, arXiv:2004.11362.

SimCLR whose positives include every image of the anchor's class (losses/supcon.py, the paper's
L^sup_out). It reads `batch.labels`: an image labelled -1 (or a batch without labels) gets SimCLR's
positives only, its own other views, so the same model trains on fully, partly or un-labelled data.
All views go through the backbone in one pass and into the loss together (any N >= 2; with labels,
one view per image would also do, but the data pipeline always gives two or more).

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/supcon.yaml: 2048 hidden, 256 output,
temperature 0.2, SGD lr 0.4, wd 1e-5, 1000 epochs).
"""
from ..core.registry import METHODS
from ..losses.supcon import supcon_loss
from .base import SSLMethod


@METHODS.register("supcon")
class SupCon(SSLMethod):
    name = "supcon"
    defaults = dict(optimizer="sgd", lr=0.4, weight_decay=1e-5, proj_hidden_dim=2048, proj_output_dim=256,
                    proj_layers=2, temperature=0.2)

    def build_heads(self):
        self.build_projector()

    def step(self, batch):
        feats = self.encode_views(batch.views)
        zs = [self.projector(f) for f in feats]
        return {"loss": supcon_loss(zs, batch.labels, self.cfg["temperature"]), "feats": feats[0]}
