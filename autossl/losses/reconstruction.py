"""Pixel-reconstruction losses for masked image modelling (pure functions on tensors).

* `patchify` / `unpatchify` / `masked_mse_loss` copy MAE (He et al. 2022, github.com/facebookresearch/mae,
  `models_mae.py`: `patchify`, `unpatchify`, `forward_loss`), which ConvNeXt-V2's FCMAE reuses unchanged
  (github.com/facebookresearch/ConvNeXt-V2, `models/fcmae.py`).
* `pred_map_to_patches` is FCMAE's reshape of its conv decoder's [B, p*p*C, h, w] output to [B, L, p*p*C]
  (`pred.reshape(n, c, -1)` then `einsum('ncl->nlc')`): channel k of the map is entry k of the patch in
  `patchify`'s order, and cells are taken row-major like `patchify`'s patches.
* `masked_l1_loss` copies SimMIM (Xie et al. 2022, github.com/microsoft/SimMIM, `models/simmim.py`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, L, patch**2 * C]: patches in row-major order, each flattened as (p, q, c)
    (MAE's `einsum('nchpwq->nhwpqc')`). H and W must be multiples of `patch` (non-square images allowed)."""
    B, C, H, W = images.shape
    if H % patch or W % patch:
        raise ValueError(f"image size {H}x{W} is not divisible by the patch size {patch}")
    h, w = H // patch, W // patch
    x = images.reshape(B, C, h, patch, w, patch)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(B, h * w, patch * patch * C)


def unpatchify(patches: torch.Tensor, patch: int, grid: Sequence[int], chans: int = 3) -> torch.Tensor:
    """Inverse of `patchify`: [B, h * w, patch**2 * chans] -> [B, chans, h * patch, w * patch]."""
    h, w = int(grid[0]), int(grid[1])
    B, L, D = patches.shape
    if L != h * w or D != patch * patch * chans:
        raise ValueError(f"patches of shape {tuple(patches.shape)} do not match grid {h}x{w}, "
                         f"patch {patch} and {chans} channels")
    x = patches.reshape(B, h, w, patch, patch, chans)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(B, chans, h * patch, w * patch)


def pred_map_to_patches(pred: torch.Tensor) -> torch.Tensor:
    """FCMAE decoder output [B, p*p*C, h, w] -> [B, h * w, p*p*C] in `patchify`'s patch order."""
    B, K = pred.shape[:2]
    return pred.reshape(B, K, -1).transpose(1, 2)


def normalize_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's `norm_pix_loss` target: each patch minus its mean, over sqrt(var + eps). The variance is
    `Tensor.var(dim=-1)`, i.e. unbiased (divides by D - 1), exactly as MAE's `forward_loss`."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def masked_mse_loss(pred: torch.Tensor, target_patches: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True,
                    eps: float = 1e-6) -> torch.Tensor:
    """MAE / FCMAE loss: mean over masked patches of the per-patch MSE.

    `pred`, `target_patches`: [B, L, D]; `mask`: [B, L] (True / 1 = masked). With `norm_pix` the target
    is normalised per patch (`normalize_patches`). Visible patches get weight zero, so `pred` there has no
    effect on the value or the gradient. As MAE: `(loss * mask).sum() / mask.sum()`; the denominator is
    clamped to 1 so an all-visible mask gives 0 rather than NaN.
    """
    if pred.shape != target_patches.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target_patches.shape)} differ in shape")
    target = normalize_patches(target_patches, eps) if norm_pix else target_patches
    loss = ((pred - target) ** 2).mean(dim=-1)
    m = mask.to(loss.dtype).reshape(loss.shape)
    # where() rather than a product, so a non-finite prediction at a visible patch cannot leak in as NaN
    return torch.where(m > 0, loss * m, torch.zeros_like(loss)).sum() / m.sum().clamp_min(1.0)


def masked_l1_loss(pred_images: torch.Tensor, images: torch.Tensor, mask_pixels: torch.Tensor) -> torch.Tensor:
    """SimMIM loss: L1 over masked pixels, `(|x - x_rec| * m).sum() / (m.sum() + 1e-5) / C` with
    `mask_pixels` [B, 1, H, W] (1 = masked; broadcast over channels) and C = `images.shape[1]`,
    exactly SimMIM's `SimMIM.forward` (including its 1e-5)."""
    if pred_images.shape != images.shape:
        raise ValueError(f"pred {tuple(pred_images.shape)} and images {tuple(images.shape)} differ in shape")
    m = mask_pixels.to(images.dtype)
    loss_recon = F.l1_loss(images, pred_images, reduction="none")
    return (loss_recon * m).sum() / (m.sum() + 1e-5) / images.shape[1]





def reconstruction_patches(pred: torch.Tensor, target_patches: torch.Tensor, mask: torch.Tensor,
                           norm_pix: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """What to show a person: visible patches as they were, masked ones as predicted. With `norm_pix`
    the prediction is brought back to pixel scale with each target patch's own mean and std (MAE's
    visualisation). [B, L, D] -> [B, L, D]."""
    if norm_pix:
        mean = target_patches.mean(dim=-1, keepdim=True)
        std = (target_patches.var(dim=-1, keepdim=True) + eps) ** 0.5
        pred = pred * std + mean
    return torch.where(mask.reshape(*mask.shape[:2], 1).bool(), pred.to(target_patches.dtype), target_patches)
