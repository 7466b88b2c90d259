"""iBOT (Zhou et al., 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022,
arXiv:2111.07832; reference code github.com/bytedance/ibot, `main_ibot.py`): DINO plus masked image modelling
with the teacher as an online tokenizer. ViT backbones only.

- [CLS]: DINO's self-distillation (losses/dino.py, this class extends methods/dino.py): the student's [CLS]
  outputs of every crop (its global crops masked, its local crops not) match the teacher's centred, sharpened
  [CLS] outputs of the *other* global crops.
- Patches: the student sees each global crop with some patch embeddings replaced by a learned mask token
  (`MaskedViT.encode_with_mask_token`); the teacher sees it unmasked; at the masked positions the student's
  patch outputs match the teacher's (losses/ibot.py), with their own center (`patch_center`, the mean over all
  teacher patch tokens, as the reference's `center2`) and teacher temperature schedule.
- One head for [CLS] and patch tokens (the reference's `shared_head`, its ViT-S/16 recipe), an EMA teacher of
  backbone and head, loss = lambda_cls * L_cls + lambda_patch * L_patch.
- Masks: for each global crop of each image, with probability `mask_probability` a ratio drawn uniformly in
  [mask_ratio_min, mask_ratio_max] of its patches is masked, otherwise none (the reference's `--pred_ratio 0 0.3
  --pred_ratio_var 0 0.2`). Patches are drawn at random (the reference's `pred_shape='rand'`), not in blocks:
  at 32 px the grid is 8 x 8.
- Local crops reach the ViT through `backbones/vit_crops.py` (positional embedding interpolated).

Defaults: the reference's ViT-S/16 recipe (README: out_dim 8192, shared head, norm_last_layer false, teacher
temperature 0.04 -> 0.07 over 30 epochs for [CLS] and patches; main_ibot.py: AdamW lr 5e-4 per 256, wd 0.04,
EMA 0.996 -> 1 cosine, clip 3.0, last layer frozen 1 epoch, centers 0.9, student temperature 0.1). Its weight
decay rises 0.04 -> 0.4 on a cosine; here it stays at 0.04. The monitors see the student's [CLS] feature of
the first (possibly masked) global crop.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..backbones.masked_vit import MaskedViT
from ..backbones.vit_crops import is_vit, vit_tokens
from ..core.distributed import rand_rows
from ..core.registry import METHODS
from ..losses.dino import dino_loss, teacher_temperature, update_center
from ..losses.ibot import ibot_patch_loss
from .dino import DINO


def sample_masks(n: int, num_tokens: int, probability: float = 0.5, ratio_min: float = 0.1, ratio_max: float = 0.5,
                 device: torch.device | None = None) -> torch.Tensor:
    """[n, num_tokens] bool (True = masked): each row masked with `probability`, then int(r * num_tokens) random
    tokens with r ~ U(ratio_min, ratio_max) (the reference's `ImageFolderMask` with pred_shape='rand')."""
    if not 0 <= ratio_min <= ratio_max < 1:
        raise ValueError(f"mask ratios must satisfy 0 <= min <= max < 1, got [{ratio_min}, {ratio_max}]")
    # under DDP, this process's rows of the global batch's draws (core.distributed.rand_rows: ranks mask differently)
    ratio = ratio_min + (ratio_max - ratio_min) * rand_rows(n, device=device)
    ratio = ratio * (rand_rows(n, device=device) < probability)
    count = (ratio * num_tokens).long()
    rank = rand_rows(n, num_tokens, device=device).argsort(dim=1).argsort(dim=1)
    return rank < count[:, None]


@METHODS.register("ibot")
class IBOT(DINO):
    name = "ibot"
    recipe_epochs = 800  # the reference's ViT-S/16 run: a time budget maps its phases onto it (phase_epoch)
    defaults = dict(DINO.defaults, optimizer="adamw", lr=5e-4, weight_decay=0.04, num_prototypes=8192,
                    norm_last_layer=False, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=30,
                    teacher_patch_temp=0.07, warmup_teacher_patch_temp=0.04, patch_center_momentum=0.9,
                    lambda_cls=1.0, lambda_patch=1.0, mask_probability=0.5, mask_ratio_min=0.1, mask_ratio_max=0.5,
                    clip_grad=3.0, momentum_base=0.996)

    def build_heads(self):
        if not is_vit(self.backbone):
            raise ValueError(f"{self.name} needs a ViT backbone (e.g. vit_tiny), got '{self.hparams.backbone}'")
        super().build_heads()
        self.register_buffer("patch_center", torch.zeros(1, self.cfg["num_prototypes"]))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.feat_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def encoder(self) -> MaskedViT:
        """The backbone's own timm ViT with this method's mask token (no parameters of its own)."""
        enc = MaskedViT(self.backbone.model, use_mask_token=False)
        enc.mask_token = self.mask_token
        return enc

    def teacher_patch_temp_now(self) -> float:
        c = self.cfg
        return teacher_temperature(self.phase_epoch(), c["warmup_teacher_patch_temp"], c["teacher_patch_temp"],
                                   c["warmup_teacher_temp_epochs"])

    def regularizer(self, global_cls: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms on the student's [CLS] features of the global crops (DINOv2 adds KoLeo)."""
        return {}

    def step(self, batch):
        c, vit = self.cfg, self.backbone.model
        b = batch.size
        images = self._prepare(torch.cat(batch.global_views))
        enc = self.encoder
        # one draw per global crop: under DDP each process then masks its rows as one process masks the global batch
        mask = torch.cat([sample_masks(b, enc.num_patches, c["mask_probability"], c["mask_ratio_min"],
                                       c["mask_ratio_max"], device=images.device) for _ in batch.global_views])
        tokens = enc.encode_with_mask_token(images, mask)
        cls = [vit.forward_head(tokens, pre_logits=True)]
        by_size: dict[int, list[torch.Tensor]] = {}
        for v in batch.local_views:
            by_size.setdefault(v.shape[-1], []).append(v)
        cls += [vit.forward_head(vit_tokens(vit, self._prepare(torch.cat(vs))), pre_logits=True)
                for vs in by_size.values()]
        student_cls = list(self.head(torch.cat(cls)).split(b))  # global crops first, then local ones
        p = enc.num_prefix_tokens
        student_patch = self.head(tokens[:, p:][mask])  # [N masked, K]
        with torch.no_grad():
            t_tokens = self.target_backbone.model.forward_features(images)
            teacher_cls = list(self.target_head(self.target_backbone.model.forward_head(t_tokens, pre_logits=True))
                               .split(b))
            patches = t_tokens[:, p:]  # every token through the head, for the center: [G * B, L, K]
            teacher_patch = self.target_head(patches.flatten(0, 1)).unflatten(0, patches.shape[:2])
        temp, patch_temp = self.teacher_temp_now(), self.teacher_patch_temp_now()
        loss_cls = dino_loss(student_cls, teacher_cls, self.center, c["student_temp"], temp)
        loss_patch = ibot_patch_loss(teacher_patch[mask], student_patch, mask, self.patch_center, c["student_temp"],
                                     patch_temp)
        extra = self.regularizer(list(cls[0].split(b)))
        loss = c["lambda_cls"] * loss_cls + c["lambda_patch"] * loss_patch + sum(extra.values())
        self.center.copy_(update_center(self.center, teacher_cls, c["center_momentum"]))
        self.patch_center.copy_(update_center(self.patch_center, [teacher_patch.flatten(0, 1)],
                                              c["patch_center_momentum"]))
        log = {"teacher_temp": temp, "teacher_patch_temp": patch_temp, "loss_cls": loss_cls.detach(),
               "loss_patch": loss_patch.detach(), "mask_ratio": mask.float().mean()}
        log.update({k: v.detach() for k, v in extra.items()})
        return {"loss": loss, "feats": cls[0][:b].detach(), "log": log}
