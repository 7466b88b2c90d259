"""MoCo v3 and NNCLR: the losses by hand and against lightly, MoCo v3's momentum pairs and ViT heads,
NNCLR's support set (exact neighbours, FIFO, checkpointed); both trained through a real Trainer and
built from a composed config."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from autossl.data import make_dataloader
from autossl.data.batch import Batch
from autossl.heads.support_set import SupportSet
from autossl.methods.mocov3 import MoCoV3
from autossl.methods.nnclr import NNCLR
from autossl.train import build_model, compose
from conftest import TINY, quiet_trainer

TINY_NNCLR = dict(TINY, queue_size=64)


def _loader(mnist_arrays):
    return make_dataloader(mnist_arrays, num_views=2, batch_size=8, image_size=16, preset="mnist", num_workers=0,
                           seed=0)


# ---- MoCo v3 -----------------------------------------------------------------------------------------------
def test_mocov3_loss_by_hand_on_a_toy():
    model = MoCoV3(temperature=0.5, **TINY)
    model.projector = model.predictor = nn.Identity()
    q1, q2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    k1, k2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    model.encode_target = lambda views: [k1, k2]

    def ctr(q, k, t=0.5):  # 2t * mean_i -log softmax_j(cos(q_i, k_j) / t)[i], written out
        total = 0.0
        for i in range(len(q)):
            logits = [F.cosine_similarity(q[i], k[j], dim=0).item() / t for j in range(len(k))]
            total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
        return 2 * t * total / len(q)

    expected = ctr(q1, k2) + ctr(q2, k1)  # the paper's symmetrised loss
    assert model.ssl_loss([q1, q2], [None, None]).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(math.log(1 + math.exp(-2)) + ctr(q2, k1))  # ctr(q1, k2) = log(1 + e^-2)


def test_mocov3_momentum_pairs_and_resnet_heads():
    model = MoCoV3(**TINY)
    pairs = model.momentum_pairs
    assert [(id(o), id(t)) for o, t in pairs] == [(id(model.backbone), id(model.target_backbone)),
                                                  (id(model.projector), id(model.target_projector))]
    assert not hasattr(model, "target_predictor")
    assert all(not p.requires_grad for _, t in pairs for p in t.parameters())
    trained = {id(p) for g in model.param_groups() for p in g["params"]}
    assert all(id(p) in trained for p in model.predictor.parameters())
    assert not any(id(p) in trained for _, t in pairs for p in t.parameters())
    # MoCo_ResNet: 2-layer projector ending in an affine-free BN, predictor without a final BN or bias
    assert len([m for m in model.projector if isinstance(m, nn.Linear)]) == 2
    assert isinstance(model.projector[-1], nn.BatchNorm1d) and not model.projector[-1].affine
    assert isinstance(model.predictor[-1], nn.Linear) and model.predictor[-1].bias is None


def test_mocov3_vit_heads_and_frozen_patch_embedding():
    torch.manual_seed(0)
    model = MoCoV3(backbone="vit_tiny", image_size=16, proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32)
    assert len([m for m in model.projector if isinstance(m, nn.Linear)]) == 3  # MoCo_ViT
    assert isinstance(model.predictor[-1], nn.BatchNorm1d)
    g = torch.Generator().manual_seed(0)
    out = model.step(Batch([torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["feats"].shape == (4, model.feat_dim)
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.model.patch_embed.parameters())
    assert model.backbone.model.blocks[0].attn.qkv.weight.grad is not None


def test_mocov3_trains_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = MoCoV3(momentum_base=0.9, **TINY)
    before = [p.detach().clone() for p in model.target_projector.parameters()]
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model, _loader(mnist_arrays))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.target_projector.parameters()))  # EMA moved
    model = build_model(compose(["method=mocov3", "model.params.proj_hidden_dim=32",
                                 "model.params.pred_hidden_dim=32"]))
    assert isinstance(model, MoCoV3) and model.cfg["temperature"] == 0.2
    exp = compose(["experiment=cifar10_mocov3"])
    assert (exp.method, exp.optimizer.lr, exp.model.params.temperature, exp.model.params.momentum_base) == \
        ("mocov3", 0.3, 0.2, 0.99)


# ---- NNCLR -------------------------------------------------------------------------------------------------
def test_support_set_returns_exact_nearest_neighbours_and_is_fifo():
    s = SupportSet(size=4, dim=2)
    s.push(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, -1.0]]))  # stored normalised
    queries = torch.tensor([[0.9, 0.2], [-0.1, 5.0], [-1.0, -0.9], [0.2, -0.5]])
    assert s.nearest_index(queries).tolist() == [0, 1, 2, 3]  # cosine: [-1, -0.9] is nearer to -x than to -y
    torch.testing.assert_close(s.nearest(queries), torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    s.push(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))  # overwrites the two oldest entries
    assert int(s.ptr) == 2 and s.nearest_index(torch.tensor([[2.0, 2.1]])).item() == 0
    torch.testing.assert_close(s.items[2:], torch.tensor([[-1.0, 0.0], [0.0, -1.0]]))
    assert set(s.state_dict()) == {"items", "ptr", "filled"}  # buffers: checkpointed with the model


def test_nnclr_loss_value_and_gradient_equal_lightly():
    from lightly.loss import NTXentLoss
    from lightly.models.modules import NNMemoryBankModule

    torch.manual_seed(0)
    model = NNCLR(temperature=0.2, **TINY_NNCLR)
    bank = torch.randn(64, 16)
    model.support_set.items.copy_(F.normalize(bank, dim=1))
    ref_bank = NNMemoryBankModule(size=(64, 16))
    ref_bank.bank.copy_(bank.T if ref_bank.bank.shape == (16, 64) else bank)
    feats = [torch.randn(8, model.feat_dim).requires_grad_(True) for _ in range(2)]
    ours = model.ssl_loss(feats, [None, None])
    g_ours = torch.autograd.grad(ours, feats)

    z = [model.projector(f) for f in feats]
    p = [model.predictor(x) for x in z]
    nn0, nn1 = ref_bank(z[0].detach(), update=False), ref_bank(z[1].detach(), update=False)
    ntx = NTXentLoss(temperature=0.2)
    ref = 0.5 * (ntx(nn0, p[1]) + ntx(nn1, p[0]))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_ours, torch.autograd.grad(ref, feats)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # after the loss, the first view's projections were pushed: the batch is now its own neighbour
    assert int(model.support_set.ptr) == 8
    torch.testing.assert_close(model.support_set.nearest(z[0].detach()), F.normalize(z[0].detach(), dim=1))


def test_nnclr_trains_checkpoints_its_support_set_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = NNCLR(**TINY_NNCLR)
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model, _loader(mnist_arrays))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    state = model.state_dict()
    assert int(state["support_set.ptr"]) == 16 and state["support_set.items"].shape == (64, 16)
    trainer.save_checkpoint(tmp_path / "nnclr.ckpt")
    restored = NNCLR.load_from_checkpoint(tmp_path / "nnclr.ckpt")
    assert torch.equal(restored.support_set.items, model.support_set.items) and int(restored.support_set.ptr) == 16
    model = build_model(compose(["method=nnclr", "model.params.proj_hidden_dim=32", "model.params.pred_hidden_dim=32",
                                 "model.params.queue_size=128"]))
    assert isinstance(model, NNCLR) and model.support_set.items.shape == (128, 256)
    exp = compose(["experiment=cifar10_nnclr"])
    assert (exp.method, exp.optimizer.lr, exp.model.params.queue_size, exp.model.params.temperature) == \
        ("nnclr", 0.4, 65536, 0.2)
