"""The reconstruction losses of masked image modelling: patch layout, MSE on per-patch normalised pixels by hand
(MAE's unbiased variance), and that masked MSE / L1 see masked patches only."""
from __future__ import annotations

import pytest
import torch

from autossl.backbones.masking import random_token_mask, upsample_mask
from autossl.losses.reconstruction import (masked_l1_loss, masked_mse_loss, patchify, pred_map_to_patches,
                                           unpatchify)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_patchify_round_trip_and_ordering():
    x = torch.randn(2, 3, 8, 12, generator=_gen())
    p = patchify(x, 4)
    assert p.shape == (2, 6, 48)
    # row-major patches, (p, q, c) inside a patch
    assert p[1, 1 * 3 + 2, (3 * 4 + 1) * 3 + 2] == x[1, 2, 4 + 3, 8 + 1]
    assert torch.equal(unpatchify(p, 4, (2, 3), 3), x)
    # a conv decoder's map whose channel k at cell (i, j) is patch entry k round-trips through pred_map_to_patches
    pred_map = p.transpose(1, 2).reshape(2, 48, 2, 3)
    assert torch.equal(pred_map_to_patches(pred_map), p)
    assert torch.equal(unpatchify(pred_map_to_patches(pred_map), 4, (2, 3), 3), x)


def test_masked_mse_loss_by_hand_and_norm_pix():
    x = torch.tensor([[[[1.0, 2.0], [4.0, 7.0], [0.0, 3.0], [5.0, 5.0]]]])  # [1, 1, 4, 2]
    target = patchify(x, 2)  # patch 2: a 2x1 grid of patches, D = 4
    assert target.shape == (1, 2, 4)
    pred = torch.tensor([[[0.5, -1.0, 0.0, 2.0], [9.0, 9.0, 9.0, 9.0]]])
    mask = torch.tensor([[True, False]])
    t0 = target[0, 0].tolist()
    raw = sum((a - b) ** 2 for a, b in zip(pred[0, 0].tolist(), t0)) / 4
    assert masked_mse_loss(pred, target, mask, norm_pix=False).item() == pytest.approx(raw, rel=1e-6)
    mean = sum(t0) / 4
    var = sum((t - mean) ** 2 for t in t0) / 3  # MAE: Tensor.var, unbiased
    tn = [(t - mean) / (var + 1e-6) ** 0.5 for t in t0]
    normed = sum((a - b) ** 2 for a, b in zip(pred[0, 0].tolist(), tn)) / 4
    assert masked_mse_loss(pred, target, mask).item() == pytest.approx(normed, rel=1e-6)


def test_losses_only_see_masked_patches():
    pred, target = torch.randn(2, 10, 12, generator=_gen(1)), torch.randn(2, 10, 12, generator=_gen(2))
    mask = random_token_mask(2, 10, 0.5, generator=_gen(3))[2]
    base = masked_mse_loss(pred, target, mask)
    changed = pred.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 12)
    assert torch.equal(masked_mse_loss(changed, target, mask), base)
    b, i = mask.nonzero()[0].tolist()
    changed[b, i] += 1.0
    assert not torch.equal(masked_mse_loss(changed, target, mask), base)

    img, rec = torch.randn(2, 3, 8, 8, generator=_gen(4)), torch.randn(2, 3, 8, 8, generator=_gen(5))
    cells = torch.tensor([[[True, False], [False, True]], [[False, False], [True, False]]])
    pix = 1 - upsample_mask(cells, (8, 8))  # [2, 1, 8, 8], 1 = masked
    base = masked_l1_loss(rec, img, pix)
    expected = ((rec - img).abs() * pix).sum() / (pix.sum() + 1e-5) / 3
    torch.testing.assert_close(base, expected)
    changed = torch.where(pix.bool(), rec, torch.randn(2, 3, 8, 8))
    assert torch.equal(masked_l1_loss(changed, img, pix), base)
    where = pix[0, 0].nonzero()[0].tolist()
    changed[0, 1, where[0], where[1]] += 1.0
    assert not torch.equal(masked_l1_loss(changed, img, pix), base)
