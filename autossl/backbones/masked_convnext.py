"""A dense FCMAE encoder on timm's ConvNeXt-V2 (Woo et al. 2023, "ConvNeXt V2: Co-designing and Scaling
ConvNets with Masked Autoencoders", github.com/facebookresearch/ConvNeXt-V2).

FCMAE treats the visible part of a masked image as a sparse set of pixels and runs the encoder with
sparse (submanifold) convolutions (MinkowskiEngine in the official PyTorch code), so the encoder never
sees the masked regions and its visible outputs do not depend on them. The paper notes the sparse
layers can equivalently be run densely with a binary mask applied before and after the layers, which is
what the authors' JAX implementation does. This module does the same on top of an unmodified timm
`ConvNeXt`, so no MinkowskiEngine is needed and the trained weights are plain timm weights:

* masked pixels are zeroed before the stem (only matters for overlapping stems, see
  `create_masked_convnextv2`), and masked positions are zeroed after the stem and after every
  downsampling layer (their LayerNorm bias and conv bias would otherwise make them non-zero);
* inside every block the input is masked before the depthwise convolution, so a visible position sums
  only visible neighbours (= a submanifold depthwise conv; masked neighbours contribute exactly zero);
* LayerNorm, the MLP and layer scale are per position, so they need no masking;
* GRN's spatial L2 norm is taken over visible positions only (its input is masked), per image as in the
  dense GRN. (The official `MinkowskiGRN` pools that norm over all active sites of the whole batch;
  the per-image version is the one the fine-tuned dense network computes.)
* the residual stream is re-zeroed at masked positions at the end of every block.

Each mask cell covers a whole number of positions at every resolution and the 2x2/stride-2 downsampling
convs never straddle cells, so with these rules the output at visible cells is exactly the sparse network's.
"""
from __future__ import annotations

from typing import Optional

import timm
import torch
import torch.nn as nn

from .masking import upsample_mask


def _conv_stride(module: nn.Module) -> int:
    """Product of the strides of the Conv2d layers in a stem / downsample (they run in sequence)."""
    stride = 1
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            stride *= int(m.stride[0])
    return stride


