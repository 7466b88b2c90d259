"""Masked-image-modelling building blocks: masks and the FCMAE / MAE / SimMIM encoders and decoders (the
reconstruction losses: test_reconstruction_losses.py). The key property is the information barrier: what FCMAE and MAE compute from a
masked image must not depend on the pixels under the mask (checked by perturbing them), and the dense
FCMAE encoder must equal an explicit sparse computation over visible positions only."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.convnext import ConvNeXt

from autossl.backbones.masked_convnext import MaskedConvNeXtV2, create_masked_convnextv2, small_image_stem
from autossl.backbones.masked_vit import create_masked_swin, create_masked_vit
from autossl.backbones.masking import random_token_mask, upsample_mask
from autossl.heads.decoders import FCMAEDecoder, MAEDecoder, SimMIMDecoder, sincos_pos_embed_2d, tokens_to_map
from autossl.losses.reconstruction import masked_l1_loss, masked_mse_loss, patchify, pred_map_to_patches


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randomize(model: nn.Module, seed=0, std=0.3):
    """Random values for every parameter, GRN's zero-initialised gamma/beta included (else GRN is identity)."""
    g = _gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def _perturb_masked_pixels(x, cell_mask, seed=1):
    """x with new random values in every pixel under a masked cell (cell_mask [B, h, w], True = masked)."""
    hidden = upsample_mask(cell_mask, x.shape[-2:]) == 0  # [B, 1, H, W]
    return torch.where(hidden, torch.randn(x.shape, generator=_gen(seed)) * 5, x)


# ----------------------------------------------------------------------------------------------- masks
def test_random_token_mask_counts_order_and_determinism():
    idx_keep, idx_mask, mask = random_token_mask(4, 50, 0.75, generator=_gen(3))
    n_mask = round(50 * 0.75)
    assert idx_keep.shape == (4, 50 - n_mask) and idx_mask.shape == (4, n_mask) and mask.dtype == torch.bool
    assert idx_keep.dtype == idx_mask.dtype == torch.long
    assert (mask.sum(1) == n_mask).all()
    assert (idx_keep.diff(dim=1) > 0).all()  # sorted ascending
    for b in range(4):
        keep, hid = set(idx_keep[b].tolist()), set(idx_mask[b].tolist())
        assert not keep & hid and keep | hid == set(range(50))
        assert set(mask[b].nonzero().flatten().tolist()) == hid
    again = random_token_mask(4, 50, 0.75, generator=_gen(3))
    assert all(torch.equal(a, b) for a, b in zip(again, (idx_keep, idx_mask, mask)))
    assert not torch.equal(random_token_mask(4, 50, 0.75, generator=_gen(4))[2], mask)
    # clamps: something is always kept, and a positive ratio always masks something
    assert random_token_mask(2, 16, 1.0)[0].shape == (2, 1)
    assert random_token_mask(2, 16, 0.01)[1].shape == (2, 1)
    assert random_token_mask(2, 16, 0.0)[2].sum() == 0
    with pytest.raises(ValueError):
        random_token_mask(2, 16, 1.5)


def test_upsample_mask():
    m = torch.tensor([[[True, False], [False, True]]])
    up = upsample_mask(m, (4, 6))
    assert up.shape == (1, 1, 4, 6) and up.dtype == torch.float32
    assert up[0, 0, :2, :3].eq(0).all() and up[0, 0, :2, 3:].eq(1).all() and up[0, 0, 2:, 3:].eq(0).all()
    with pytest.raises(ValueError, match="multiple"):
        upsample_mask(m, (5, 6))


# ------------------------------------------------------------------------------------- FCMAE (ConvNeXt-V2)
@pytest.fixture(scope="module")
def atto():
    torch.manual_seed(0)
    enc = create_masked_convnextv2("convnextv2_atto", image_size=32)
    _randomize(enc, std=0.1)
    dec = _randomize(FCMAEDecoder(enc.num_features, enc.stride, decoder_dim=32, depth=1), seed=1, std=0.1)
    return enc.eval(), dec.eval()


