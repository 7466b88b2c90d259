"""All4One (Estepa et al., 2023, "All4One: Symbiotic Neighbour Contrastive Learning via Self-Attention and
Redundancy Reduction", ICCV 2023), as solo-learn implements it (solo/methods/all4one.py, the authors' PR).

NNCLR with a momentum target and two more objectives. Each view's momentum target t (L2-normalised) looks
up its k = 5 nearest neighbours in a support set of past targets (heads/neighbour_sequence.py), then:
- neighbour contrast: the nearest neighbour NN_1(t_i) against the online prediction p_j = predictor(z_j)
  of the other view (NNCLR's term, temperature 0.2);
- centroid: a small transformer reads view i's neighbour sequence [NN_1..NN_5] and, separately, view j's
  shifted sequence [predictor2(z_j), NN_1..NN_4]; its outputs at the first position are contrasted
  (temperature 0.1), so the online branch learns to stand in for the neighbours' summary;
- feature contrast: a redundancy-reduction term on the cross-correlation of the target's and the other
  view's online projection's columns (losses/all4one.py).
loss = 0.5 centroid + 0.5 neighbour + 5 feature (solo-learn: 0.5 x the feature term x 10). After the loss,
the first view's targets are pushed into the support set (buffers: checkpointed, resumed exactly).

Defaults and where they come from:
- heads: solo-learn's All4One (3-layer projector 2048 -> 256 ending in BN, here affine-free as this
  library's other projectors; two 2-layer predictors, 4096 hidden; transformer 8 heads, 3 layers,
  feed-forward 2 x 256, dropout 0.1, k = 5 neighbours);
- temperature 0.2, support set 98304, LARS lr 1.0, wd 1e-5, tau 0.99 -> 1: solo-learn's CIFAR recipe
  (scripts/pretrain/cifar/all4one.yaml); centroid temperature 0.1: nnclr_loss_func's default, which
  solo-learn's training_step leaves in place;
- transformer lr 0.1 under the same warm-up cosine: solo-learn's learnable_params ({"lr": 0.1}); here
  an `lr_scale` of transformer_lr / lr, so it follows the batch-size scaling of the base lr too;
- loss weights 0.5 / 0.5 / 5.0: solo-learn's training_step (final_losss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.registry import METHODS
from ..data.batch import Batch
from ..heads import prediction_head
from ..heads.neighbour_sequence import KNearestSupportSet, NeighbourTransformer
from ..losses.all4one import centroid_loss, feature_contrast_loss, neighbour_contrast_loss
from ..optim import decay_groups
from .base import SSLMethod


@METHODS.register("all4one")
class All4One(SSLMethod):
    name = "all4one"
    momentum_targets = {"target_backbone": "backbone", "target_projector": "projector"}
    defaults = dict(optimizer="lars", lr=1.0, weight_decay=1e-5, proj_hidden_dim=2048, proj_output_dim=256,
                    proj_layers=3, pred_hidden_dim=4096, temperature=0.2, centroid_temperature=0.1,
                    queue_size=98304, num_neighbours=5, transformer_heads=8, transformer_layers=3,
                    transformer_dropout=0.1, transformer_lr=0.1, centroid_weight=0.5, neighbour_weight=0.5,
                    feature_weight=5.0, momentum_base=0.99)

    def build_heads(self):
        c = self.cfg
        out = self.build_projector(last_bn=True)
        self.predictor = prediction_head(out, c["pred_hidden_dim"])
        self.centroid_predictor = prediction_head(out, c["pred_hidden_dim"])  # solo-learn's predictor2
        self.transformer = NeighbourTransformer(out, c["num_neighbours"], c["transformer_heads"],
                                                c["transformer_layers"], dropout=c["transformer_dropout"])
        self.support_set = KNearestSupportSet(c["queue_size"], out)
        if c["num_neighbours"] > c["queue_size"]:
            raise ValueError(f"num_neighbours={c['num_neighbours']} exceeds queue_size={c['queue_size']}")

    def step(self, batch: Batch) -> dict:
        feats = self.encode_views(batch.views)
        terms = self.loss_terms(feats, batch.views)
        loss = sum(self.cfg[f"{name}_weight"] * value for name, value in terms.items())
        return {"loss": loss, "feats": feats[0], "log": {f"{name}_loss": v.detach() for name, v in terms.items()}}

    def loss_terms(self, feats: list[torch.Tensor], views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The three unweighted objectives from the backbone features of each view."""
        c = self.cfg
        zs = [self.projector(f) for f in feats]
        ps = [self.predictor(z) for z in zs]
        shifted_heads = [self.centroid_predictor(z) for z in zs]
        # solo-learn's momentum_forward returns the target projections L2-normalised: the neighbours are
        # looked up with them and the feature term sees them so (its column normalisation is not scale-free per row)
        targets = [F.normalize(t, dim=1) for t in self.encode_target(views)]
        seqs = [self.support_set.nearest_k(t, c["num_neighbours"]) for t in targets]  # before this batch is added
        centroids = [self.transformer(s) for s in seqs]
        # the shift: the online prediction takes the first slot and pushes the farthest neighbour out
        shifted = [self.transformer(torch.cat([h.unsqueeze(1), s[:, :-1].to(h.dtype)], dim=1))
                   for h, s in zip(shifted_heads, seqs)]
        terms = {"centroid": centroid_loss(centroids, shifted, c["centroid_temperature"]),
                 "neighbour": neighbour_contrast_loss([s[:, 0] for s in seqs], ps, c["temperature"]),
                 "feature": feature_contrast_loss(targets, zs)}
        self.support_set.push(targets[0])
        return terms

    def param_groups(self) -> list[dict]:
        # solo-learn trains the transformer at its own LR (0.1 against the base 1.0); timm's scheduler
        # multiplies `lr_scale` into every step's LR, so warm-up and cosine apply to it as to the rest
        own = {id(p) for p in self.transformer.parameters()}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in own]} for g in super().param_groups()]
        scale = self.cfg["transformer_lr"] / self.cfg["lr"]
        return [g for g in groups if g["params"]] + decay_groups(self.transformer.named_parameters(), lr_scale=scale)