class MaskedConvNeXtV2(nn.Module):
    """A timm ConvNeXt(-V2) run with FCMAE's sparse semantics on a [B, h, w] mask (True = masked).

    `self.model` is the timm model itself, so `self.model.state_dict()` has exactly timm's keys.
    `stride` is the total stride of the final feature map; the mask grid equals that map's grid.
    timm's classifier head (`model.head`, its norm included) is outside `forward_features` and gets no
    gradient during pretraining: freeze it (`requires_grad_(False)`) or let DDP find unused parameters.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name in ("stem", "stages"):
            if not hasattr(model, name):
                raise TypeError(f"MaskedConvNeXtV2 needs a timm ConvNeXt (missing `{name}`), got {type(model).__name__}")
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d) and max(mod.dilation) > 1:
                raise ValueError("MaskedConvNeXtV2 does not support dilated ConvNeXts (output_stride < 32)")
        self.model = model
        stride = _conv_stride(model.stem)
        for stage in model.stages:
            stride *= _conv_stride(stage.downsample)
        self.stride = stride
        self.num_features = int(model.num_features)

    def _check(self, x: torch.Tensor) -> None:
        H, W = x.shape[-2:]
        if H % self.stride or W % self.stride:
            raise ValueError(f"input size {H}x{W} is not divisible by the encoder stride {self.stride}")

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, C, H, W] images (+ optional [B, H/stride, W/stride] bool mask, True = masked; a flat
        [B, (H/stride) * (W/stride)] row-major mask is accepted too) -> [B, C', H/stride, W/stride].

        Without a mask this is exactly `self.model.forward_features(x)`. With one, positions inside
        masked cells are exactly zero and visible positions match the sparse encoder.
        """
        self._check(x)
        if mask is None:
            return self.model.forward_features(x)
        H, W = x.shape[-2:]
        grid = (H // self.stride, W // self.stride)
        if mask.dim() == 2 and mask.shape[1] == grid[0] * grid[1]:  # a flat [B, L] mask from random_token_mask
            mask = mask.reshape(mask.shape[0], *grid)
        if mask.dim() != 3 or tuple(mask.shape) != (x.shape[0], *grid):
            raise ValueError(f"mask must have shape {(x.shape[0], *grid)} (batch, H/stride, W/stride), "
                             f"got {tuple(mask.shape)}")
        mask = mask.to(device=x.device, dtype=torch.bool)
        cache: dict = {}

        def visible(t: torch.Tensor) -> torch.Tensor:  # [B, 1, h, w] multiplier at t's resolution
            size = tuple(t.shape[-2:])
            if size not in cache:
                cache[size] = upsample_mask(mask, size).to(t.dtype)
            return cache[size]

        model = self.model
        x = x * visible(x)  # the stem sees no masked pixel, even if its kernel overlaps a neighbour cell
        x = model.stem(x)
        x = x * visible(x)
        for stage in model.stages:
            if not isinstance(stage.downsample, nn.Identity):
                x = stage.downsample(x)
                x = x * visible(x)
            m = visible(x)
            for block in stage.blocks:
                x = masked_block_forward(block, x, m)
        if not isinstance(model.norm_pre, nn.Identity):
            x = model.norm_pre(x) * visible(x)
        return x


def _masked_mlp(mlp: nn.Module, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """timm's `GlobalResponseNormMlp.forward` with GRN fed the masked activations (m in x's layout)."""
    if not hasattr(mlp, "grn"):
        return mlp(x)  # ConvNeXt-V1 Mlp: purely per position
    x = mlp.fc1(x)
    x = mlp.act(x)
    x = mlp.drop1(x)
    # GRN: x + bias + weight * x * N(x) with N from the spatial L2 norm; feeding x * m makes that norm
    # visible-only and leaves visible outputs exactly as GRN(x) would give them (masked ones are re-zeroed later).
    x = mlp.grn(x * m)
    x = mlp.fc2(x)
    x = mlp.drop2(x)
    return x


def masked_block_forward(block: nn.Module, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """timm `ConvNeXtBlock.forward` with FCMAE masking; `x` [B, C, h, w] NCHW, `m` [B, 1, h, w] 1 = visible.

    Mirrors timm's two layouts: `use_conv_mlp` (NCHW LayerNorm2d + 1x1 convs, e.g. convnextv2_atto) or
    channels-last (permute, LayerNorm + Linear). Drop path and layer scale (`gamma`) are applied as in timm.
    """
    shortcut = x
    x = block.conv_dw(x * m)
    if block.use_conv_mlp:
        x = block.norm(x)
        x = _masked_mlp(block.mlp, x, m)
    else:
        x = x.permute(0, 2, 3, 1)
        x = block.norm(x)
        x = _masked_mlp(block.mlp, x, m.permute(0, 2, 3, 1))
        x = x.permute(0, 3, 1, 2)
    if getattr(block, "gamma", None) is not None:
        x = x.mul(block.gamma.reshape(1, -1, 1, 1))
    x = block.drop_path(x) + block.shortcut(shortcut)
    return x * m


class _SameConv2d(nn.Conv2d):
    """A Conv2d with TensorFlow-style 'same' padding (extra pixel after), so an even stride-1 kernel keeps
    the size. A plain `nn.Conv2d` subclass: its parameters are `weight`/`bias`, as in the conv it replaces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        pad = (kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2
        return self._conv_forward(nn.functional.pad(x, pad), self.weight, self.bias)


def small_image_stem(model: nn.Module) -> None:
    """In place: make a timm ConvNeXt's patchify stem stride 1, keeping its kernel and weight shape (see
    `create_masked_convnextv2`). Apply it to a plain timm model too before loading weights pretrained with
    the small-image variant: the state dict loads either way, but only this stem computes the same thing."""
    old = model.stem[0]
    if not isinstance(old, nn.Conv2d) or old.stride[0] == 1:
        raise ValueError("the small-image variant needs ConvNeXt's 'patch' stem (a strided Conv2d first)")
    new = _SameConv2d(old.in_channels, old.out_channels, kernel_size=old.kernel_size, stride=1, padding=0,
                      bias=old.bias is not None)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    model.stem[0] = new


def create_masked_convnextv2(name: str = "convnextv2_atto", image_size: int = 32, small_image: Optional[bool] = None,
                             drop_path_rate: float = 0.0, in_chans: int = 3) -> MaskedConvNeXtV2:
    """`timm.create_model(name, num_classes=0, ...)` wrapped in `MaskedConvNeXtV2`.

    Small-image variant (default when `image_size <= 64`): ImageNet ConvNeXts have total stride 32
    (4x4/stride-4 patchify stem, then three 2x downsamplings), which leaves a 1x1 grid at 32 px and
    nothing to mask. We set the stem's stride to 1 and keep its 4x4 kernel, with 'same' padding
    (1 pixel before, 2 after), so the total stride becomes 32 / 4 = 8: a 4x4 mask grid at 32 px (8x8 at
    64 px). Keeping the kernel keeps `stem.0.weight` at timm's shape, so the state dict loads into a
    plain `timm.create_model(name, num_classes=0)` with strict=True (and timm weights load into this one);
    a 1x1 stem would have changed that shape. Since the stride-1 stem overlaps neighbouring cells, the
    encoder zeroes masked pixels before the stem (sparse-conv semantics: masked inputs are absent).
    The stage-0 map is then 32x32 at 32 px, the same compute as a 128 px image at stride 4.
    """
    if small_image is None:
        small_image = image_size <= 64
    model = timm.create_model(name, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate,
                              in_chans=in_chans)
    if small_image:
        small_image_stem(model)
    enc = MaskedConvNeXtV2(model)
    if image_size % enc.stride:
        raise ValueError(f"image_size {image_size} is not divisible by the encoder stride {enc.stride}")
    if image_size < enc.stride:
        raise ValueError(f"image_size {image_size} is smaller than the encoder stride {enc.stride}")
    return enc


__all__ = ["MaskedConvNeXtV2", "create_masked_convnextv2", "masked_block_forward", "small_image_stem"]
