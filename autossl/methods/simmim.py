"""SimMIM (Xie et al., 2022): masked patches are replaced by a learned mask token at the input of a
ViT or Swin encoder, which sees every position; a linear (1x1 conv + pixel shuffle) decoder predicts
the pixels; L1 on the masked pixels. Masks are drawn on a coarser grid (`mask_patch_size`, SimMIM's 32
px at 192 px; 8 px by default at 64 px and below) and applied at the encoder's patch grid."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones.masked_vit import MaskedSwin, MaskedViT
from ..backbones.masking import random_token_mask
from ..core.registry import METHODS
from ..heads.decoders import SimMIMDecoder, tokens_to_map
from ..losses import masked_l1_loss
from .base import SSLMethod


@METHODS.register("simmim")
class SimMIM(SSLMethod):
    name = "simmim"
    min_views = 1
    defaults = dict(optimizer="adamw", lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999), mask_ratio=0.6,
                    mask_patch_size=None)

    def build_heads(self):
        model = self.backbone.model
        self.is_swin = hasattr(model, "layers") and not hasattr(model, "blocks")
        if not (self.is_swin or hasattr(model, "blocks")) or not hasattr(model, "patch_embed"):
            raise ValueError(f"simmim needs a ViT or Swin backbone (e.g. vit_tiny, swin_tiny), got "
                             f"'{self.hparams.backbone}'")
        if self.is_swin:
            model.head.requires_grad_(False)  # pooling head outside forward_features: unused here
        enc = self.encoder
        self.mask_token = nn.Parameter(torch.zeros_like(enc.mask_token))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        stride = enc.stride if self.is_swin else enc.patch_size
        width = enc.num_features if self.is_swin else enc.embed_dim
        self.decoder = SimMIMDecoder(width, stride, self.hparams.in_chans)
        size = self.hparams.image_size
        self.mask_patch = self.cfg["mask_patch_size"] or (8 if size <= 64 else 32)
        if self.mask_patch % enc.patch_size or size % self.mask_patch:
            raise ValueError(f"mask_patch_size {self.mask_patch} must be a multiple of the encoder's patch size "
                             f"{enc.patch_size} and divide the image size {size}")

    @property
    def encoder(self) -> MaskedViT | MaskedSwin:
        """The backbone's own timm model with this method's mask token (no parameters of its own)."""
        enc = MaskedSwin(self.backbone.model) if self.is_swin else MaskedViT(self.backbone.model)
        if hasattr(self, "mask_token"):
            enc.mask_token = self.mask_token
        return enc

    def _forward_masked(self, x: torch.Tensor):
        enc = self.encoder
        coarse = (x.shape[-2] // self.mask_patch, x.shape[-1] // self.mask_patch)
        _, _, mask = random_token_mask(x.shape[0], coarse[0] * coarse[1], self.cfg["mask_ratio"], device=x.device)
        mask = mask.view(-1, *coarse)
        patch_mask = F.interpolate(mask[:, None].float(), size=enc.grid, mode="nearest")[:, 0].bool()
        if self.is_swin:
            feat = enc.encode_with_mask_token(x, patch_mask)
        else:
            tokens = enc.encode_with_mask_token(x, patch_mask.flatten(1))
            feat = tokens_to_map(tokens, enc.grid, enc.num_prefix_tokens)
        pixel_mask = F.interpolate(mask[:, None].float(), size=x.shape[-2:], mode="nearest")
        return feat, self.decoder(feat), pixel_mask

    def step(self, batch):
        x = batch.views[0]
        feat, pred, pixel_mask = self._forward_masked(x)
        loss = masked_l1_loss(pred.float(), x.float(), pixel_mask)
        return {"loss": loss, "feats": feat.detach().float().mean(dim=(2, 3))}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'masked': the input with masked pixels blanked, 'reconstruction': visible pixels + predictions}."""
        _, pred, m = self._forward_masked(images)
        return {"masked": images * (1 - m), "reconstruction": torch.where(m.bool(), pred.to(images.dtype), images)}
