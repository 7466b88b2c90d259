"""All4One: each loss term by hand; the neighbour-sequence heads; the whole objective against solo-learn's
formula transcribed (lightly has no All4One), value and gradient; a real Trainer on 2 views; an exact resume
(every state-dict tensor, the optimiser and scheduler state, the random state, compared with torch.equal);
and building from a composed config."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from autossl.data import make_dataloader
from autossl.data.batch import Batch
from autossl.heads.neighbour_sequence import KNearestSupportSet, NeighbourTransformer, slot_encoding
from autossl.losses.all4one import centroid_loss, feature_contrast_loss, neighbour_contrast_loss
from autossl.methods.all4one import All4One
from autossl.train import build_model, compose
from conftest import TINY, quiet_trainer
from test_exact_resume import SaveAt, _assert_same_bits, _state

TINY_A4O = dict(TINY, queue_size=64)
R = 1 / math.sqrt(2)


def _close_with_grads(ours, ref, inputs, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol)
    for a, b in zip(torch.autograd.grad(ours, inputs, retain_graph=True), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---- the loss terms by hand ------------------------------------------------------------------------------------
def test_neighbour_and_centroid_terms_by_hand():
    e = torch.eye(2)
    nn_a, p_b = e, torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # p_b rows normalise to e1 and (r, r)
    # query NN(a)_i against keys p_b (positive: the same row), t = 1: row 0 logits [1, r], row 1 logits [0, r]
    ab = ((-1 + math.log(math.e + math.exp(R))) + (-R + math.log(1 + math.exp(R)))) / 2
    ba = -1 + math.log(math.e + 1)  # nn_b = p_a = identity: logits [[1, 0], [0, 1]]
    assert neighbour_contrast_loss([nn_a, e], [e, p_b], 1.0).item() == pytest.approx((ab + ba) / 2, rel=1e-6)
    # one-directional (solo-learn's nnclr_loss_func): with the roles swapped, p_b's rows query e1, e2 and
    # row 1 = (r, r) scores r against both keys: log 2
    swapped = ((-1 + math.log(math.e + 1)) + math.log(2)) / 2
    assert neighbour_contrast_loss([p_b, e], [e, e], 1.0).item() == pytest.approx((swapped + ba) / 2, rel=1e-6)
    assert centroid_loss([nn_a, e], [e, p_b], 1.0).item() == pytest.approx((ab + ba) / 2, rel=1e-6)
    # centroid's default temperature is nnclr_loss_func's 0.1, the neighbour term's solo-learn's 0.2
    z = [torch.randn(6, 4, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    assert centroid_loss(z, z[::-1]).item() == pytest.approx(neighbour_contrast_loss(z, z[::-1], 0.1).item())
    assert neighbour_contrast_loss(z, z[::-1]).item() == pytest.approx(neighbour_contrast_loss(z, z[::-1], 0.2).item())


def test_feature_term_by_hand():
    t, z = torch.eye(2), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # columns normalised over the batch: t -> e1, e2; z -> (r, r), (1, 0); C = t_n^T z_n = [[r, 1], [r, 0]]
    on = math.sqrt(((R - 1) ** 2 + (0 - 1) ** 2) / 2)
    off = math.sqrt((1 ** 2 + R ** 2) / 2)
    assert feature_contrast_loss([t, t], [z, z]).item() == pytest.approx((on + off) / 2, rel=1e-6)
    # the pairs are (target a, online b) and (target b, online a), averaged under the square roots
    on2, off2 = math.sqrt(((R - 1) ** 2 + 1) / 4), math.sqrt((1 + R ** 2) / 4)  # second pair: C = identity
    assert feature_contrast_loss([t, t], [t, z]).item() == pytest.approx((on2 + off2) / 2, rel=1e-6)
    # identical views with orthonormal columns: nothing to reduce; scaling a column changes nothing
    assert feature_contrast_loss([t, 3 * t], [t, t]).item() == pytest.approx(0.0, abs=1e-7)


# ---- the heads ---------------------------------------------------------------------------------------------------
class _SoloPositionalEncoding1D(nn.Module):
    """solo-learn solo/utils/positional_encodings.py @ 9187ea39c2c3f43c455ab06664d2b019a9802954 (from
    tatp22/multidim-positional-encoding), PositionalEncoding1D.forward, transcribed without its cache."""

    def __init__(self, channels):
        super().__init__()
        self.org_channels = channels
        channels = int(math.ceil(channels / 2) * 2)
        self.channels = channels
        self.inv_freq = 1.0 / (10000 ** (torch.arange(0, channels, 2).float() / channels))

    def forward(self, tensor):
        batch_size, x, orig_ch = tensor.shape
        pos_x = torch.arange(x, device=tensor.device).type(self.inv_freq.type())
        sin_inp_x = torch.einsum("i,j->ij", pos_x, self.inv_freq)
        emb_x = torch.flatten(torch.stack((sin_inp_x.sin(), sin_inp_x.cos()), dim=-1), -2, -1)  # get_emb
        emb = torch.zeros((x, self.channels), device=tensor.device).type(tensor.type())
        emb[:, : self.channels] = emb_x
        return emb[None, :, :orig_ch].repeat(batch_size, 1, 1)


def _solo_pos_enc(seq):
    """solo-learn's `Summer(PositionalEncodingPermute1D(5))` (same file): permute to [B, D, 5], encode, add."""
    enc = _SoloPositionalEncoding1D(5)(seq.permute(0, 2, 1)).permute(0, 2, 1)
    return seq + enc


