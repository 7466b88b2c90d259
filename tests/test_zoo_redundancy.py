"""TiCo, MMCR, W-MSE and EMP-SSL: each loss by hand on a toy and against lightly (value and gradient; EMP-SSL
against the reference's sign, see losses/emp.py), TiCo's checkpointed covariance and EMA target; every method
trained through a real Trainer on 2 views (and 4 for the many-view methods) and built from a composed config."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autossl.data import make_dataloader
from autossl.losses.emp import coding_rate, emp_ssl_loss, patch_invariance
from autossl.losses.mmcr import mmcr_loss
from autossl.losses.tico import tico_loss
from autossl.losses.wmse import whiten, wmse_loss
from autossl.methods.empssl import EMPSSL
from autossl.methods.mmcr import MMCR
from autossl.methods.tico import TiCo
from autossl.methods.wmse import WMSE
from autossl.train import build_model, compose
from conftest import TINY, quiet_trainer


def _views(n, batch=8, dim=16, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g).requires_grad_(grad) for _ in range(n)]


def _loader(mnist_arrays, num_views=2):
    return make_dataloader(mnist_arrays, num_views=num_views, batch_size=8, image_size=16, preset="mnist",
                           num_workers=0, seed=0)


def _fit(model, mnist_arrays, tmp_path, num_views=2, online_views=None):
    images = []
    model.backbone.register_forward_pre_hook(lambda m, a: images.append(len(a[0])))
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model, _loader(mnist_arrays, num_views))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert images[0] == 8 * (online_views or num_views)  # the views the online backbone sees, in one pass
    return trainer


def _close_with_grads(ours, ref, inputs, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol)
    for a, b in zip(torch.autograd.grad(ours, inputs, retain_graph=True), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---- TiCo ------------------------------------------------------------------------------------------------------
def test_tico_loss_by_hand():
    # z_a = I (normalised), z_b = [[1, 0], [1, 0]]: B = I / 2, C' = 0.5 * 0 + 0.5 * I / 2 = I / 4
    z_a, z_b = torch.tensor([[2.0, 0.0], [0.0, 3.0]]), torch.tensor([[1.0, 0.0], [5.0, 0.0]])
    loss, cov = tico_loss(z_a, z_b, torch.zeros(2, 2), beta=0.5, rho=8.0)
    invariance = 1 - (1 + 0) / 2
    contrast = 8.0 * (0.25 + 0.25) / 2  # z^T C' z = 1/4 for both unit rows
    assert loss.item() == pytest.approx(invariance + contrast) and loss.item() == pytest.approx(2.5)
    torch.testing.assert_close(cov, torch.eye(2) / 4)


def test_tico_loss_value_gradient_and_covariance_equal_lightly_over_two_steps():
    from lightly.loss import TiCoLoss

    ref, cov = TiCoLoss(beta=0.9, rho=8.0), torch.zeros(16, 16)
    for seed in (1, 2):  # the second step reads the covariance the first one left
        z_a, z_b = _views(2, seed=seed)
        ours, new_cov = tico_loss(z_a, z_b, cov, beta=0.9, rho=8.0)
        _close_with_grads(ours, ref(z_a, z_b), [z_a, z_b])
        torch.testing.assert_close(new_cov, ref.C)
        cov = new_cov


def test_tico_trains_checkpoints_its_covariance_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = TiCo(momentum_base=0.9, **TINY)
    target_before = [p.detach().clone() for p in model.target_projector.parameters()]
    trainer = _fit(model, mnist_arrays, tmp_path, online_views=1)  # the EMA target sees the second view
    assert model.cov.abs().sum() > 0 and torch.allclose(model.cov, model.cov.T, atol=1e-6)  # a second moment
    assert any(not torch.equal(a, b) for a, b in zip(target_before, model.target_projector.parameters()))  # EMA
    assert [id(t) for _, t in model.momentum_pairs] == [id(model.target_backbone), id(model.target_projector)]
    trainer.save_checkpoint(tmp_path / "tico.ckpt")
    assert torch.equal(TiCo.load_from_checkpoint(tmp_path / "tico.ckpt").cov, model.cov)
    model = build_model(compose(["method=tico", "model.params.proj_hidden_dim=32", "model.params.proj_output_dim=8"]))
    assert isinstance(model, TiCo) and model.cov.shape == (8, 8) and model.cfg["rho"] == 8.0
    exp = compose(["experiment=cifar10_tico"])
    assert (exp.method, exp.optimizer.lr, exp.model.params.beta, exp.model.params.momentum_base) == \
        ("tico", 0.6, 0.9, 0.996)


# ---- MMCR ------------------------------------------------------------------------------------------------------
def test_mmcr_loss_by_hand():
    # image 0: views e1, e1 -> centroid e1; image 1: views e2, e1 -> centroid (1/2, 1/2).
    # For a 2x2 matrix ||C||_* = sqrt(tr(C C^T) + 2 |det C|) = sqrt(1.5 + 2 * 0.5)
    e1, e2 = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 0.5])  # normalised inside
    views = [torch.stack([e1, e2]), torch.stack([e1, e1])]
    assert mmcr_loss(views).item() == pytest.approx(-math.sqrt(2.5), rel=1e-6)
    # local term: ||[e1; e1]||_* = sqrt(2), ||[e2; e1]||_* = 2, averaged over the 2 images
    assert mmcr_loss(views, lmda=0.1).item() == pytest.approx(-math.sqrt(2.5) + 0.1 * (math.sqrt(2) + 2) / 2, rel=1e-6)
    # views that agree on orthogonal images: C = I, the loss is at its minimum -min(B, D)
    assert mmcr_loss([torch.eye(2), torch.eye(2)]).item() == pytest.approx(-2.0)


@pytest.mark.parametrize("lmda", [0.0, 5e-3])
def test_mmcr_loss_value_and_gradient_equal_lightly(lmda):
    from lightly.loss import MMCRLoss

    views = _views(4, seed=3)
    ours = mmcr_loss(views, lmda=lmda)
    normed = [F.normalize(v, dim=1) for v in views]  # lightly expects normalised embeddings
    ref = MMCRLoss(lmda=lmda)(torch.stack(normed[:2], dim=1), torch.stack(normed[2:], dim=1))
    _close_with_grads(ours, ref, views)
    stacked = torch.stack([v.detach() for v in views], dim=1)  # [B, K, D] is accepted too
    torch.testing.assert_close(mmcr_loss(stacked, lmda=lmda), ours.detach())


def test_mmcr_trains_on_two_and_four_views_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    _fit(MMCR(**TINY), mnist_arrays, tmp_path)
    _fit(MMCR(num_views=4, **TINY), mnist_arrays, tmp_path, num_views=4)
    model = build_model(compose(["method=mmcr", "data.num_views=4", "model.params.proj_hidden_dim=32"]))
    assert isinstance(model, MMCR) and model.hparams.num_views == 4 and model.cfg["lmda"] == 0.0
    exp = compose(["experiment=cifar10_mmcr"])
    assert (exp.method, exp.data.num_views, exp.data.batch_size, exp.optimizer.name) == ("mmcr", 40, 32, "adamw")


# ---- W-MSE -----------------------------------------------------------------------------------------------------
def test_whitening_gives_zero_mean_identity_covariance_and_wmse_by_hand():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 4, generator=g, dtype=torch.float64) + 3
    w = whiten(x)
    torch.testing.assert_close(w.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(w.T @ w / 15, torch.eye(4, dtype=torch.float64), atol=1e-10, rtol=0)
    # 1-D, 2 samples: x - mean = [-1, 1] (resp. [-2, 2], [2, -2]), whitened to +-1/sqrt(2), then normalised to
    # signs: equal signs give 2 - 2 * 1 = 0, opposite ones 2 - 2 * (-1) = 4
    a, b, c = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [4.0]]), torch.tensor([[4.0], [0.0]])
    torch.testing.assert_close(whiten(a), torch.tensor([[-1.0], [1.0]]) / math.sqrt(2))
    assert wmse_loss([a, b], w_size=2).item() == pytest.approx(0.0, abs=1e-6)
    assert wmse_loss([a, c], w_size=2).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="more than 4 samples"):
        whiten(torch.randn(4, 4))


@pytest.mark.parametrize("num_views,w_iter", [(2, 1), (3, 2)])
def test_wmse_loss_value_and_gradient_equal_lightly(num_views, w_iter):
    from lightly.loss import WMSELoss

    views = _views(num_views, batch=32, dim=4, seed=5)
    torch.manual_seed(7)  # both draw their sub-batch permutations from the global generator
    ours = wmse_loss(views, w_size=16, w_iter=w_iter)
    torch.manual_seed(7)
    ref = WMSELoss(embedding_dim=4, w_size=16, w_iter=w_iter, num_samples=num_views)(torch.cat(views))
    _close_with_grads(ours, ref, views)
    # a batch that is not a multiple of w_size: the remainder joins the last sub-batch instead of failing
    assert torch.isfinite(wmse_loss(_views(2, batch=20, dim=4, grad=False), w_size=8))


def test_wmse_trains_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    _fit(WMSE(**dict(TINY, proj_output_dim=4), w_size=8), mnist_arrays, tmp_path)  # batches of 8, 4-dim embeddings
    model = build_model(compose(["method=wmse", "model.params.proj_hidden_dim=32"]))
    assert isinstance(model, WMSE) and model.cfg["w_size"] == 128 and model.projector[-1].out_features == 64
    exp = compose(["experiment=cifar10_wmse"])
    assert (exp.method, exp.optimizer.lr, exp.model.params.proj_output_dim, exp.model.params.w_size) == \
        ("wmse", 2e-3, 64, 128)


# ---- EMP-SSL ---------------------------------------------------------------------------------------------------
def test_emp_ssl_loss_by_hand():
    # 2 views of 2 images, Z = I in both: R = 1/2 logdet((1 + 2 / (2 eps)) I) = log(1 + 1 / eps); views agree: cos = 1
    z = [torch.eye(2), torch.eye(2)]
    eps, lam = 0.2, 3.0
    assert emp_ssl_loss(z, tcr_eps=eps, inv_coef=lam).item() == pytest.approx(-math.log(1 + 1 / eps) - lam, rel=1e-6)
    # two views at 90 degrees: each is at 45 degrees to their mean
    assert patch_invariance(torch.stack([torch.eye(2), torch.eye(2).flip(1)])).item() == pytest.approx(math.sqrt(0.5))


def test_emp_ssl_loss_equals_the_reference_and_lightlys_terms():
    from lightly.loss import EMPSSLLoss
    from lightly.loss.emp_ssl_loss import invariance_loss, tcr_loss

    views = [F.normalize(v, dim=1).detach().requires_grad_(True) for v in _views(5, seed=6)]
    ours = emp_ssl_loss(views, tcr_eps=0.2, inv_coef=200.0)
    z = torch.stack(views)
    # reference (tsb0601/EMP-SSL, loss.py TotalCodingRate and main.py): -1/2 logdet(I + p / (m eps) W W^T) per
    # patch set with W = Z^T [p, m], averaged; minus 200 times the mean cosine to the patch average
    tcr = sum(-0.5 * torch.logdet(torch.eye(16) + 16 / (8 * 0.2) * v.T @ v) for v in views) / len(views)
    sim = sum(F.cosine_similarity(v, z.mean(0), dim=1).mean() for v in views) / len(views)
    _close_with_grads(ours, tcr - 200.0 * sim, views)
    # lightly 1.6 has the same invariance term but adds +R where the reference adds -R (losses/emp.py)
    _close_with_grads(ours, 200.0 * invariance_loss(z) - tcr_loss(z, eps=0.2), views)
    torch.testing.assert_close(EMPSSLLoss(tcr_eps=0.2, inv_coef=200.0)(views), ours + 2 * tcr_loss(z, eps=0.2))
    torch.testing.assert_close(coding_rate(z, 0.2).mean(), tcr_loss(z, eps=0.2))


def test_redundancy_losses_run_under_bf16_autocast():
    views = _views(4, batch=16, dim=4, seed=8, grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = [v.bfloat16() for v in views]
        got = [mmcr_loss(low), wmse_loss(low, w_size=16), emp_ssl_loss([F.normalize(v, dim=1) for v in low]),
               tico_loss(low[0], low[1], torch.zeros(4, 4))[0]]
    want = [mmcr_loss(views), wmse_loss(views, w_size=16), emp_ssl_loss([F.normalize(v, dim=1) for v in views]),
            tico_loss(views[0], views[1], torch.zeros(4, 4))[0]]
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and g.item() == pytest.approx(w.item(), rel=0.05, abs=0.05)


def test_empssl_trains_on_two_and_four_views_and_is_built_by_compose(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    _fit(EMPSSL(**TINY), mnist_arrays, tmp_path)
    _fit(EMPSSL(num_views=4, **TINY), mnist_arrays, tmp_path, num_views=4)
    model = build_model(compose(["method=empssl", "data.num_views=4", "model.params.proj_hidden_dim=32",
                                 "model.params.proj_output_dim=16"]))
    assert isinstance(model, EMPSSL) and model.cfg["inv_coef"] == 200.0 and model.cfg["tcr_eps"] == 0.2
    exp = compose(["experiment=cifar10_empssl"])
    assert (exp.method, exp.data.num_views, exp.data.batch_size, exp.optimizer.lr) == ("empssl", 20, 100, 0.768)
