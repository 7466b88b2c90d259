"""LeJEPA: the Epps-Pulley statistic by hand (plain-Python trapezoid, the closed-form integral, the paper's
listing), SIGReg and the whole loss against lightly in value and gradient with the same slices, SIGReg small
for Gaussian samples and large for collapsed ones, the slices' generator, bf16, real 2-process DDP; the method
trained through a real Trainer on 2 views and on 2 global + 2 local crops, resumed with the same bits, and
built from a composed config."""
from __future__ import annotations

import cmath
import math
import os

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from autossl.data import make_dataloader
from autossl.losses.lejepa import epps_pulley, lejepa_loss, lejepa_prediction_loss, sigreg, slice_directions
from autossl.methods.lejepa import LeJEPA
from autossl.train import build_model, compose
from conftest import TINY, free_port, quiet_trainer
from test_exact_resume import SaveAt, _assert_same_bits, _state

TINY_LE = dict(TINY, num_slices=64)


def _views(n, batch=8, dim=16, seed=0, grad=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(n)]


def _close_with_grads(ours, ref, inputs, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol)
    for a, b in zip(torch.autograd.grad(ours, inputs, retain_graph=True), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---- SIGReg by hand -----------------------------------------------------------------------------------------
def _ep_trapezoid(xs, t_max, points):
    """N * trapezoid over `points` equally spaced t in [-t_max, t_max] of |ecf(t) - phi(t)|^2 phi(t), plain Python."""
    ts = [-t_max + 2 * t_max * i / (points - 1) for i in range(points)]
    f = [abs(sum(cmath.exp(1j * t * x) for x in xs) / len(xs) - math.exp(-t * t / 2)) ** 2 * math.exp(-t * t / 2)
         for t in ts]
    return len(xs) * sum((a + b) / 2 * (ts[1] - ts[0]) for a, b in zip(f, f[1:]))


def _ep_closed_form(xs):
    """N * the integral over the whole line: E|ecf|^2, cross and Gaussian terms are Gaussian integrals
    (int cos(t d) e^{-t^2/2} = sqrt(2 pi) e^{-d^2/2}, int cos(t x) e^{-t^2} = sqrt(pi) e^{-x^2/4})."""
    n = len(xs)
    ecf2 = math.sqrt(2 * math.pi) * sum(math.exp(-(a - b) ** 2 / 2) for a in xs for b in xs) / n ** 2
    cross = 2 * math.sqrt(math.pi) * sum(math.exp(-x * x / 4) for x in xs) / n
    return n * (ecf2 - cross + math.sqrt(2 * math.pi / 3))


def test_epps_pulley_along_a_fixed_direction_by_hand():
    # the points project onto e1 as [-1, 1, 0.5]; the second coordinate is ignored
    z = torch.tensor([[-1.0, 5.0], [1.0, -2.0], [0.5, 0.3]], dtype=torch.float64)
    e1 = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    xs = [-1.0, 1.0, 0.5]
    # 17 knots on [0, 3], mirrored = the plain trapezoid on 33 points of [-3, 3]
    assert sigreg(z, e1).item() == pytest.approx(_ep_trapezoid(xs, 3.0, 33), rel=1e-12)
    # a fine grid converges to the closed-form integral over the whole line
    assert sigreg(z, e1, t_max=10.0, knots=2001).item() == pytest.approx(_ep_closed_form(xs), rel=1e-6)
    # the default grid stops at t = 3 and misses 5% here: the integral over |t| > 3 (scipy's quad) is 0.0113 of 0.240
    assert sigreg(z, e1).item() == pytest.approx(_ep_closed_form(xs) - 0.0113, abs=1e-3)
    # a direction at 45 degrees sees (x + y) / sqrt(2)
    diag = torch.tensor([[1.0], [1.0]], dtype=torch.float64) / math.sqrt(2)
    along_diag = [4 / math.sqrt(2), -1 / math.sqrt(2), 0.8 / math.sqrt(2)]
    assert sigreg(z, diag).item() == pytest.approx(_ep_trapezoid(along_diag, 3.0, 33), rel=1e-12)


def test_sigreg_equals_the_papers_listing_with_its_grid():
    # the paper's SIGReg listing (complex ECF, torch.trapz on linspace(-5, 5, 17)), transcribed, on the same slices
    z = _views(1, batch=32, dim=8, seed=1, grad=False, dtype=torch.float64)[0]
    a = slice_directions(8, 16, torch.Generator().manual_seed(2)).double()
    t = torch.linspace(-5, 5, 17, dtype=torch.float64)
    exp_f = torch.exp(-0.5 * t ** 2)
    x_t = (z @ a).unsqueeze(2) * t
    ecf = (1j * x_t).exp().mean(0)
    err = (ecf - exp_f).abs().square().mul(exp_f)
    listing = (torch.trapz(err, t, dim=1) * z.size(0)).mean()
    torch.testing.assert_close(sigreg(z, a, t_max=5.0, knots=9), listing, rtol=1e-12, atol=0)


def test_prediction_loss_pulls_every_view_to_the_global_mean_by_hand():
    g0, g1, loc = torch.tensor([[0.0, 2.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[4.0, 1.0]])
    # center (1, 1): squared differences g0 (1, 1), g1 (1, 1), local (9, 0), averaged over 3 views x 2 dims
    assert lejepa_prediction_loss([g0, g1, loc], num_global=2).item() == pytest.approx(13 / 6)
    # the local view is no target: with it as a "global" view the center moves to (2, 1)
    assert lejepa_prediction_loss([g0, g1, loc], num_global=3).item() == pytest.approx((5 + 1 + 4) / 6)
    with pytest.raises(ValueError, match="num_global"):
        lejepa_prediction_loss([g0, g1], num_global=0)


# ---- against lightly ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_local", [0, 2])
def test_lejepa_loss_value_and_gradient_equal_lightly(num_local):
    from lightly.loss.lejepa_loss import LeJEPALoss, SIGReg, lejepa_invariance_loss

    views = _views(2 + num_local, seed=3)
    views = [v * 0.7 + 0.2 for v in views[:2]] + views[2:]  # not already N(0, 1)
    torch.manual_seed(5)  # both draw [dim, M] normals from the global generator and normalise the columns
    ours = lejepa_loss(views, num_global=2, lambd=0.05, num_slices=256)
    torch.manual_seed(5)
    if num_local:
        ref = LeJEPALoss(lambda_param=0.05, sigreg_num_vectors=256)(local_proj=torch.stack(views[2:]),
                                                                    global_proj=torch.stack(views[:2]))
    else:  # lightly's LeJEPALoss needs a local view: its two terms, combined as it does
        z = torch.stack(views)
        ref = 0.05 * SIGReg(num_vectors=256)(z) + 0.95 * lejepa_invariance_loss(all_proj=z, global_proj=z)
    _close_with_grads(ours.loss, ref, views)
    # the same slices: ours from the global generator, lightly's from its _generate_unit_vectors
    torch.manual_seed(7)
    a = slice_directions(16, 256)
    torch.manual_seed(7)
    lightly_slices = SIGReg(num_vectors=256)._generate_unit_vectors(torch.device("cpu"), torch.float32, 16)
    torch.testing.assert_close(a, lightly_slices)
    # and SIGReg alone, given those slices
    torch.manual_seed(7)
    _close_with_grads(sigreg(views, a), SIGReg(num_vectors=256)(torch.stack(views)), views)


# ---- properties ---------------------------------------------------------------------------------------------
def test_sigreg_is_small_for_gaussian_samples_and_large_for_collapsed_ones():
    g = torch.Generator().manual_seed(0)
    a = slice_directions(32, 256, g)
    gauss = torch.randn(512, 32, generator=g)
    # under H0, E[N |ecf - phi|^2] = 1 - phi^2: the expected statistic is int_{-3}^{3} (1 - e^{-t^2}) e^{-t^2/2} = 1.053
    # (0.8-1.15 over six seeds of this sample size)
    assert 0.6 < sigreg(gauss, a).item() < 1.5
    collapsed = {"a point": torch.ones(512, 32) * 0.3, "a line": torch.randn(512, 1, generator=g) * torch.ones(32),
                 "shrunk": gauss * 0.1, "shifted": gauss + 1.0, "one-signed": gauss.abs()}
    for name, z in collapsed.items():
        assert sigreg(z, a).item() > 20, name  # the statistic grows with N when the sample is not Gaussian
    # and minimising SIGReg alone from a near-collapse spreads the embeddings out
    z = (torch.randn(256, 8, generator=g) * 0.01).requires_grad_()
    opt = torch.optim.Adam([z], lr=0.05)
    start = sigreg(z, slice_directions(8, 64, g)).item()
    for _ in range(60):
        opt.zero_grad()
        sigreg(z, slice_directions(8, 64, g)).backward()
        opt.step()
    assert sigreg(z, slice_directions(8, 64, g)).item() < start / 10 and 0.5 < z.detach().std().item() < 1.5


def test_slices_come_from_the_global_generator_or_the_callers():
    views = _views(3, grad=False)
    torch.manual_seed(1)
    first = lejepa_loss(views, 2).loss
    torch.manual_seed(1)
    assert torch.equal(lejepa_loss(views, 2).loss, first)  # the global generator's state decides the slices
    state = torch.get_rng_state()
    mine = lejepa_loss(views, 2, generator=torch.Generator().manual_seed(1)).loss
    assert torch.equal(torch.get_rng_state(), state)  # a caller's generator leaves the global one alone
    assert torch.equal(mine, lejepa_loss(views, 2, generator=torch.Generator().manual_seed(1)).loss)
    a = slice_directions(16, 32, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.norm(dim=0), torch.ones(32))
    assert torch.equal(lejepa_loss(views, 2, directions=a).loss, lejepa_loss(views, 2, directions=a).loss)
    with pytest.raises(ValueError, match="lambd"):
        lejepa_loss(views, 2, lambd=1.5)


def test_lejepa_loss_runs_under_bf16_autocast_in_float32():
    views = _views(4, batch=16, grad=False)
    a = slice_directions(16, 64, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = lejepa_loss([v.bfloat16() for v in views], 2, directions=a)
    want = lejepa_loss(views, 2, directions=a)
    assert low.loss.dtype == torch.float32 and low.loss.item() == pytest.approx(want.loss.item(), rel=0.02)


# ---- DDP: the slices and the statistic are the global batch's ------------------------------------------------
WORLD, PER_RANK = 2, 6


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        views = _views(3, batch=WORLD * PER_RANK, dim=8, seed=4, grad=False, dtype=torch.float64)
        mine = [v[rank * PER_RANK:(rank + 1) * PER_RANK].clone().requires_grad_() for v in views]
        torch.manual_seed(100 + rank)  # different generator states: rank 0's slices must win
        out = lejepa_loss(mine, 2, lambd=0.3, num_slices=32)
        out.loss.backward()
        torch.manual_seed(100 + rank)
        slices = slice_directions(8, 32)
        torch.save({"loss": out.loss.detach(), "sigreg": out.sigreg.detach(), "grads": [v.grad for v in mine],
                    "slices": slices}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_slices_agree_and_sigreg_is_the_global_batchs(tmp_path):
    port = free_port()
    # fork, not spawn: a spawned worker re-imports this module, Lightning and Hydra (~10 s of CPU on a loaded
    # machine); the workers only run the loss
    mp.start_processes(_worker, args=(port, str(tmp_path)), nprocs=WORLD, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert torch.equal(ranks[0]["slices"], ranks[1]["slices"])
    views = _views(3, batch=WORLD * PER_RANK, dim=8, seed=4, dtype=torch.float64)
    torch.manual_seed(100)  # rank 0's generator
    single = lejepa_loss(views, 2, lambd=0.3, num_slices=32)
    single.loss.backward()
    for r in ranks:  # SIGReg is the global batch's on every rank; the prediction term is each rank's own mean
        torch.testing.assert_close(r["sigreg"], single.sigreg.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single.loss.detach(), rtol=1e-10, atol=0)
    for i, v in enumerate(views):  # each rank's input gradient, divided by DDP's world size: the single-process one
        grad = torch.cat([r["grads"][i] for r in ranks]) / WORLD
        torch.testing.assert_close(grad, v.grad, rtol=1e-8, atol=1e-12)


# ---- the method ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    """32 random 28 px images with labels: shapes and steps need no real digits, and loading MNIST would
    double this file's run time when it runs alone."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (32, 28, 28), generator=g, dtype=torch.uint8).numpy(), torch.arange(32).numpy() % 10


def _loader(digits, num_local=0):
    return make_dataloader(digits, num_views=2, num_local=num_local, local_size=8, batch_size=4, image_size=16,
                           preset="mnist", num_workers=0, seed=0)


def test_lejepa_trains_on_two_views_and_on_multicrop(digits, tmp_path):
    for num_local in (0, 2):
        torch.manual_seed(0)
        model = LeJEPA(**TINY_LE)
        sizes, projected = [], []
        model.backbone.register_forward_pre_hook(lambda m, a: sizes.append(tuple(a[0].shape)))
        model.projector.register_forward_hook(lambda m, a, out: projected.append(tuple(out.shape)))
        before = model.projector[0].weight.detach().clone()
        trainer = quiet_trainer(tmp_path, max_steps=2)
        trainer.fit(model, _loader(digits, num_local))
        assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
        assert {"sigreg", "lejepa_prediction"} <= set(trainer.callback_metrics)
        if num_local:  # global crops in one pass, local crops in another; one projector pass over all 4 views
            assert sizes[:2] == [(8, 3, 16, 16), (8, 3, 8, 8)] and projected[0] == (16, 16)
        else:
            assert sizes[0] == (8, 3, 16, 16) and projected[0] == (8, 16)
        assert not torch.equal(model.projector[0].weight, before)
        assert not hasattr(model, "target_backbone") and model.momentum_targets == {}  # no teacher


def _run(digits, tmp_path, seed, stop_at=None, resume=None):
    pl.seed_everything(seed, verbose=False)
    model = LeJEPA(max_steps=4, warmup_steps=1, lr=1e-3, num_classes=10, **TINY_LE)
    callbacks = [SaveAt(stop_at, tmp_path / "stop.ckpt")] if stop_at else []
    trainer = quiet_trainer(tmp_path, max_steps=4, callbacks=callbacks)
    trainer.fit(model, _loader(digits, num_local=2), ckpt_path=str(resume) if resume else None)
    return _state(model, trainer)


def test_lejepa_resumed_after_two_steps_ends_with_the_same_bits(digits, tmp_path):
    straight = _run(digits, tmp_path / "straight", seed=0)
    stopped = _run(digits, tmp_path / "to2", seed=0, stop_at=2)
    assert stopped["step"] == 2
    # another seed: only the checkpoint's weights, data position and random state (the slices) can make it match
    resumed = _run(digits, tmp_path / "from2", seed=1000, resume=tmp_path / "to2" / "stop.ckpt")
    assert resumed["step"] == 4
    _assert_same_bits(straight, resumed, "resumed after step 2")
    moved = stopped["model"]
    assert any(not torch.equal(moved[n], straight["model"][n]) for n in moved if moved[n].is_floating_point())


def test_lejepa_is_built_by_compose_and_its_experiment_composes():
    model = build_model(compose(["method=lejepa", "model.params.proj_hidden_dim=32", "model.params.proj_output_dim=16",
                                 "model.params.lambd=0.02"]))
    assert isinstance(model, LeJEPA) and model.projector[-1].out_features == 16
    c = model.cfg
    assert (c["lambd"], c["num_slices"], c["knots"], c["t_max"]) == (0.02, 1024, 17, 3.0)
    assert (c["optimizer"], c["lr"], c["weight_decay"]) == ("adamw", 5e-4, 5e-4)
    exp = compose(["experiment=cifar10_lejepa"])
    assert (exp.method, exp.data.num_views, exp.data.num_local, exp.model.params.lambd, exp.optimizer.name) == \
        ("lejepa", 2, 6, 0.05, "adamw")