def test_slot_encoding_is_solo_learns_and_the_transformer_reads_the_first_slot():
    seq = torch.randn(3, 5, 16)
    assert torch.equal(seq + slot_encoding(5, 16), _solo_pos_enc(seq))
    head = NeighbourTransformer(16, heads=8).eval()
    assert head(seq).shape == (3, 16) and "position" not in head.state_dict()  # a constant, not state
    torch.testing.assert_close(head(seq), head.encoder(_solo_pos_enc(seq))[:, 0])
    with pytest.raises(ValueError, match="shape"):
        head(seq[:, :4])


def test_k_nearest_are_ordered_and_start_with_the_nearest():
    g = torch.Generator().manual_seed(0)
    support = KNearestSupportSet(32, 8)
    support.items.copy_(F.normalize(torch.randn(32, 8, generator=g), dim=1))
    z = torch.randn(6, 8, generator=g) * 3  # not normalised: cosine neighbours all the same
    seq = support.nearest_k(z, 5)
    assert seq.shape == (6, 5, 8) and torch.equal(seq[:, 0], support.nearest(z))
    sims = torch.einsum("bkd,bd->bk", seq, F.normalize(z, dim=1))
    assert (sims[:, :-1] >= sims[:, 1:]).all()
    assert torch.equal(seq, support.items[(F.normalize(z, dim=1) @ support.items.T).topk(5).indices])
    with pytest.raises(ValueError, match="33 nearest"):
        support.nearest_k(z, 33)