def test_small_image_stem_grid_shapes_and_timm_state_dict(atto):
    enc, _ = atto
    assert enc.stride == 8 and enc.num_features == 320
    assert enc.model.stem[0].stride == (1, 1) and enc.model.stem[0].kernel_size == (4, 4)
    with torch.no_grad():
        assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 320, 4, 4)  # >= 4x4 mask grid at 32 px
        assert enc(torch.randn(1, 3, 48, 40)).shape == (1, 320, 6, 5)  # any size divisible by 8
    with pytest.raises(ValueError, match="36x36.*stride 8") as err:
        enc(torch.randn(1, 3, 36, 36))
    assert "\n" not in str(err.value)
    plain = timm.create_model("convnextv2_atto", pretrained=False, num_classes=0)
    plain.load_state_dict(enc.model.state_dict(), strict=True)
    big = create_masked_convnextv2("convnextv2_atto", image_size=224)
    assert big.stride == 32 and big.model.stem[0].stride == (4, 4)


def test_fcmae_no_mask_is_timm_forward_features(atto):
    enc, _ = atto
    x = torch.randn(2, 3, 32, 32, generator=_gen())
    with torch.no_grad():
        ref = enc.model.forward_features(x)
        assert torch.equal(enc(x), ref)
        assert torch.equal(enc(x, torch.zeros(2, 4, 4, dtype=torch.bool)), ref)  # nothing masked


def test_fcmae_information_barrier(atto):
    enc, dec = atto
    x = torch.randn(2, 3, 32, 32, generator=_gen(0))
    mask = random_token_mask(2, 16, 0.6, generator=_gen(1))[2].view(2, 4, 4)
    x2 = _perturb_masked_pixels(x, mask)
    assert not torch.equal(x, x2)
    target = patchify(x, enc.stride)  # the ORIGINAL image's target
    with torch.no_grad():
        f1, f2 = enc(x, mask), enc(x2, mask)
        vis = (~mask).unsqueeze(1).expand_as(f1)
        torch.testing.assert_close(f1[vis], f2[vis], atol=1e-6, rtol=0)
        assert f1[~vis].eq(0).all() and f2[~vis].eq(0).all()  # masked cells carry exactly zero
        assert torch.equal(enc(x, mask.flatten(1)), f1)  # a flat row-major [B, L] mask means the same
        p1, p2 = dec(f1, mask), dec(f2, mask)
        assert p1.shape == (2, 8 * 8 * 3, 4, 4)
        torch.testing.assert_close(p1, p2, atol=1e-6, rtol=0)
        l1 = masked_mse_loss(pred_map_to_patches(p1), target, mask.flatten(1))
        l2 = masked_mse_loss(pred_map_to_patches(p2), target, mask.flatten(1))
        torch.testing.assert_close(l1, l2, atol=1e-6, rtol=0)
        # the test can fail: without the mask the same perturbation reaches visible outputs and predictions
        g1, g2 = enc(x), enc(x2)
        assert (g1[vis] - g2[vis]).abs().max() > 1e-3
        assert (dec(g1, mask) - dec(g2, mask)).abs().max() > 1e-3


def test_fcmae_drop_path_trains_and_keeps_masked_zero():
    enc = create_masked_convnextv2("convnextv2_atto", image_size=32, drop_path_rate=0.5).train()
    x = torch.randn(4, 3, 32, 32, generator=_gen())
    mask = random_token_mask(4, 16, 0.5, generator=_gen(2))[2].view(4, 4, 4)
    torch.manual_seed(0)
    a = enc(x, mask)
    torch.manual_seed(1)
    b = enc(x, mask)
    assert not torch.equal(a, b)  # stochastic depth is active
    assert a.masked_select(mask.unsqueeze(1)).eq(0).all()
    a.square().mean().backward()
    # every parameter but timm's head norm (applied after pooling, outside forward_features) gets a gradient
    for name, p in enc.named_parameters():
        assert (p.grad is None) == name.startswith("model.head."), name
        assert p.grad is None or torch.isfinite(p.grad).all()


