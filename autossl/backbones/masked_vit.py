"""Transformer encoders for masked image modelling, wrapping unmodified timm models.

* MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", github.com/facebookresearch/mae):
  the encoder runs on the visible patches only. `MaskedViT.encode(images, idx_keep)` embeds all patches,
  adds positional embeddings, then gathers the kept patch tokens (plus the prefix tokens) before the first
  transformer block, so no block ever sees a masked patch (cf. lightly's `MaskedVisionTransformer`).
* SimMIM (Xie et al. 2022, "SimMIM: A Simple Framework for Masked Image Modeling",
  github.com/microsoft/SimMIM): every patch goes through the encoder, masked ones replaced by a learned
  mask token right after the patch embedding (before positional embeddings), for ViT
  (`encode_with_mask_token`) and Swin (`MaskedSwin`).

The timm model is kept as `self.model`, so its state dict (keys and shapes) is timm's own and the
trained encoder is an ordinary timm model afterwards. The learned `mask_token` lives beside it.
"""
from __future__ import annotations

from typing import Optional

import timm
import torch
import torch.nn as nn

_trunc_normal = nn.init.trunc_normal_


def _mask_token(dim: int) -> nn.Parameter:
    """SimMIM's mask token: zeros, then trunc_normal(std=.02) (SimMIM `VisionTransformerForSimMIM`)."""
    token = nn.Parameter(torch.zeros(1, 1, dim))
    _trunc_normal(token, mean=0.0, std=0.02)
    return token


