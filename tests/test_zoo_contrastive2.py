"""DCL, DCLW, SupCon, NNBYOL, NNSiam and FastSiam: the losses by hand and against lightly (SupCon against the
reference SupContrast code, transcribed), the nearest-neighbour targets against lightly's memory bank, FastSiam
against SimSiam and lightly's example; every method trained through a real Trainer on 2 views (FastSiam also 4)
and built from a composed config."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autossl.data import make_dataloader
from autossl.data.batch import Batch
from autossl.losses import nt_xent_loss
from autossl.losses.dcl import dcl_loss, dclw_loss
from autossl.losses.supcon import supcon_loss
from autossl.methods.dcl import DCL
from autossl.methods.dclw import DCLW
from autossl.methods.fastsiam import FastSiam
from autossl.methods.nnbyol import NNBYOL
from autossl.methods.nnsiam import NNSiam
from autossl.methods.simsiam import SimSiam
from autossl.methods.supcon import SupCon
from autossl.train import build_model, compose
from conftest import TINY, quiet_trainer

TINY_NN = dict(TINY, queue_size=64)


def _views(n, batch=8, dim=16, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g).requires_grad_(grad) for _ in range(n)]


def _fit(model, mnist_arrays, tmp_path, num_views=2):
    images = []
    model.backbone.register_forward_pre_hook(lambda m, a: images.append(len(a[0])))
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model, make_dataloader(mnist_arrays, num_views=num_views, batch_size=8, image_size=16,
                                       preset="mnist", num_workers=0, seed=0))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert images[0] == 8 * num_views  # every view through the online backbone in one pass
    return trainer


def _close_with_grads(ours, ref, inputs, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol)
    for a, b in zip(torch.autograd.grad(ours, inputs, retain_graph=True), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---- DCL / DCLW ----------------------------------------------------------------------------------------------
def test_dcl_and_dclw_by_hand():
    r = 1 / math.sqrt(2)
    z_a, z_b = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # b1 = (r, r)
    # per anchor: -<z_i, z_i'> + log(sum over the 2 negatives, the positive excluded); t = 1
    a_terms = [(1.0, math.log(1 + math.exp(r))), (r, math.log(2))]  # a0: negs <a0,a1>=0, <a0,b1>=r; a1: 0, 0
    b_terms = [(1.0, math.log(math.exp(r) + 1)), (r, math.log(2 * math.exp(r)))]  # b0: r, 0; b1: r, r
    dcl = 0.5 * (sum(-p + n for p, n in a_terms) / 2 + sum(-p + n for p, n in b_terms) / 2)
    assert dcl_loss(z_a, z_b, temperature=1.0).item() == pytest.approx(dcl, rel=1e-6)
    # DCLW (sigma = 1): w = 2 - 2 softmax([1, r]) on the positive terms, the same in both directions
    w = [2 - 2 * math.exp(s) / (math.exp(1.0) + math.exp(r)) for s in (1.0, r)]
    dclw = 0.5 * sum(sum(-wi * p + n for wi, (p, n) in zip(w, terms)) / 2 for terms in (a_terms, b_terms))
    assert dclw_loss(z_a, z_b, temperature=1.0, sigma=1.0).item() == pytest.approx(dclw, rel=1e-6)
    # NT-Xent keeps the positive in the denominator: DCL is smaller by exactly that term's share
    assert nt_xent_loss(z_a, z_b, temperature=1.0).item() > dcl


@pytest.mark.parametrize("weighted", [False, True])
def test_dcl_losses_value_and_gradient_equal_lightly(weighted):
    from lightly.loss import DCLLoss, DCLWLoss

    z_a, z_b = _views(2, seed=1)
    if weighted:
        ours, ref = dclw_loss(z_a, z_b, 0.2, sigma=0.5), DCLWLoss(temperature=0.2, sigma=0.5)(z_a, z_b)
    else:
        ours, ref = dcl_loss(z_a, z_b, 0.2), DCLLoss(temperature=0.2)(z_a, z_b)
    _close_with_grads(ours, ref, [z_a, z_b])


@pytest.mark.parametrize("cls", [DCL, DCLW])
def test_dcl_and_dclw_train_and_are_built_by_compose(cls, mnist_arrays, tmp_path):
    torch.manual_seed(0)
    _fit(cls(**TINY), mnist_arrays, tmp_path)
    model = build_model(compose([f"method={cls.name}", "model.params.proj_hidden_dim=32"]))
    assert type(model) is cls and model.cfg["temperature"] == 0.1
    exp = compose([f"experiment=cifar10_{cls.name}"])
    assert (exp.method, exp.optimizer.lr, exp.model.params.temperature) == (cls.name, 0.4, 0.1)
    assert cls is DCL or (model.cfg["sigma"] == 0.5 and exp.model.params.sigma == 0.5)


# ---- SupCon --------------------------------------------------------------------------------------------------
def _supcontrast_reference(features, labels, temperature):
    """HobbitLong/SupContrast, losses.py `SupConLoss.forward` (contrast_mode='all', base_temperature =
    temperature), transcribed: features [bsz, n_views, D] normalised, labels [bsz]."""
    bsz, n_views = features.shape[:2]
    mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).float()
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = contrast @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    mask = mask.repeat(n_views, n_views)
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(bsz * n_views).view(-1, 1), 0)
    mask = mask * logits_mask
    log_prob = logits - torch.log((torch.exp(logits) * logits_mask).sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return -(mean_log_prob_pos).view(n_views, bsz).mean()


def test_supcon_loss_by_hand():
    # two images e1, e2, two identical views each; t = 1. Anchor e1 (view 0) sees e2, e1', e2' at sims 0, 1, 0
    z = [torch.eye(2), torch.eye(2)]
    same_class = math.log(math.e + 2) - (1 + 0 + 0) / 3  # positives: e1' (sim 1) and both views of e2 (sim 0)
    other_class = math.log(math.e + 2) - 1  # the only positive is e1'
    assert supcon_loss(z, torch.tensor([3, 3]), 1.0).item() == pytest.approx(same_class, rel=1e-6)
    assert supcon_loss(z, torch.tensor([3, 4]), 1.0).item() == pytest.approx(other_class, rel=1e-6)
    assert supcon_loss(z, torch.tensor([-1, -1]), 1.0).item() == pytest.approx(other_class, rel=1e-6)  # unlabelled
    assert supcon_loss(z, None, 1.0).item() == pytest.approx(other_class, rel=1e-6)


@pytest.mark.parametrize("num_views", [2, 3])
def test_supcon_loss_value_and_gradient_equal_the_reference(num_views):
    views = _views(num_views, seed=2)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0])
    ours = supcon_loss(views, labels, 0.2)
    ref = _supcontrast_reference(torch.stack([F.normalize(v, dim=1) for v in views], dim=1), labels, 0.2)
    _close_with_grads(ours, ref, views)
    # partly labelled: an unlabelled image is a class of its own
    part = torch.tensor([0, -1, 0, -1, 1, 1, -1, 0])
    ids = torch.where(part >= 0, part, 100 + torch.arange(8))
    ref = _supcontrast_reference(torch.stack([F.normalize(v, dim=1) for v in views], dim=1), ids, 0.2)
    _close_with_grads(supcon_loss(views, part, 0.2), ref, views)


def test_supcon_without_labels_is_simclr():
    z_a, z_b = _views(2, seed=3)
    _close_with_grads(supcon_loss([z_a, z_b], None, 0.3), nt_xent_loss(z_a, z_b, 0.3), [z_a, z_b])
    torch.testing.assert_close(supcon_loss([z_a, z_b], torch.full((8,), -1), 0.3), supcon_loss([z_a, z_b], None, 0.3))


def test_supcon_uses_batch_labels_trains_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = SupCon(**TINY).eval()  # eval: BN statistics do not move between the three calls
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)]
    with torch.no_grad():
        none, unlabelled, labelled = (model.step(Batch(views, y))["loss"] for y in
                                      (None, torch.full((4,), -1), torch.tensor([0, 0, 1, 1])))
    assert none.item() == pytest.approx(unlabelled.item(), rel=1e-6) and labelled.item() != pytest.approx(none.item())
    _fit(SupCon(**TINY), mnist_arrays, tmp_path)  # MNIST batches carry labels
    model = build_model(compose(["method=supcon", "model.params.proj_hidden_dim=32"]))
    assert isinstance(model, SupCon) and model.cfg["temperature"] == 0.2
    exp = compose(["experiment=cifar10_supcon"])
    assert (exp.method, exp.optimizer.name, exp.optimizer.lr, exp.model.params.temperature) == \
        ("supcon", "sgd", 0.4, 0.2)


# ---- NNBYOL / NNSiam -----------------------------------------------------------------------------------------
def _lightly_bank(bank):
    from lightly.models.modules import NNMemoryBankModule

    ref = NNMemoryBankModule(size=tuple(bank.shape))
    ref.bank.copy_(bank.T if ref.bank.shape == bank.T.shape else bank)
    return ref


def test_nnbyol_predicts_the_targets_nearest_neighbours_as_lightly():
    from lightly.loss import NegativeCosineSimilarity

    torch.manual_seed(0)
    model = NNBYOL(**TINY_NN)
    bank = torch.randn(64, 16)
    model.support_set.items.copy_(F.normalize(bank, dim=1))
    t0, t1 = _views(2, seed=4, grad=False)
    model.encode_target = lambda views: [t0, t1]  # the momentum branch's projections
    feats = [torch.randn(8, model.feat_dim).requires_grad_(True) for _ in range(2)]
    ours = model.ssl_loss(feats, [None, None])
    ref_bank, crit = _lightly_bank(bank), NegativeCosineSimilarity()
    p = [model.predictor(model.projector(f)) for f in feats]
    ref = 0.5 * (crit(p[0], ref_bank(t1, update=False)) + crit(p[1], ref_bank(t0, update=False)))
    _close_with_grads(ours, ref, feats)
    assert int(model.support_set.ptr) == 8  # the first view's targets were pushed
    torch.testing.assert_close(model.support_set.nearest(t0), F.normalize(t0, dim=1))


def test_nnsiam_predicts_the_other_views_nearest_neighbours_as_lightly():
    from lightly.loss import NegativeCosineSimilarity

    torch.manual_seed(0)
    model = NNSiam(**TINY_NN)
    assert len([m for m in model.projector if isinstance(m, torch.nn.Linear)]) == 3  # solo-learn's NNSiam
    bank = torch.randn(64, 16)
    model.support_set.items.copy_(F.normalize(bank, dim=1))
    feats = [torch.randn(8, model.feat_dim).requires_grad_(True) for _ in range(2)]
    ours = model.ssl_loss(feats, [None, None])
    z = [model.projector(f) for f in feats]
    p = [model.predictor(x) for x in z]
    ref_bank, crit = _lightly_bank(bank), NegativeCosineSimilarity()
    nn0, nn1 = ref_bank(z[0].detach(), update=False), ref_bank(z[1].detach(), update=False)
    _close_with_grads(ours, 0.5 * (crit(p[0], nn1) + crit(p[1], nn0)), feats)
    assert int(model.support_set.ptr) == 8


@pytest.mark.parametrize("cls", [NNBYOL, NNSiam])
def test_nn_methods_train_fill_their_support_set_and_are_built_by_compose(cls, mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = cls(**TINY_NN)
    _fit(model, mnist_arrays, tmp_path)
    assert int(model.state_dict()["support_set.ptr"]) == 16  # 2 steps of 8, checkpointed with the model
    model = build_model(compose([f"method={cls.name}", "model.params.proj_hidden_dim=32",
                                 "model.params.pred_hidden_dim=32", "model.params.queue_size=128"]))
    assert type(model) is cls and model.support_set.items.shape[0] == 128
    exp = compose([f"experiment=cifar10_{cls.name}"])
    assert (exp.method, exp.model.params.queue_size, exp.optimizer.lr) == \
        (cls.name, 65536, 1.0 if cls is NNBYOL else 0.5)


# ---- FastSiam ------------------------------------------------------------------------------------------------
def test_fastsiam_with_two_views_is_simsiam():
    torch.manual_seed(0)
    fast = FastSiam(**TINY)
    simsiam = SimSiam(**TINY)
    simsiam.load_state_dict(fast.state_dict())
    feats = _views(2, dim=fast.feat_dim, seed=5)
    _close_with_grads(fast.ssl_loss(feats, [None] * 2), simsiam.ssl_loss(feats, [None] * 2), feats)


def test_fastsiam_targets_the_mean_of_the_other_views_as_lightlys_example():
    from lightly.loss import NegativeCosineSimilarity

    torch.manual_seed(0)
    model = FastSiam(**TINY)
    feats = _views(4, dim=model.feat_dim, seed=6)
    ours = model.ssl_loss(feats, [None] * 4)
    # lightly examples/pytorch/fastsiam.py, transcribed: loss += criterion(p_i, mean(z_j, j != i)) / K
    zs = torch.stack([model.projector(f).detach() for f in feats])
    ps = [model.predictor(model.projector(f)) for f in feats]
    crit, ref = NegativeCosineSimilarity(), 0.0
    for i in range(4):
        ref = ref + crit(ps[i], zs[torch.arange(4) != i].mean(0)) / 4
    _close_with_grads(ours, ref, feats)


def test_fastsiam_trains_on_two_and_four_views_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    _fit(FastSiam(**TINY), mnist_arrays, tmp_path)
    _fit(FastSiam(num_views=4, **TINY), mnist_arrays, tmp_path, num_views=4)
    model = build_model(compose(["method=fastsiam", "data.num_views=4", "model.params.proj_hidden_dim=32",
                                 "model.params.proj_output_dim=16"]))
    assert isinstance(model, FastSiam) and model.hparams.num_views == 4
    exp = compose(["experiment=cifar10_fastsiam"])
    assert (exp.method, exp.data.num_views, exp.optimizer.lr) == ("fastsiam", 4, 0.5)
