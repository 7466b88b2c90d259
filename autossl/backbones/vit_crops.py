"""Tokens of a timm ViT for crops of another size than it was built for (multi-crop's local crops).

A ViT built for 32 px images has a positional embedding for its 8 x 8 patch grid; DINO, iBOT and MSN feed it
smaller local crops too, interpolating that embedding to the crop's grid (DINO's `interpolate_pos_encoding`,
bicubic). Here timm's own code does it: `VisionTransformer._pos_embed` with `dynamic_img_size` on resamples
`pos_embed` with `timm.layers.resample_abs_pos_embed`. The flag is switched on for that call only, so the model
and its state dict stay those of the fixed-size ViT that `MaskedViT` requires.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def vit_tokens(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[B, prefix + h * w, D] tokens (after the final norm) of a timm `VisionTransformer` for [B, C, H, W]
    images whose sides the patch size divides; at the model's own size this is `vit.forward_features`."""
    pe = vit.patch_embed
    if tuple(images.shape[-2:]) == tuple(pe.img_size):
        return vit.forward_features(images)
    ph, pw = pe.patch_size
    if images.shape[-2] % ph or images.shape[-1] % pw:
        raise ValueError(f"a {tuple(images.shape[-2:])} crop is not a whole number of {ph} x {pw} patches")
    x = pe.norm(pe.proj(images).permute(0, 2, 3, 1))  # NHWC, the layout timm's dynamic-size path expects
    dynamic = vit.dynamic_img_size
    vit.dynamic_img_size = True
    try:
        x = vit._pos_embed(x)
    finally:
        vit.dynamic_img_size = dynamic
    x = vit.norm_pre(vit.patch_drop(x))
    return vit.norm(vit.blocks(x))


def is_vit(backbone: nn.Module) -> bool:
    """A timm ViT (patch embedding, transformer blocks and a class/prefix token layout) under a `Backbone`."""
    model = getattr(backbone, "model", backbone)
    return all(hasattr(model, n) for n in ("patch_embed", "blocks", "_pos_embed", "forward_head"))


__all__ = ["vit_tokens", "is_vit"]
