"""MAE (He et al., 2022): a ViT encodes only the visible 25% of the patches; a light transformer
decoder fills in mask tokens and predicts the pixels of every patch; MSE on the masked patches, on
per-patch normalised pixels. The encoder's positional embedding is MAE's fixed 2-D sin-cos."""
from __future__ import annotations

import torch

from ..backbones.masked_vit import MaskedViT
from ..backbones.masking import random_token_mask
from ..core.registry import METHODS
from ..heads.decoders import MAEDecoder, sincos_pos_embed_2d
from ..losses import masked_mse_loss, patchify, reconstruction_patches, unpatchify
from .base import SSLMethod


@METHODS.register("mae")
class MAE(SSLMethod):
    name = "mae"
    min_views = 1
    defaults = dict(optimizer="adamw", lr=1.5e-4, weight_decay=0.05, betas=(0.9, 0.95), mask_ratio=0.75,
                    norm_pix_loss=True, decoder_dim=512, decoder_depth=8, decoder_heads=16)

    def build_heads(self):
        if not hasattr(self.backbone.model, "patch_embed") or not hasattr(self.backbone.model, "blocks"):
            raise ValueError(f"mae needs a ViT backbone (e.g. vit_tiny), got '{self.hparams.backbone}'")
        enc = self.encoder
        vit = self.backbone.model
        if vit.pos_embed is not None:  # fixed sin-cos, as MAE's encoder (models_mae.py)
            pos = sincos_pos_embed_2d(*enc.grid, enc.embed_dim, cls_token=0 if vit.no_embed_class else
                                      enc.num_prefix_tokens)
            vit.pos_embed.data.copy_(pos.reshape(vit.pos_embed.shape))
            vit.pos_embed.requires_grad_(False)
        c = self.cfg
        self.decoder = MAEDecoder(enc.num_patches, enc.patch_size, enc.embed_dim, c["decoder_dim"], c["decoder_depth"],
                                  c["decoder_heads"], out_chans=self.hparams.in_chans,
                                  num_prefix_tokens=enc.num_prefix_tokens, grid=enc.grid)

    @property
    def encoder(self) -> MaskedViT:
        """The backbone's own timm ViT seen through the visible-tokens-only forward (no parameters of its own)."""
        return MaskedViT(self.backbone.model, use_mask_token=False)

    def _forward_masked(self, x: torch.Tensor):
        enc = self.encoder
        idx_keep, _, mask = random_token_mask(x.shape[0], enc.num_patches, self.cfg["mask_ratio"], device=x.device)
        tokens = enc.encode(x, idx_keep)
        return tokens, self.decoder(tokens, idx_keep, enc.num_patches), mask, patchify(x, enc.patch_size)

    def step(self, batch):
        tokens, pred, mask, target = self._forward_masked(batch.views[0])
        loss = masked_mse_loss(pred.float(), target.float(), mask, self.cfg["norm_pix_loss"])
        with torch.no_grad():  # the monitors' features: timm's pooling of the visible tokens
            feats = self.backbone.model.forward_head(tokens.detach(), pre_logits=True)
        return {"loss": loss, "feats": feats}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'masked': the input with masked patches blanked, 'reconstruction': visible patches + predictions}."""
        _, pred, mask, target = self._forward_masked(images)
        enc = self.encoder
        shown = reconstruction_patches(pred.float(), target.float(), mask, self.cfg["norm_pix_loss"])
        blank = torch.where(mask[..., None], torch.zeros_like(target), target)
        return {"masked": unpatchify(blank, enc.patch_size, enc.grid, images.shape[1]),
                "reconstruction": unpatchify(shown, enc.patch_size, enc.grid, images.shape[1])}