class MaskedViT(nn.Module):
    """A timm `VisionTransformer` that can encode only the visible patches (MAE) or replace masked
    patches by a mask token (SimMIM).

    Attributes: `patch_size` (int), `num_patches` (L), `embed_dim` (D), `grid` ((h, w) patch grid),
    `num_prefix_tokens` (class + register tokens), `mask_token` ([1, 1, D], SimMIM only; None when
    built with `use_mask_token=False`, as MAE should).
    """

    def __init__(self, vit: nn.Module, use_mask_token: bool = True) -> None:
        super().__init__()
        for name in ("patch_embed", "_pos_embed", "blocks", "norm"):
            if not hasattr(vit, name):
                raise TypeError(f"MaskedViT needs a timm VisionTransformer (missing `{name}`), got {type(vit).__name__}")
        if getattr(vit, "dynamic_img_size", False):
            raise ValueError("MaskedViT needs a fixed image size (create the ViT with dynamic_img_size=False)")
        self.model = vit
        pe = vit.patch_embed
        self.patch_size = int(pe.patch_size[0])
        self.grid = (int(pe.grid_size[0]), int(pe.grid_size[1]))
        self.num_patches = self.grid[0] * self.grid[1]
        self.embed_dim = int(vit.embed_dim)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        # MAE never uses a mask token in its encoder: `use_mask_token=False` leaves none, so that no
        # parameter goes without a gradient (DDP's unused-parameter check).
        self.mask_token = _mask_token(self.embed_dim) if use_mask_token else None

    def _patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        x = self.model.patch_embed(images)
        if x.dim() == 4:  # NHWC output formats
            x = x.flatten(1, 2)
        return x

    def _transformer(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.norm_pre(x)
        x = m.blocks(x)
        return m.norm(x)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens with prefix tokens and positional embeddings (timm's `_pos_embed`): [B, prefix + L, D]."""
        return self.model._pos_embed(self._patch_tokens(images))

    def encode(self, images: torch.Tensor, idx_keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """MAE encoder: [B, C, H, W] -> [B, prefix + n_keep, D] tokens of the kept patches.

        `idx_keep` [B, n_keep] indexes patches (0..L-1, row-major); the prefix tokens are always kept
        and come first. Positional embeddings are added before the gather, so each kept token carries
        its own position. With `idx_keep=None` this is exactly `self.model.forward_features(images)`.
        """
        if idx_keep is None:
            return self.model.forward_features(images)
        x = self.embed(images)
        p = self.num_prefix_tokens
        idx = idx_keep.to(device=x.device, dtype=torch.long)
        if idx.dim() != 2 or idx.shape[0] != x.shape[0]:
            raise ValueError(f"idx_keep must be [batch, n_keep], got {tuple(idx_keep.shape)}")
        kept = torch.gather(x[:, p:], 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :p], kept], dim=1)
        return self._transformer(x)

    def encode_with_mask_token(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """SimMIM encoder: [B, C, H, W] and [B, L] bool (True = masked) -> [B, prefix + L, D].

        Masked patch embeddings become `mask_token` (x * (1 - w) + mask_token * w, as in SimMIM's
        `VisionTransformerForSimMIM`) before positional embeddings are added; all tokens then pass
        through the blocks and the final norm.
        """
        if self.mask_token is None:
            raise RuntimeError("this MaskedViT was built with use_mask_token=False (MAE); SimMIM needs the token")
        x = self._patch_tokens(images)
        B, L, _ = x.shape
        if tuple(mask.shape[:1]) != (B,) or mask[0].numel() != L:
            raise ValueError(f"mask must be [batch, {L}] (or [batch, {self.grid[0]}, {self.grid[1]}]), "
                             f"got {tuple(mask.shape)}")
        w = mask.reshape(B, L, 1).to(x.dtype)
        x = x * (1.0 - w) + self.mask_token.to(x.dtype).expand(B, L, -1) * w
        x = self.model._pos_embed(x)
        return self._transformer(x)

    def forward(self, images: torch.Tensor, idx_keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.encode(images, idx_keep)


class MaskedSwin(nn.Module):
    """A timm `SwinTransformer` with SimMIM's mask token after the patch embedding.

    Attributes: `patch_size` (patch-embed size; the mask grid is the patch-embed grid), `stride`
    (total stride of the final map = patch_size * 2**(stages - 1)), `num_features`, `grid` (patch grid).
    """

    def __init__(self, swin: nn.Module) -> None:
        super().__init__()
        for name in ("patch_embed", "layers", "norm"):
            if not hasattr(swin, name):
                raise TypeError(f"MaskedSwin needs a timm SwinTransformer (missing `{name}`), got {type(swin).__name__}")
        self.model = swin
        pe = swin.patch_embed
        self.patch_size = int(pe.patch_size[0])
        self.grid = (int(pe.grid_size[0]), int(pe.grid_size[1]))
        self.stride = self.patch_size * 2 ** (len(swin.layers) - 1)
        self.num_features = int(swin.num_features)
        embed_dim = int(getattr(swin, "embed_dim", None) or swin.layers[0].dim)
        self.mask_token = _mask_token(embed_dim)

    def encode_with_mask_token(self, images: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, C, H, W] and [B, h, w] bool (True = masked, h x w = patch-embed grid) -> [B, C', H', W'].

        As SimMIM's `SwinTransformerForSimMIM`: mask token after patch_embed, then the stages and the final
        norm; the NHWC map is returned NCHW. `mask=None` gives `forward_features` permuted to NCHW.
        """
        x = self.model.patch_embed(images)  # timm Swin works in NHWC
        B, h, w, _ = x.shape
        if mask is not None:
            if tuple(mask.shape) != (B, h, w):
                raise ValueError(f"mask must be [batch, {h}, {w}] (the patch grid), got {tuple(mask.shape)}")
            wgt = mask.reshape(B, h, w, 1).to(x.dtype)
            x = x * (1.0 - wgt) + self.mask_token.to(x.dtype).view(1, 1, 1, -1) * wgt
        if getattr(self.model, "absolute_pos_embed", None) is not None:  # SimMIM's `ape` option; timm has none
            x = x + self.model.absolute_pos_embed
        x = self.model.layers(x)
        x = self.model.norm(x)
        return x.permute(0, 3, 1, 2).contiguous()

    def forward(self, images: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.encode_with_mask_token(images, mask)


def create_masked_vit(name: str = "vit_tiny_patch16_224", image_size: int = 32, patch_size: int = 4,
                      use_mask_token: bool = True, **kw) -> MaskedViT:
    """`timm.create_model(name, img_size=image_size, patch_size=patch_size, num_classes=0, **kw)` wrapped
    in `MaskedViT` (4 px patches on 32 px images give an 8x8 grid, 64 tokens). `kw` goes to timm
    (e.g. `depth=2`, `drop_path_rate`). MAE should pass `use_mask_token=False`."""
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
    kw.setdefault("num_classes", 0)
    vit = timm.create_model(name, pretrained=False, img_size=image_size, patch_size=patch_size, **kw)
    return MaskedViT(vit, use_mask_token=use_mask_token)


def create_masked_swin(name: str = "swin_tiny_patch4_window7_224", image_size: int = 32,
                       patch_size: Optional[int] = None, window_size: Optional[int] = None, **kw) -> MaskedSwin:
    """`timm.create_model(name, img_size=image_size, ...)` wrapped in `MaskedSwin`.

    For small images (<= 64 px) the defaults are patch_size 2 and window_size 4: 32 px gives a 16x16
    patch grid and stages of 16, 8, 4, 2 (timm shrinks a window to the map and drops the shift when the
    map is no larger than the window), total stride 16. Larger images keep the model's own patch and
    window sizes. `kw` goes to timm (e.g. `depths=(2, 2)`, `num_heads=(3, 6)`, `embed_dim=48`).
    """
    small = image_size <= 64
    patch_size = patch_size if patch_size is not None else (2 if small else None)
    window_size = window_size if window_size is not None else (4 if small else None)
    if patch_size is not None:
        kw["patch_size"] = patch_size
    if window_size is not None:
        kw["window_size"] = window_size
    kw.setdefault("num_classes", 0)
    swin = timm.create_model(name, pretrained=False, img_size=image_size, **kw)
    enc = MaskedSwin(swin)
    if image_size % enc.stride:
        raise ValueError(f"image_size {image_size} is not divisible by the Swin stride {enc.stride}")
    return enc


__all__ = ["MaskedViT", "MaskedSwin", "create_masked_vit", "create_masked_swin"]
