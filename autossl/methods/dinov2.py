"""DINOv2-style pre-training (Oquab et al., 2023, "DINOv2: Learning Robust Visual Features without Supervision",
arXiv:2304.07193; reference code github.com/facebookresearch/dinov2, `dinov2/train/ssl_meta_arch.py`): iBOT
(methods/ibot.py: DINO's [CLS] loss + masked-patch self-distillation, one shared head) plus the KoLeo
regulariser (losses/koleo.py) on the student's [CLS] backbone features, once per global crop and summed
("we don't apply koleo loss between cls tokens of a same image"), weighted by `koleo_weight`. ViT only.

Defaults: `dinov2/configs/ssl_default_config.yaml` (65536 prototypes, 2048 hidden, 256 bottleneck, KoLeo 0.1,
masks with probability 0.5 at ratios U(0.1, 0.5), separate_head false, a trainable last-layer norm
(`dinov2/layers/dino_head.py` does not freeze weight_g), EMA 0.992 -> 1, teacher temperature
0.04 -> 0.07 over 30 epochs, AdamW wd 0.04, clip 3.0, last layer frozen 1 epoch, layer-wise LR decay 0.9).
Its lr, 0.004 for a batch of 1024 under a square-root rule, is 0.002 at 256, given here per 256 images for
this library's linear rule (equal at batch 256). Not reproduced: Sinkhorn-Knopp teacher centering (the config's
default is plain centering, used here; the patch center is iBOT's, over all teacher patch tokens, where DINOv2
averages the masked ones), the weight-decay ramp to 0.4, the patch-embedding LR x 0.2, the
separate normalisation of local- and global-crop DINO terms, stochastic depth 0.3 / LayerScale (backbone
options: pass them in backbone_kwargs).
"""
from __future__ import annotations

import torch

from ..core.registry import METHODS
from ..losses.koleo import koleo_loss
from .ibot import IBOT


@METHODS.register("dinov2")
class DINOv2(IBOT):
    name = "dinov2"
    recipe_epochs = 100  # ssl_default_config's optim.epochs: a time budget maps its phases onto it
    defaults = dict(IBOT.defaults, lr=0.002, num_prototypes=65536, koleo_weight=0.1, momentum_base=0.992,
                    layer_decay=0.9)

    def regularizer(self, global_cls: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        w = self.cfg["koleo_weight"]
        if not w:
            return {}
        return {"loss_koleo": w * sum(koleo_loss(x) for x in global_cls)}
