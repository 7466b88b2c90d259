"""FCMAE (Woo et al., 2023, ConvNeXt-V2): a fully convolutional masked autoencoder. 60% of the cells
of the encoder's output grid are masked; the ConvNeXt-V2 encoder runs with sparse semantics,
implemented densely (backbones/masked_convnext.py: masked positions stay exactly zero, no
MinkowskiEngine); a one-block ConvNeXt-V2 decoder predicts every cell's pixels; MSE on masked
cells, on per-patch normalised pixels. At 32 px the backbone's stride-1 stem gives an 8 px grid."""
from __future__ import annotations

import torch

from ..backbones.masked_convnext import MaskedConvNeXtV2
from ..backbones.masking import random_token_mask
from ..core.registry import METHODS
from ..heads.decoders import FCMAEDecoder
from ..losses import masked_mse_loss, patchify, pred_map_to_patches, reconstruction_patches, unpatchify
from .base import SSLMethod


@METHODS.register("fcmae")
class FCMAE(SSLMethod):
    name = "fcmae"
    min_views = 1
    defaults = dict(optimizer="adamw", lr=1.5e-4, weight_decay=0.05, betas=(0.9, 0.95), mask_ratio=0.6,
                    norm_pix_loss=True, decoder_dim=512, decoder_depth=1, decoder_init_std=None)

    def build_heads(self):
        if not isinstance(getattr(self.backbone.model, "stages", None), torch.nn.Sequential):
            raise ValueError(f"fcmae needs a ConvNeXt(-V2) backbone (e.g. convnextv2_atto), got "
                             f"'{self.hparams.backbone}'")
        # timm's head norm sits after forward_features and gets no gradient here: frozen, so DDP's
        # unused-parameter check passes; fine-tuning trains it.
        self.backbone.model.head.requires_grad_(False)
        enc = self.encoder
        # decoder_init_std None: the reference's conv init (std 1); 0.02 starts the loss near 1 (short runs)
        self.decoder = FCMAEDecoder(enc.num_features, enc.stride, self.hparams.in_chans, self.cfg["decoder_dim"],
                                    self.cfg["decoder_depth"], init_std=self.cfg["decoder_init_std"])
        # compile=True compiles the masked forward (a function attribute, so no second copy of the
        # backbone enters the state dict): its mask multiplies and GRN fuse, 1.4x per step on this CPU
        self._encode_masked = self.compiled(enc.forward)

    @property
    def encoder(self) -> MaskedConvNeXtV2:
        """The backbone's own timm model seen through the masked forward (no parameters of its own)."""
        return MaskedConvNeXtV2(self.backbone.model)

    def _forward_masked(self, x: torch.Tensor):
        enc = self.encoder
        grid = (x.shape[-2] // enc.stride, x.shape[-1] // enc.stride)
        _, _, mask = random_token_mask(x.shape[0], grid[0] * grid[1], self.cfg["mask_ratio"], device=x.device)
        feat = self._encode_masked(self._prepare(x), mask.view(-1, *grid))
        pred = pred_map_to_patches(self.decoder(feat, mask.view(-1, *grid)))
        return feat, pred, mask, patchify(x, enc.stride), grid

    def step(self, batch):
        feat, pred, mask, target, _ = self._forward_masked(batch.views[0])
        loss = masked_mse_loss(pred.float(), target.float(), mask, self.cfg["norm_pix_loss"])
        with torch.no_grad():  # the monitors' features: the masked encoder's map, pooled by timm's head
            feats = self.backbone.model.forward_head(feat.detach(), pre_logits=True)
        return {"loss": loss, "feats": feats}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'masked': the input with masked cells blanked, 'reconstruction': visible cells + predictions}."""
        _, pred, mask, target, grid = self._forward_masked(images)
        p = self.encoder.stride
        shown = reconstruction_patches(pred.float(), target.float(), mask, self.cfg["norm_pix_loss"])
        blank = torch.where(mask[..., None], torch.zeros_like(target), target)
        return {"masked": unpatchify(blank, p, grid, images.shape[1]),
                "reconstruction": unpatchify(shown, p, grid, images.shape[1])}