# ---- the whole objective against solo-learn's ----------------------------------------------------------------
def _solo_all4one_loss(feats1, feats2, momentum_z1, momentum_z2, queue, model, temperature):
    """solo-learn solo/methods/all4one.py @ 9187ea39c2c3f43c455ab06664d2b019a9802954, All4One.training_step
    (lines 286-371) with find_nn (lines 190-216) and solo/losses/nnclr.py's nnclr_loss_func, transcribed;
    one process, so gather is the identity. momentum_z* are momentum_forward's outputs (L2-normalised)."""
    projector, predictor, predictor2 = model.projector, model.predictor, model.centroid_predictor
    transformer_encoder, pos_enc = model.transformer.encoder, _solo_pos_enc

    def nnclr_loss_func(nn_, p, temperature=0.1):
        nn_, p = F.normalize(nn_, dim=-1), F.normalize(p, dim=-1)
        logits = nn_ @ p.T / temperature
        return F.cross_entropy(logits, torch.arange(nn_.size(0)))

    def find_nn(z):
        _, idx = (z @ queue.T).topk(5, dim=1)
        return queue[idx]

    def off_diagonal(x):
        n, m = x.shape
        return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()

    z1, z2 = projector(feats1), projector(feats2)
    p1, p2 = predictor(z1), predictor(z2)
    p1_2, p2_2 = predictor2(z1), predictor2(z2)
    nn1, nn2 = find_nn(momentum_z1), find_nn(momentum_z2)
    trans_emb1, trans_emb2 = pos_enc(nn1), pos_enc(nn2)
    strange1 = pos_enc(torch.cat((p1_2.unsqueeze(1), nn1), 1)[:, :5, :])
    strange2 = pos_enc(torch.cat((p2_2.unsqueeze(1), nn2), 1)[:, :5, :])
    p1_norm_feat, p2_norm_feat = F.normalize(momentum_z1, dim=0), F.normalize(momentum_z2, dim=0)
    z1_norm_feat, z2_norm_feat = F.normalize(z1, dim=0), F.normalize(z2, dim=0)
    corr_matrix_1_feat = p1_norm_feat.T @ z2_norm_feat
    corr_matrix_2_feat = p2_norm_feat.T @ z1_norm_feat
    on_diag_feat = ((torch.diagonal(corr_matrix_1_feat).add(-1).pow(2).mean()
                     + torch.diagonal(corr_matrix_2_feat).add(-1).pow(2).mean()) * 0.5).sqrt()
    off_diag_feat = ((off_diagonal(corr_matrix_1_feat).pow(2).mean()
                      + off_diagonal(corr_matrix_2_feat).pow(2).mean()) * 0.5).sqrt()
    rich_emb1, rich_emb2 = transformer_encoder(trans_emb1)[:, 0, :], transformer_encoder(trans_emb2)[:, 0, :]
    strange_emb1, strange_emb2 = transformer_encoder(strange1)[:, 0, :], transformer_encoder(strange2)[:, 0, :]
    att_nnclr_loss = nnclr_loss_func(rich_emb1, strange_emb2) / 2 + nnclr_loss_func(rich_emb2, strange_emb1) / 2
    nnclr_loss = (nnclr_loss_func(nn1[:, 0, :], p2, temperature=temperature) / 2
                  + nnclr_loss_func(nn2[:, 0, :], p1, temperature=temperature) / 2)
    feature_loss = (0.5 * on_diag_feat + 0.5 * off_diag_feat) * 10
    terms = {"centroid": att_nnclr_loss, "neighbour": nnclr_loss, "feature": feature_loss / 10}
    return 0.5 * att_nnclr_loss + 0.5 * nnclr_loss + 0.5 * feature_loss, terms


def test_objective_value_and_gradient_equal_solo_learns():
    torch.manual_seed(0)
    model = All4One(transformer_dropout=0.0, **TINY_A4O)  # no dropout: the two forwards must see the same net
    g = torch.Generator().manual_seed(1)
    model.support_set.items.copy_(F.normalize(torch.randn(64, 16, generator=g), dim=1))
    queue = model.support_set.items.clone()  # as it was before this batch is pushed
    t1, t2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)  # the momentum projections
    feats = [torch.randn(8, model.feat_dim, generator=g).requires_grad_(True) for _ in range(2)]
    model.encode_views = lambda views, encoder=None: feats
    model.encode_target = lambda views: [t1, t2]
    out = model.step(Batch([None, None], None))
    ref, ref_terms = _solo_all4one_loss(*feats, F.normalize(t1, dim=-1), F.normalize(t2, dim=-1), queue, model, 0.2)
    for name, value in ref_terms.items():
        torch.testing.assert_close(out["log"][f"{name}_loss"], value.detach(), rtol=1e-5, atol=1e-6)
    inputs = feats + [model.transformer.encoder.layers[0].linear1.weight, model.centroid_predictor[0].weight]
    _close_with_grads(out["loss"], ref, inputs)
    assert int(model.support_set.ptr) == 8  # the first view's targets were pushed, normalised
    torch.testing.assert_close(model.support_set.items[:8], F.normalize(t1, dim=1))