# explicit sparse reference: features live only at visible positions (a dict keyed by (row, col)); every
# convolution gathers its inputs from that dict, so masked positions cannot contribute by construction
def _ln(v, norm):
    return F.layer_norm(v, (v.shape[-1],), norm.weight, norm.bias, norm.eps)


def _mat(layer):  # Linear [out, in] or 1x1 Conv [out, in, 1, 1] -> [out, in]
    return layer.weight.reshape(layer.weight.shape[0], -1)


def _ref_block(block, feats):
    k = block.conv_dw.kernel_size[0]
    pad = k // 2
    w_dw = block.conv_dw.weight[:, 0]  # [C, k, k]
    keys = sorted(feats)
    dw = []
    for (i, j) in keys:
        taps = [(a, b) for a in range(k) for b in range(k) if (i - pad + a, j - pad + b) in feats]
        vals = torch.stack([feats[(i - pad + a, j - pad + b)] for a, b in taps])  # visible neighbours only
        wts = w_dw[:, [a for a, _ in taps], [b for _, b in taps]].T
        dw.append(block.conv_dw.bias + (wts * vals).sum(0))
    x = torch.stack(dw)  # [n_visible, C]; everything below is per position except GRN
    h = block.mlp.act(_ln(x, block.norm) @ _mat(block.mlp.fc1).T + block.mlp.fc1.bias)
    grn = block.mlp.grn
    gx = h.norm(p=2, dim=0)  # spatial L2 norm over the visible positions of this image
    nx = gx / (gx.mean() + grn.eps)
    h = grn.weight * (h * nx) + grn.bias + h
    y = h @ _mat(block.mlp.fc2).T + block.mlp.fc2.bias
    if block.gamma is not None:
        y = y * block.gamma
    return {p: feats[p] + y[n] for n, p in enumerate(keys)}


