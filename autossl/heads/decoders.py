"""Reconstruction decoders for masked image modelling (pure modules; the methods wire them up).

* `FCMAEDecoder`: ConvNeXt-V2's FCMAE decoder (Woo et al. 2023, github.com/facebookresearch/ConvNeXt-V2,
  `models/fcmae.py`): 1x1 projection, a learned mask token at masked positions, ConvNeXt-V2 blocks, and a
  1x1 conv predicting each patch's pixels.
* `MAEDecoder`: MAE's lightweight transformer decoder (He et al. 2022, github.com/facebookresearch/mae,
  `models_mae.py`): linear embedding, mask tokens scattered into the masked positions, fixed 2-D sin-cos
  positional embeddings, transformer blocks, LayerNorm and a linear pixel predictor.
* `SimMIMDecoder`: SimMIM's one-layer prediction head (Xie et al. 2022, github.com/microsoft/SimMIM,
  `models/simmim.py`): 1x1 conv to stride**2 * C channels and a PixelShuffle back to image resolution.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.models.convnext import ConvNeXtBlock
from timm.models.vision_transformer import Block


def sincos_pos_embed_2d(grid_h: int, grid_w: int, dim: int, cls_token: Union[bool, int] = False) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos positional embedding (`util/pos_embed.py`): [prefix + grid_h * grid_w, dim].

    As in MAE, half the channels encode the column index and half the row index (MAE builds the grid
    with `np.meshgrid(grid_w, grid_h)` and embeds `grid[0]`, the column, first), each half being
    [sin(pos * omega), cos(pos * omega)] with omega = 1 / 10000 ** (k / (dim / 4)). Positions are in
    row-major order, matching the patch order. `cls_token` (True or a count) prepends zero rows for the
    prefix tokens. Computed in float64 as MAE does with numpy, returned as float32.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    n_prefix = int(cls_token)
    rows = torch.arange(grid_h, dtype=torch.float64)
    cols = torch.arange(grid_w, dtype=torch.float64)
    row_pos, col_pos = torch.meshgrid(rows, cols, indexing="ij")  # [gh, gw] each, row-major when flattened

    def embed_1d(pos: torch.Tensor, d: int) -> torch.Tensor:
        omega = torch.arange(d // 2, dtype=torch.float64) / (d / 2.0)
        omega = 1.0 / 10000 ** omega
        out = pos.reshape(-1)[:, None] * omega[None, :]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    emb = torch.cat([embed_1d(col_pos, dim // 2), embed_1d(row_pos, dim // 2)], dim=1)
    if n_prefix:
        emb = torch.cat([torch.zeros(n_prefix, dim, dtype=torch.float64), emb], dim=0)
    return emb.float()


class FCMAEDecoder(nn.Module):
    """FCMAE decoder: `forward(feat_map [B, C, h, w], mask [B, h, w] bool) -> [B, patch_size**2 * out_chans, h, w]`.

    As in ConvNeXt-V2's `FCMAE.forward_decoder`: proj (1x1 conv) -> x * (1 - m) + mask_token * m ->
    `depth` ConvNeXt-V2 blocks (GRN, no layer scale; timm's `ConvNeXtBlock(use_grn=True, ls_init_value=None)`)
    -> 1x1 conv. Channel k of the output at cell (i, j) predicts entry k of that patch in `patchify`'s
    (p, q, c) order (see `autossl.losses.reconstruction.pred_map_to_patches`).
    """

    def __init__(self, in_dim: int, patch_size: int, out_chans: int = 3, decoder_dim: int = 512, depth: int = 1,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.init_std = init_std  # None: the reference's std 1.0 for every conv
        self.patch_size = int(patch_size)
        self.out_chans = int(out_chans)
        self.proj = nn.Conv2d(in_dim, decoder_dim, kernel_size=1)
        self.mask_token = nn.Parameter(torch.zeros(1, decoder_dim, 1, 1))
        self.decoder = nn.Sequential(*[ConvNeXtBlock(decoder_dim, use_grn=True, ls_init_value=None)
                                       for _ in range(depth)])
        self.pred = nn.Conv2d(decoder_dim, self.patch_size ** 2 * self.out_chans, kernel_size=1)
        self.apply(self._init_weights)
        nn.init.normal_(self.mask_token, std=0.02)  # FCMAE._init_weights

    def _init_weights(self, m: nn.Module) -> None:
        # Copied from FCMAE._init_weights: every Conv2d (proj, pred and the blocks' depthwise convs) gets
        # trunc_normal_ with its default std=1 (a=-2, b=2) and zero bias; LayerNorm 1/0; Linear layers keep
        # PyTorch's default init (FCMAE has no nn.Linear branch). At std 1 the first norm-pix loss is ~17 (MAE's
        # ~1): `init_std` (e.g. 0.02) starts near 1, for short runs (docs/masked_modelling.md).
        if isinstance(m, nn.Conv2d):
            if self.init_std is None:
                nn.init.trunc_normal_(m.weight)
            else:
                nn.init.trunc_normal_(m.weight, std=self.init_std, a=-2 * self.init_std, b=2 * self.init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, feat_map: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.proj(feat_map)
        B, _, h, w = x.shape
        if tuple(mask.shape[-2:]) != (h, w):
            raise ValueError(f"mask grid {tuple(mask.shape[-2:])} does not match the feature map {h}x{w}")
        m = mask.reshape(B, 1, h, w).to(x.dtype)
        x = x * (1.0 - m) + self.mask_token.to(x.dtype) * m
        x = self.decoder(x)
        return self.pred(x)


class MAEDecoder(nn.Module):
    """MAE decoder: `forward(tokens [B, prefix + n_keep, in_dim], idx_keep [B, n_keep]) -> [B, L, p**2 * C]`.

    The encoder's kept tokens are embedded, scattered back to their patch positions in a full sequence of
    mask tokens (MAE's `ids_restore` gather, written as a scatter), the prefix tokens are put in front,
    fixed sin-cos positions are added, and the blocks/norm/linear predict every patch (masked and visible;
    the loss picks the masked ones). The prefix outputs are dropped.
    """

    def __init__(self, num_patches: int, patch_size: int, in_dim: int, decoder_dim: int = 512, depth: int = 8,
                 num_heads: int = 16, mlp_ratio: float = 4, out_chans: int = 3, num_prefix_tokens: int = 1,
                 grid: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if grid is None:
            side = int(round(num_patches ** 0.5))
            if side * side != num_patches:
                raise ValueError(f"num_patches={num_patches} is not a square; pass grid=(h, w)")
            grid = (side, side)
        grid = (int(grid[0]), int(grid[1]))
        if grid[0] * grid[1] != num_patches:
            raise ValueError(f"grid {grid} does not hold num_patches={num_patches}")
        self.num_patches = int(num_patches)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.grid = grid
        self.decoder_embed = nn.Linear(in_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(grid[0], grid[1], decoder_dim,
                                                              self.num_prefix_tokens).unsqueeze(0), persistent=False)
        self.blocks = nn.Sequential(*[Block(decoder_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(decoder_dim)
        self.pred = nn.Linear(decoder_dim, patch_size ** 2 * out_chans)
        self.apply(self._init_weights)
        nn.init.normal_(self.mask_token, std=0.02)  # MAE initialize_weights

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # MAE: xavier_uniform Linear weights (as JAX ViT), zero bias, LayerNorm 1/0
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, idx_keep: torch.Tensor, num_patches: Optional[int] = None) -> torch.Tensor:
        L = self.num_patches if num_patches is None else int(num_patches)
        if L != self.num_patches:
            raise ValueError(f"this decoder's positional embedding covers {self.num_patches} patches, got {L}")
        p = self.num_prefix_tokens
        x = self.decoder_embed(tokens)
        B, _, D = x.shape
        idx = idx_keep.to(device=x.device, dtype=torch.long)
        if x.shape[1] != p + idx.shape[1]:
            raise ValueError(f"expected {p} prefix + {idx.shape[1]} kept tokens, got {x.shape[1]} tokens")
        full = self.mask_token.to(x.dtype).expand(B, L, D).clone()
        full = full.scatter(1, idx.unsqueeze(-1).expand(-1, -1, D), x[:, p:])
        x = torch.cat([x[:, :p], full], dim=1) + self.pos_embed.to(x.dtype)
        x = self.blocks(x)
        x = self.norm(x)
        return self.pred(x)[:, p:]


def tokens_to_map(tokens: torch.Tensor, grid: Sequence[int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """[B, prefix + h * w, D] ViT tokens -> [B, D, h, w] map (prefix dropped; SimMIM's ViT reshape)."""
    h, w = int(grid[0]), int(grid[1])
    x = tokens[:, num_prefix_tokens:]
    if x.shape[1] != h * w:
        raise ValueError(f"{x.shape[1]} patch tokens do not fill a {h}x{w} grid")
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class SimMIMDecoder(nn.Module):
    """SimMIM head: `forward(feat_map [B, in_dim, H/stride, W/stride]) -> [B, out_chans, H, W]`
    (1x1 conv to stride**2 * out_chans, then PixelShuffle(stride))."""

    def __init__(self, in_dim: int, stride: int, out_chans: int = 3) -> None:
        super().__init__()
        self.stride = int(stride)
        self.decoder = nn.Sequential(nn.Conv2d(in_dim, self.stride ** 2 * out_chans, kernel_size=1),
                                     nn.PixelShuffle(self.stride))

    def forward(self, feat_map: torch.Tensor) -> torch.Tensor:
        return self.decoder(feat_map)


__all__ = ["FCMAEDecoder", "MAEDecoder", "SimMIMDecoder", "sincos_pos_embed_2d", "tokens_to_map"]
