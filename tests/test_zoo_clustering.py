"""DeepCluster-v2 (Caron et al., 2020, arXiv:2006.09882), ReSSL (Zheng et al., 2021, arXiv:2107.09282) and VIbCReg
(Lee & Aune, 2021, arXiv:2109.00783): the losses against solo-learn's, transcribed below from
github.com/vturrisi/solo-learn (commit 9187ea3: solo/losses/{deepclusterv2,ressl,vibcreg,vicreg}.py,
solo/utils/{kmeans,whitening}.py; lightly has none of them), and by hand; k-means and IterNorm; each method
trained through a real Trainer and built from a composed config."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autossl.data import make_dataloader
from autossl.heads.iternorm import IterNorm
from autossl.losses.deepclusterv2 import deepclusterv2_loss
from autossl.losses.ressl import ressl_loss
from autossl.losses.vibcreg import normalized_covariance, vibcreg_loss
from autossl.methods.deepclusterv2 import DeepClusterV2, spherical_kmeans
from autossl.methods.ressl import ReSSL
from autossl.methods.vibcreg import VIbCReg
from autossl.train import build_model, compose
from conftest import TINY, quiet_trainer


def _randn(*shape, seed=0, grad=False):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(grad)


def _loader(mnist_arrays):
    return make_dataloader(mnist_arrays, num_views=2, batch_size=8, image_size=16, preset="mnist", num_workers=0,
                           seed=0)


def _fit(model, mnist_arrays, tmp_path, **kw):
    trainer = quiet_trainer(tmp_path, **({"max_steps": 2} | kw))
    trainer.fit(model, _loader(mnist_arrays))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    return trainer


# ---- solo-learn, transcribed -----------------------------------------------------------------------------------
def solo_deepclusterv2_loss_func(outputs, assignments, temperature=0.1):  # solo/losses/deepclusterv2.py
    loss = 0
    for h in range(outputs.size(0)):
        scores = outputs[h].view(-1, outputs.size(-1)) / temperature
        targets = assignments[h].repeat(outputs.size(1)).to(outputs.device, non_blocking=True)
        loss += F.cross_entropy(scores, targets, ignore_index=-1)
    return loss / outputs.size(0)


def solo_ressl_loss_func(q, k, queue, temperature_q=0.1, temperature_k=0.04):  # solo/losses/ressl.py
    logits_q = torch.einsum("nc,kc->nk", [q, queue])
    logits_k = torch.einsum("nc,kc->nk", [k, queue])
    return -torch.sum(F.softmax(logits_k.detach() / temperature_k, dim=1)
                      * F.log_softmax(logits_q / temperature_q, dim=1), dim=1).mean()


def solo_vibcreg_loss_func(z1, z2, sim_loss_weight=25.0, var_loss_weight=25.0, cov_loss_weight=200.0):
    # solo/losses/vibcreg.py with invariance_loss / variance_loss from solo/losses/vicreg.py (one process: no gather)
    def covariance_loss(z1, z2):
        norm_z1 = F.normalize(z1 - z1.mean(dim=0), p=2, dim=0)
        norm_z2 = F.normalize(z2 - z2.mean(dim=0), p=2, dim=0)
        fxf_cov_z1, fxf_cov_z2 = torch.mm(norm_z1.T, norm_z1), torch.mm(norm_z2.T, norm_z2)
        fxf_cov_z1.fill_diagonal_(0.0)
        fxf_cov_z2.fill_diagonal_(0.0)
        return (fxf_cov_z1 ** 2).mean() + (fxf_cov_z2 ** 2).mean()

    sim_loss = F.mse_loss(z1, z2)
    eps = 1e-4
    std_z1, std_z2 = torch.sqrt(z1.var(dim=0) + eps), torch.sqrt(z2.var(dim=0) + eps)
    var_loss = torch.mean(F.relu(1 - std_z1)) + torch.mean(F.relu(1 - std_z2))
    return sim_loss_weight * sim_loss + var_loss_weight * var_loss + cov_loss_weight * covariance_loss(z1, z2)


def solo_iternorm_forward(X, running_mean, running_wmat, nc, T, eps, momentum):  # whitening.py, training branch
    g = X.size(1) // nc
    x = X.transpose(0, 1).contiguous().view(g, nc, -1)
    _, d, m = x.size()
    mean = x.mean(-1, keepdim=True)
    xc = x - mean
    P = [None] * (T + 1)
    P[0] = torch.eye(d).to(X).expand(g, d, d)
    Sigma = torch.baddbmm(beta=eps, input=P[0], alpha=1.0 / m, batch1=xc, batch2=xc.transpose(1, 2))
    rTr = (Sigma * P[0]).sum((1, 2), keepdim=True).reciprocal_()
    Sigma_N = Sigma * rTr
    for k in range(T):
        P[k + 1] = torch.baddbmm(beta=1.5, input=P[k], alpha=-0.5, batch1=torch.matrix_power(P[k], 3), batch2=Sigma_N)
    wm = P[T].mul_(rTr.sqrt())
    running_mean.copy_(momentum * mean + (1.0 - momentum) * running_mean)
    running_wmat.copy_(momentum * wm + (1.0 - momentum) * running_wmat)
    xn = wm.matmul(xc)
    return xn.view(X.size(1), X.size(0), *X.size()[2:]).transpose(0, 1).contiguous()


# ---- DeepCluster-v2 ----------------------------------------------------------------------------------------------
def test_deepclusterv2_loss_equals_solo_learn_and_by_hand():
    outputs = _randn(2, 2, 6, 5, seed=1, grad=True)  # heads x views x images x prototypes
    assign = torch.tensor([[0, 4, -1, 2, 2, 1], [3, 3, 0, -1, -1, 4]])
    ours = deepclusterv2_loss([list(outputs[0]), list(outputs[1])], assign, 0.1)
    ref = solo_deepclusterv2_loss_func(outputs, assign, 0.1)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, outputs)[0], torch.autograd.grad(ref, outputs)[0])
    # one head, two views of one image assigned to cluster 0: mean of -log softmax(s / T)[0] over the views
    s1, s2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    by_hand = (math.log(1 + math.exp(-1.0)) + math.log(2)) / 2
    assert deepclusterv2_loss([[s1, s2]], torch.tensor([[0]]), 1.0).item() == pytest.approx(by_hand, rel=1e-6)
    none = deepclusterv2_loss([[s1.requires_grad_(), s2]], torch.tensor([[-1]]), 1.0)  # solo-learn: nan; here 0
    assert none.item() == 0.0 and none.requires_grad


def test_spherical_kmeans_equals_solo_learn_cluster_memory():
    x = F.normalize(_randn(40, 6, seed=2), dim=1)
    ours_c, ours_a = spherical_kmeans(x, 5, iters=4, generator=torch.Generator().manual_seed(3))
    # solo/utils/kmeans.py KMeans.cluster_memory on one process, from the same initial centroids
    centroids = x[torch.randperm(40, generator=torch.Generator().manual_seed(3))[:5]]
    for n_iter in range(4 + 1):
        local_assignments = torch.mm(x, centroids.t()).max(dim=1)[1]
        if n_iter == 4:
            break
        counts, emb_sums = torch.zeros(5).int(), torch.zeros(5, 6)
        for k in range(5):
            where = (local_assignments == k).nonzero()[:, 0]
            if len(where) > 0:
                emb_sums[k], counts[k] = x[where].sum(dim=0), len(where)
        mask = counts > 0
        centroids[mask] = emb_sums[mask] / counts[mask].unsqueeze(1)
        centroids = F.normalize(centroids, dim=1, p=2)
    torch.testing.assert_close(ours_c, centroids)
    assert torch.equal(ours_a, local_assignments)


def test_deepclusterv2_fills_the_bank_then_clusters_each_epoch(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model, losses = DeepClusterV2(num_prototypes=[4, 6], memory_size=32, **TINY), []
    step = model.step
    model.step = lambda batch: (out := step(batch), losses.append(float(out["loss"])))[0]  # before the probe's
    _fit(model, mnist_arrays, tmp_path, max_steps=-1, max_epochs=2, limit_train_batches=1)
    assert losses[0] == 0.0 and losses[1] > 0  # epoch 0 only fills the bank; k-means at the start of epoch 1
    assert bool(model.clustered) and int(model.memory_filled) == 16 and model.memory.shape == (2, 32, 16)
    for h, k in enumerate((4, 6)):
        torch.testing.assert_close(model.prototypes(h).norm(dim=1), torch.ones(k))
    trained = {id(p) for g in model.param_groups() for p in g["params"]}
    assert all(id(model.prototypes(h)) not in trained for h in range(2))  # centroids are not trained
    assert "prototypes_1" in model.state_dict() and "memory" in model.state_dict()


def test_deepclusterv2_is_built_by_compose():
    model = build_model(compose(["method=deepclusterv2", "model.params.num_prototypes=8",
                                 "model.params.prototype_heads=2", "model.params.memory_size=64",
                                 "model.params.proj_hidden_dim=32"]))
    assert isinstance(model, DeepClusterV2) and model.num_heads == 2 and model.prototypes(1).shape == (8, 128)
    exp = compose(["experiment=cifar10_deepclusterv2"])
    p = exp.model.params
    assert (exp.method, exp.optimizer.lr, p.num_prototypes, p.prototype_heads, p.memory_size) == \
        ("deepclusterv2", 0.6, 3000, 3, 49920)


# ---- ReSSL -----------------------------------------------------------------------------------------------------
def test_ressl_loss_equals_solo_learn_and_by_hand():
    q, k = F.normalize(_randn(6, 8, seed=4), dim=1).requires_grad_(), F.normalize(_randn(6, 8, seed=5), dim=1)
    queue = F.normalize(_randn(20, 8, seed=6), dim=1)
    ours, ref = ressl_loss(q, k, queue, 0.1, 0.04), solo_ressl_loss_func(q, k, queue, 0.1, 0.04)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(ref, q)[0])
    # queue e1, e2; k = e1 at tau_k 1: teacher [e, 1] / (1 + e); q = e2 at tau_q 1: log softmax([0, 1])
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    t = [math.e / (1 + math.e), 1 / (1 + math.e)]
    by_hand = -(t[0] * (0 - math.log(1 + math.e)) + t[1] * (1 - math.log(1 + math.e)))
    assert ressl_loss(e2, e1, torch.eye(2), 1.0, 1.0).item() == pytest.approx(by_hand, rel=1e-6)


def test_ressl_teacher_sees_second_view_fills_queue_trains_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model, teacher = ReSSL(queue_size=32, momentum_base=0.9, **TINY), []
    model.target_backbone.register_forward_pre_hook(lambda m, a: teacher.append(a[0].shape[0]))
    before = [p.detach().clone() for p in model.target_projector.parameters()]
    _fit(model, mnist_arrays, tmp_path)
    assert teacher == [8, 8] and int(model.queue.filled) == 16  # one view per step, 2 batches of 8 queued
    torch.testing.assert_close(model.queue.items[:16].norm(dim=1), torch.ones(16))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.target_projector.parameters()))
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.projector)  # solo-learn's Linear-ReLU-Linear
    model = build_model(compose(["method=ressl", "model.params.queue_size=64", "model.params.proj_hidden_dim=32"]))
    assert isinstance(model, ReSSL) and model.queue.items.shape == (64, 256)
    exp = compose(["experiment=cifar10_ressl"])
    assert (exp.method, exp.optimizer.name, exp.optimizer.lr, exp.model.params.temperature_k) == \
        ("ressl", "sgd", 0.05, 0.04)


# ---- VIbCReg ---------------------------------------------------------------------------------------------------
def test_vibcreg_loss_equals_solo_learn_and_by_hand():
    z1, z2 = _randn(10, 6, seed=7, grad=True), _randn(10, 6, seed=8, grad=True)
    ours, ref = vibcreg_loss(z1, z2), solo_vibcreg_loss_func(z1, z2)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(torch.autograd.grad(ours, [z1, z2]), torch.autograd.grad(ref, [z1, z2])):
        torch.testing.assert_close(a, b)
    # two perfectly correlated dimensions: off-diagonal correlations 1, 1 of 4 entries
    z = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    assert normalized_covariance(z).item() == pytest.approx(0.5, rel=1e-6)
    z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])  # uncorrelated
    assert normalized_covariance(z).item() == pytest.approx(0.0, abs=1e-12)


def test_iternorm_equals_solo_learn_and_whitens():
    x = _randn(32, 8, seed=9) @ _randn(8, 8, seed=10) + 3.0
    norm = IterNorm(8, num_groups=2, T=5)
    mean, wm = norm.running_mean.clone(), norm.running_wm.clone()
    torch.testing.assert_close(norm(x), solo_iternorm_forward(x, mean, wm, norm.num_channels, 5, 1e-5, 0.1))
    torch.testing.assert_close(norm.running_mean, mean)
    torch.testing.assert_close(norm.running_wm, wm)
    out = IterNorm(8, num_groups=2, T=10)(x)  # the Newton steps approach Sigma^(-1/2): whitened groups
    for g in out.split(4, dim=1):
        g = g - g.mean(0)
        torch.testing.assert_close(g.T @ g / len(g), torch.eye(4), atol=1e-2, rtol=0)
    norm.eval()  # evaluation: the running mean and whitening matrix
    xg = x.T.reshape(2, 4, 32)
    torch.testing.assert_close(norm(x), (wm @ (xg - mean)).reshape(8, 32).T)


def test_vibcreg_trains_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = VIbCReg(iternorm_groups=4, **TINY)
    assert isinstance(model.projector[-1], IterNorm) and model.projector[-1].num_groups == 4
    _fit(model, mnist_arrays, tmp_path)
    assert not torch.equal(model.projector[-1].running_wm, torch.eye(4).expand(4, 4, 4))
    model = build_model(compose(["method=vibcreg", "model.params.proj_hidden_dim=32",
                                 "model.params.proj_output_dim=64"]))
    assert isinstance(model, VIbCReg) and model.projector[-1].num_groups == 64
    exp = compose(["experiment=cifar10_vibcreg"])
    assert (exp.method, exp.optimizer.lr, exp.model.params.cov_weight, exp.model.params.iternorm) == \
        ("vibcreg", 0.3, 200.0, True)