def _ref_sparse(model, img, cell_mask):
    """Sparse ConvNeXt-V2 on one image [C, H, W] with cell_mask [gh, gw] (True = masked)."""
    gh, gw = cell_mask.shape

    def visible(i, j, h, w):
        return not bool(cell_mask[i * gh // h, j * gw // w])

    conv, norm = model.stem[0], model.stem[1]
    k, s = conv.kernel_size[0], conv.stride[0]
    pad = 0 if s == k else (k - 1) // 2  # patchify stem, or the small-image 'same' stem (1 before, 2 after)
    H, W = img.shape[-2:]
    res = (H // s, W // s)
    feats = {}
    for i in range(res[0]):
        for j in range(res[1]):
            if not visible(i, j, *res):
                continue
            taps = [(a, b) for a in range(k) for b in range(k)
                    if 0 <= i * s - pad + a < H and 0 <= j * s - pad + b < W and visible(i * s - pad + a, j * s - pad + b, H, W)]
            pix = torch.stack([img[:, i * s - pad + a, j * s - pad + b] for a, b in taps])  # [n, C_in]
            wts = conv.weight[:, :, [a for a, _ in taps], [b for _, b in taps]]  # [C_out, C_in, n]
            feats[(i, j)] = _ln(conv.bias + torch.einsum("oin,ni->o", wts, pix), norm)
    for stage in model.stages:
        if not isinstance(stage.downsample, nn.Identity):
            norm, conv = stage.downsample
            res = (res[0] // 2, res[1] // 2)
            new = {}
            for i in range(res[0]):
                for j in range(res[1]):
                    if visible(i, j, *res):  # its 2x2 inputs lie in the same (visible) cell
                        ins = torch.stack([_ln(feats[(2 * i + a, 2 * j + b)], norm) for a in range(2) for b in range(2)])
                        new[(i, j)] = conv.bias + torch.einsum("oin,ni->o", conv.weight.flatten(2), ins)
            feats = new
        for block in stage.blocks:
            feats = _ref_block(block, feats)
    return feats, res


@pytest.mark.parametrize("variant", ["patch_conv_mlp", "patch_linear_mlp_layerscale", "small_stem"])
def test_dense_fcmae_equals_explicit_sparse_computation(variant):
    # timm's ConvNeXt always has 4 stages; a narrow one at 128 px (32 px with the stride-8 small stem) = 4x4 cells
    kw = dict(in_chans=3, num_classes=0, depths=(1, 1, 1, 1), dims=(4, 8, 8, 8), use_grn=True, ls_init_value=None)
    if variant == "patch_conv_mlp":
        model, size = ConvNeXt(conv_mlp=True, **kw), 128
    elif variant == "patch_linear_mlp_layerscale":
        model, size = ConvNeXt(conv_mlp=False, **dict(kw, ls_init_value=0.5)), 128
    else:
        model, size = ConvNeXt(conv_mlp=True, **kw), 32
        small_image_stem(model)  # stem stride 1, kernel 4, 'same' padding
    enc = MaskedConvNeXtV2(_randomize(model).double()).eval()
    assert size // enc.stride == 4
    x = torch.randn(2, 3, size, size, generator=_gen(5), dtype=torch.float64)
    mask = random_token_mask(2, 16, 0.5, generator=_gen(6))[2].view(2, 4, 4)
    with torch.no_grad():
        out = enc(x, mask)
        for b in range(2):
            feats, res = _ref_sparse(enc.model, x[b], mask[b])
            assert res == (4, 4) and sorted(feats) == [tuple(p) for p in (~mask[b]).nonzero().tolist()]
            for (i, j), v in feats.items():
                torch.testing.assert_close(out[b, :, i, j], v, atol=1e-5, rtol=0)
        assert out.masked_select(mask.unsqueeze(1)).eq(0).all()
        assert torch.equal(enc(x), enc.model.forward_features(x))


# ----------------------------------------------------------------------------------------------- MAE
@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    v = create_masked_vit("vit_tiny_patch16_224", image_size=32, patch_size=4, depth=2, use_mask_token=False)
    dec = MAEDecoder(v.num_patches, v.patch_size, v.embed_dim, decoder_dim=32, depth=1, num_heads=2,
                     num_prefix_tokens=v.num_prefix_tokens)
    return v.eval(), dec.eval()


def test_mae_encoder_sees_exactly_the_visible_tokens(vit):
    v, _ = vit
    assert v.grid == (8, 8) and v.num_patches == 64 and v.num_prefix_tokens == 1 and v.mask_token is None
    x = torch.randn(2, 3, 32, 32, generator=_gen())
    idx_keep = random_token_mask(2, 64, 0.75, generator=_gen(1))[0]
    seen = []
    handle = v.model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            out = v.encode(x, idx_keep)
    finally:
        handle.remove()
    assert out.shape == (2, 1 + 16, 192) and seen[0].shape == (2, 1 + 16, 192)
    with torch.no_grad():
        pos = v.model.pos_embed  # [1, 1 + L, D], class token first
        patches = v.model.patch_embed(x) + pos[:, 1:]
        expected = torch.cat([(v.model.cls_token + pos[:, :1]).expand(2, -1, -1),
                              torch.stack([patches[b, idx_keep[b]] for b in range(2)])], dim=1)
    torch.testing.assert_close(seen[0], expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert torch.equal(v.encode(x), v.model.forward_features(x))


def test_mae_information_barrier(vit):
    v, dec = vit
    x = torch.randn(2, 3, 32, 32, generator=_gen(0))
    idx_keep, _, mask = random_token_mask(2, 64, 0.75, generator=_gen(2))
    x2 = _perturb_masked_pixels(x, mask.view(2, 8, 8))
    target = patchify(x, 4)
    with torch.no_grad():
        t1, t2 = v.encode(x, idx_keep), v.encode(x2, idx_keep)
        torch.testing.assert_close(t1, t2, atol=1e-6, rtol=0)
        p1, p2 = dec(t1, idx_keep, v.num_patches), dec(t2, idx_keep, v.num_patches)
        assert p1.shape == (2, 64, 4 * 4 * 3)
        torch.testing.assert_close(p1, p2, atol=1e-6, rtol=0)
        torch.testing.assert_close(masked_mse_loss(p1, target, mask), masked_mse_loss(p2, target, mask),
                                   atol=1e-6, rtol=0)
        # the test can fail: encoding every patch lets the perturbation through
        assert (v.encode(x) - v.encode(x2)).abs().max() > 1e-3


def test_sincos_pos_embed_matches_mae():
    def mae_1d(d, pos):  # MAE util/pos_embed.py, numpy
        omega = np.arange(d // 2, dtype=np.float64) / (d / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.arange(4, dtype=np.float32)
    grid = np.stack(np.meshgrid(g, g), axis=0).reshape(2, 1, 4, 4)
    ref = np.concatenate([mae_1d(8, grid[0]), mae_1d(8, grid[1])], axis=1)
    ref = np.concatenate([np.zeros([1, 16]), ref], axis=0)
    ours = sincos_pos_embed_2d(4, 4, 16, cls_token=True)
    assert ours.shape == (17, 16) and ours[0].eq(0).all()
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)
    assert sincos_pos_embed_2d(2, 3, 8, cls_token=False).shape == (6, 8)


# -------------------------------------------------------------------------------------------- SimMIM
def test_simmim_vit_mask_token_before_blocks():
    torch.manual_seed(0)
    v = create_masked_vit(image_size=32, patch_size=4, depth=1).eval()
    x = torch.randn(2, 3, 32, 32, generator=_gen())
    mask = random_token_mask(2, 64, 0.6, generator=_gen(1))[2]
    seen = []
    handle = v.model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        out = v.encode_with_mask_token(x, mask)
        handle.remove()
        pos = v.model.pos_embed[0, 1:]
        pe = v.model.patch_embed(x)
    assert out.shape == (2, 65, 192) and seen[0].shape == (2, 65, 192)
    tokens = seen[0][:, 1:]
    torch.testing.assert_close(tokens[mask], (v.mask_token[0] + pos).expand(2, -1, -1)[mask], atol=1e-6, rtol=0)
    torch.testing.assert_close(tokens[~mask], (pe + pos)[~mask], atol=1e-6, rtol=0)
    dec = SimMIMDecoder(v.embed_dim, v.patch_size)
    rec = dec(tokens_to_map(out, v.grid, v.num_prefix_tokens))
    assert rec.shape == x.shape
    loss = masked_l1_loss(rec, x, 1 - upsample_mask(mask.view(2, 8, 8), (32, 32)))
    assert torch.isfinite(loss)


def test_simmim_swin_mask_token_and_shapes():
    torch.manual_seed(0)
    s = create_masked_swin(image_size=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), embed_dim=16).eval()
    assert s.patch_size == 2 and s.stride == 16 and s.grid == (16, 16) and s.num_features == 128
    x = torch.randn(2, 3, 32, 32, generator=_gen())
    mask = random_token_mask(2, 256, 0.6, generator=_gen(1))[2].view(2, 16, 16)
    seen = []
    handle = s.model.layers[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        out = s.encode_with_mask_token(x, mask)
        handle.remove()
        pe = s.model.patch_embed(x)
    assert out.shape == (2, 128, 2, 2)
    torch.testing.assert_close(seen[0][mask], s.mask_token[0].expand(int(mask.sum()), -1), atol=0, rtol=0)
    torch.testing.assert_close(seen[0][~mask], pe[~mask], atol=0, rtol=0)
    rec = SimMIMDecoder(s.num_features, s.stride)(out)
    assert rec.shape == x.shape
