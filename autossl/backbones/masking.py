"""Random token masks for masked image modelling (MAE, SimMIM, FCMAE).

MAE (He et al. 2022, github.com/facebookresearch/mae, `random_masking`) draws one uniform noise value per
token and keeps the tokens with the smallest noise; every image then has exactly the same number of
visible tokens, which is what lets the encoder run on a dense [B, n_keep, D] tensor. The same
`rand(...).argsort` recipe is used by SimMIM's and ConvNeXt-V2's FCMAE mask generators (they then reshape
the boolean mask onto a 2-D grid), so one function serves all three methods.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from ..core.distributed import rand_rows


def _num_masked(num_tokens: int, mask_ratio: float) -> int:
    if not 0.0 <= float(mask_ratio) <= 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1], got {mask_ratio}")
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    n_mask = int(round(num_tokens * float(mask_ratio)))
    n_mask = min(n_mask, num_tokens - 1)  # at least one token stays visible: the encoder needs an input
    if mask_ratio > 0:
        if num_tokens < 2:
            raise ValueError(f"cannot mask a ratio {mask_ratio} of {num_tokens} token and still keep one visible")
        n_mask = max(n_mask, 1)  # a positive ratio always gives the loss something to reconstruct
    return n_mask


def random_token_mask(
    batch_size: int,
    num_tokens: int,
    mask_ratio: float,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask exactly `round(num_tokens * mask_ratio)` tokens per image, chosen uniformly at random.

    Returns `(idx_keep [B, n_keep] long, ascending; idx_mask [B, n_mask] long, ascending;
    mask [B, num_tokens] bool, True = masked)`. The count is clamped so that at least one token is kept
    and, for a positive ratio, at least one is masked. The noise is drawn with `torch.rand(...,
    generator=generator)` on the generator's device (so a CPU generator works for a CUDA `device`) and
    ranked with `argsort`, as in MAE's `random_masking`; the same generator state gives the same mask. Under DDP
    each process keeps its rows of the noise drawn for the global batch: processes mask their images differently,
    as one process would mask the global batch, and their generators stay in step.
    Keeping `idx_keep` sorted preserves the raster order of the visible tokens.
    """
    n_mask = _num_masked(num_tokens, mask_ratio)
    n_keep = num_tokens - n_mask
    noise_device = generator.device if generator is not None else device
    # under DDP: this process's rows of the global batch's draw (core.distributed.rand_rows)
    noise = rand_rows(batch_size, num_tokens, generator=generator, device=noise_device)
    order = noise.argsort(dim=1)
    if device is not None:
        order = order.to(device)
    idx_keep = order[:, :n_keep].sort(dim=1).values
    idx_mask = order[:, n_keep:].sort(dim=1).values
    mask = torch.zeros(batch_size, num_tokens, dtype=torch.bool, device=order.device)
    mask.scatter_(1, idx_mask, True)
    return idx_keep, idx_mask, mask


def upsample_mask(mask_2d: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour upsampling of a [B, h, w] bool mask (True = masked) to [B, 1, H, W] float with
    1 = visible and 0 = masked: the multiplier that zeroes masked positions. (ConvNeXt-V2's FCMAE
    `upsample_mask` does the same repeat_interleave but keeps 1 = masked.) Each cell becomes an (H/h) x (W/w) block; H and W must be multiples of h and w.
    """
    if mask_2d.dim() != 3:
        raise ValueError(f"upsample_mask expects a [B, h, w] mask, got shape {tuple(mask_2d.shape)}")
    H, W = int(size[0]), int(size[1])
    h, w = mask_2d.shape[-2:]
    if H % h or W % w:
        raise ValueError(f"cannot upsample a {h}x{w} mask to {H}x{W}: the size must be a multiple of the grid")
    visible = (~mask_2d.bool()).float()
    visible = visible.repeat_interleave(H // h, dim=1).repeat_interleave(W // w, dim=2)
    return visible.unsqueeze(1)


__all__ = ["random_token_mask", "upsample_mask"]
