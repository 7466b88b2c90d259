"""DINO (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision Transformers",
arXiv:2104.14294; reference code github.com/facebookresearch/dino): self-distillation with no labels.

A student (backbone + `DINOHead`) sees every crop, global and local; the teacher, an EMA of the
student (`momentum_targets`), sees only the global crops ("local-to-global" correspondence, paper
§3.1: small crops must predict what the teacher says about the whole image). The loss
(losses/dino.py) is a cross-entropy against the teacher's centred, sharpened output. Kept as in the
reference:

- the center is a registered buffer (so it is checkpointed and resumes), updated after every step
  with momentum `center_momentum` from the global-batch mean of the teacher outputs;
- the teacher temperature warms up linearly per epoch from `warmup_teacher_temp` to `teacher_temp`
  over `warmup_teacher_temp_epochs` (a too-soft teacher early on destabilises training);
- the last layer's gradients are dropped for the first `freeze_last_layer` epochs
  (`on_after_backward`): the paper's appendix notes this stabilises the start of training;
- under a time budget both phases keep their share of the 1000-epoch recipe (`phase_epoch`): a budget run is
  often shorter than one epoch, and counted in epochs its teacher would never warm up nor its last layer train;
- `clip_grad` > 0 clips each student parameter's gradient norm (the reference's `clip_gradients`),
  after AMP unscaling, as the reference does.

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/dino.yaml: 2048 hidden, 256 bottleneck,
4096 prototypes, tau 0.9995 -> 1, LARS lr 0.3, wd 1e-6; solo/methods/dino.py: student 0.1, teacher
0.04 -> 0.07, last-layer freeze 1 epoch, no BN in the head, normalised last layer, no clipping). The
warm-up length is solo-learn's earlier default of 50 epochs (its current default, 0, is no warm-up;
the paper uses 30 on ImageNet). The center momentum 0.9 is the paper's.
"""
from __future__ import annotations

import torch
from pytorch_lightning.utilities import rank_zero_warn

from ..core.registry import METHODS
from ..heads import DINOHead
from ..losses.dino import dino_loss, teacher_temperature, update_center
from .base import SSLMethod


@METHODS.register("dino")
class DINO(SSLMethod):
    name = "dino"
    momentum_targets = {"target_backbone": "backbone", "target_head": "head"}
    recipe_epochs = 1000  # solo-learn's CIFAR run: a time budget maps its phases onto it (phase_epoch)
    defaults = dict(optimizer="lars", lr=0.3, weight_decay=1e-6, proj_hidden_dim=2048, proj_output_dim=256,
                    proj_layers=3, num_prototypes=4096, use_bn_in_head=False, norm_last_layer=True,
                    student_temp=0.1, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=50,
                    center_momentum=0.9, freeze_last_layer=1, clip_grad=0.0, momentum_base=0.9995)

    def build_heads(self):
        c = self.cfg
        self.head = DINOHead(self.feat_dim, c["proj_hidden_dim"], c["proj_output_dim"], c["num_prototypes"],
                             c["proj_layers"], batch_norm=c["use_bn_in_head"], norm_last_layer=c["norm_last_layer"])
        self.register_buffer("center", torch.zeros(1, c["num_prototypes"]))
        if self.hparams.memory_bank:
            rank_zero_warn("memory_bank=True has no effect on DINO: it uses no negatives")

    def teacher_temp_now(self) -> float:
        c = self.cfg
        return teacher_temperature(self.phase_epoch(), c["warmup_teacher_temp"], c["teacher_temp"],
                                   c["warmup_teacher_temp_epochs"])

    def _heads(self, head, feats):
        """The head over all views in one batch, as the reference does (matters with BN in the head)."""
        return list(head(torch.cat(feats)).split([len(f) for f in feats]))

    def step(self, batch):
        c = self.cfg
        feats = self.encode_views(batch.views)  # global crops first, then local ones
        student = self._heads(self.head, feats)
        with torch.no_grad():
            teacher = self._heads(self.target_head, self.encode_views(batch.global_views, self.target_backbone))
        temp = self.teacher_temp_now()
        loss = dino_loss(student, teacher, self.center, c["student_temp"], temp)
        self.center.copy_(update_center(self.center, teacher, c["center_momentum"]))
        return {"loss": loss, "feats": feats[0], "log": {"teacher_temp": temp}}

    def on_after_backward(self) -> None:
        self.head.cancel_last_layer_gradients(self.phase_epoch(), self.cfg["freeze_last_layer"])

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        clip = self.cfg["clip_grad"]
        if clip:  # per parameter, as the reference's utils.clip_gradients (not one global norm)
            for p in list(self.backbone.parameters()) + list(self.head.parameters()):
                if p.grad is not None:
                    coef = clip / (p.grad.detach().norm(2) + 1e-6)
                    if coef < 1:
                        p.grad.detach().mul_(coef)