# ---- training, resuming, composing ------------------------------------------------------------------------------
def test_trains_on_two_views_with_the_transformer_at_its_own_lr(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = All4One(**TINY_A4O)
    images = []
    model.backbone.register_forward_pre_hook(lambda m, a: images.append(len(a[0])))
    trainer = quiet_trainer(tmp_path, max_steps=2, precision="bf16-mixed")  # the library's default precision
    trainer.fit(model, make_dataloader(mnist_arrays, num_views=2, batch_size=8, image_size=16, preset="mnist",
                                       num_workers=0, seed=0))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert images[0] == 16  # both views through the online backbone in one pass
    assert int(model.state_dict()["support_set.ptr"]) == 16  # 2 steps of 8, in the state dict
    groups = trainer.optimizers[0].param_groups
    own = {id(p) for p in model.transformer.parameters()}
    mine = [g for g in groups if any(id(p) in own for p in g["params"])]
    assert sum(len(g["params"]) for g in mine) == len(own) and all(g["lr_scale"] == pytest.approx(0.1) for g in mine)
    backbone = next(g for g in groups if any(p is model.backbone.model.conv1.weight for p in g["params"]))
    assert all(m["lr"] == pytest.approx(0.1 * backbone["lr"]) for m in mine)  # 0.1 against the base 1.0


def _run(mnist_arrays, root, seed, stop_at=None, resume=None):
    pl.seed_everything(seed, verbose=False)
    model = All4One(max_steps=4, warmup_steps=1, num_classes=10, **TINY_A4O)  # dropout on: the RNG must resume too
    loader = make_dataloader(mnist_arrays, num_views=2, batch_size=8, image_size=16, preset="mnist", num_workers=0,
                             seed=0)
    callbacks = [SaveAt(stop_at, root / "stop.ckpt")] if stop_at else []
    trainer = quiet_trainer(root, max_steps=4, precision="32", callbacks=callbacks)
    trainer.fit(model, loader, ckpt_path=str(resume) if resume else None)
    return _state(model, trainer)


def test_resume_after_two_steps_ends_with_the_same_bits(mnist_arrays, tmp_path):
    straight = _run(mnist_arrays, tmp_path / "straight", seed=0)
    _run(mnist_arrays, tmp_path / "first", seed=0, stop_at=2)
    resumed = _run(mnist_arrays, tmp_path / "second", seed=1000, resume=tmp_path / "first" / "stop.ckpt")
    state = straight["model"]
    assert straight["step"] == 4 and int(state["support_set.ptr"]) == 32
    for key in ("support_set.items", "support_set.filled", "target_backbone.model.conv1.weight",
                "target_projector.0.weight", "transformer.encoder.layers.2.linear2.weight",
                "centroid_predictor.0.weight"):
        assert key in state, key
    _assert_same_bits(straight, resumed, "resumed after step 2")
    # and the comparison means something: steps 3 and 4 moved the weights, the EMA copies and the support set
    at2 = torch.load(tmp_path / "first" / "stop.ckpt", weights_only=False)["state_dict"]
    for key in ("transformer.encoder.layers.0.linear1.weight", "target_projector.0.weight", "support_set.items"):
        assert not torch.equal(at2[key], state[key]), key


def test_built_from_a_composed_config():
    model = build_model(compose(["method=all4one", "model.params.proj_hidden_dim=32",
                                 "model.params.pred_hidden_dim=32", "model.params.proj_output_dim=16",
                                 "model.params.queue_size=128"]))
    assert type(model) is All4One and model.support_set.items.shape == (128, 16)
    assert (model.cfg["temperature"], model.cfg["centroid_temperature"], model.cfg["feature_weight"]) == (0.2, 0.1, 5.0)
    exp = compose(["experiment=cifar10_all4one"])
    params = exp.model.params
    assert (exp.method, exp.optimizer.name, exp.optimizer.lr, params.queue_size, params.temperature) == \
        ("all4one", "lars", 1.0, 98304, 0.2)
