"""DINO and SwAV: the losses against lightly (value and gradient) and hand computations, DINO's
center / teacher-temperature / last-layer freeze and local-to-global teacher, SwAV's Sinkhorn marginals,
prototype normalisation / freeze and queue; both trained through a real Trainer (2 views and
2 global + 2 local crops) and built from a composed config."""
from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from autossl.data import make_dataloader
from autossl.data.batch import Batch
from autossl.losses.dino import dino_loss, teacher_temperature, update_center
from autossl.losses.swav import sinkhorn, swav_loss
from autossl.methods.dino import DINO
from autossl.methods.swav import SwAV
from autossl.train import build_model, compose
from conftest import TINY, quiet_trainer

TINY_DINO = dict(TINY, num_prototypes=32)
TINY_SWAV = dict(TINY, num_prototypes=32, queue_size=16)


def _outs(n, batch=8, dim=32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g).requires_grad_(grad) for _ in range(n)]


def _loader(mnist_arrays, num_local=0):
    return make_dataloader(mnist_arrays, num_views=2, num_local=num_local, local_size=8, batch_size=8, image_size=16,
                           preset="mnist", num_workers=0, seed=0)


# ---- DINO: loss --------------------------------------------------------------------------------------------
def test_dino_loss_value_gradient_and_center_equal_lightly():
    from lightly.loss import DINOLoss

    student = _outs(4, seed=1, grad=True)  # 2 global + 2 local crops
    teacher = _outs(2, seed=2)  # the global crops only
    center = torch.randn(1, 32, generator=torch.Generator().manual_seed(3)) * 0.1
    ref = DINOLoss(output_dim=32, student_temp=0.1, center_momentum=0.9)
    ref.center.copy_(center.view(1, 1, 32))
    expected = ref(teacher, student, teacher_temp=0.05)
    ours = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.05)
    torch.testing.assert_close(ours, expected.squeeze(), rtol=1e-5, atol=1e-6)
    g_ours = torch.autograd.grad(ours, student, retain_graph=True)
    g_ref = torch.autograd.grad(expected, student)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(update_center(center, teacher, 0.9), ref.center.view(1, 32))


def test_dino_loss_by_hand_one_teacher_two_students():
    # teacher view 0 against student view 1 only (student view 0 is the same crop)
    t, s0, s1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[5.0, 5.0]]), torch.tensor([[0.0, 1.0]])
    c = torch.tensor([[0.5, 0.0]])
    q = [math.exp(0.5 / 0.5), math.exp(0.0)]
    q = [x / sum(q) for x in q]
    logp = [0.0 - math.log(1 + math.exp(1.0)), 1.0 - math.log(1 + math.exp(1.0))]  # log softmax([0, 1] / 1)
    expected = -(q[0] * logp[0] + q[1] * logp[1])
    got = dino_loss([s0, s1], [t], c, student_temp=1.0, teacher_temp=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_dino_center_and_teacher_temperature_follow_the_paper():
    teacher = _outs(2, batch=4, dim=5, seed=4)
    c = torch.randn(1, 5)
    # c <- m c + (1 - m) mean over the batch and the teacher views (Algorithm 1)
    torch.testing.assert_close(update_center(c, teacher, 0.9), 0.9 * c + 0.1 * torch.cat(teacher).mean(0, keepdim=True))
    # main_dino.py: np.concatenate((np.linspace(warmup, final, E), np.ones(epochs - E) * final))
    E, epochs = 30, 100
    schedule = np.concatenate((np.linspace(0.04, 0.07, E), np.ones(epochs - E) * 0.07))
    got = [teacher_temperature(e, 0.04, 0.07, E) for e in range(epochs)]
    np.testing.assert_allclose(got, schedule, rtol=1e-12)
    assert teacher_temperature(0, 0.04, 0.07, 0) == 0.07 and teacher_temperature(0, 0.04, 0.07, 1) == 0.04


# ---- DINO: method ------------------------------------------------------------------------------------------
def test_dino_cancels_last_layer_gradients_only_while_frozen():
    torch.manual_seed(0)
    for freeze, kept in ((1, False), (0, True)):
        model = DINO(freeze_last_layer=freeze, **TINY_DINO)
        g = torch.Generator().manual_seed(0)
        model.step(Batch([torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)]))["loss"].backward()
        model.on_after_backward()  # epoch 0
        assert (model.head.last_layer.parametrizations.weight.original1.grad is not None) == kept
        assert model.head.mlp[0].weight.grad is not None and model.backbone.model.conv1.weight.grad is not None


def test_dino_multicrop_trains_teacher_sees_global_crops_only(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = DINO(**TINY_DINO)
    teacher_sizes, student_sizes = [], []
    model.target_backbone.register_forward_pre_hook(lambda m, a: teacher_sizes.append(a[0].shape[-1]))
    model.backbone.register_forward_pre_hook(lambda m, a: student_sizes.append(a[0].shape[-1]))
    last = model.head.last_layer.parametrizations.weight.original1.detach().clone()
    first = model.head.mlp[0].weight.detach().clone()
    teacher_before = [p.detach().clone() for p in model.target_backbone.parameters()]
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model, _loader(mnist_arrays, num_local=2))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert set(teacher_sizes) == {16} and len(teacher_sizes) == 2  # one concatenated pass of 2 global crops per step
    assert sorted(set(student_sizes)) == [8, 16]  # the student sees global and local crops
    assert trainer.callback_metrics["teacher_temp"].item() == pytest.approx(0.04)  # epoch 0 of the warm-up
    assert torch.equal(model.head.last_layer.parametrizations.weight.original1, last)  # frozen in epoch 0
    assert not torch.equal(model.head.mlp[0].weight, first)
    assert any(not torch.equal(a, b) for a, b in zip(teacher_before, model.target_backbone.parameters()))
    assert model.center.abs().sum() > 0 and "center" in model.state_dict()
    assert [id(t) for _, t in model.momentum_pairs] == [id(model.target_backbone), id(model.target_head)]


def test_dino_trains_on_two_views_clips_per_parameter_and_is_built_by_compose(mnist_arrays, tmp_path):
    model, norms = DINO(clip_grad=1e-3, **TINY_DINO), []

    class GradNorms(pl.Callback):  # what the optimiser steps on: after AMP unscaling and the clipping
        def on_train_start(self, trainer, pl_module):
            trainer.optimizers[0].register_step_post_hook(lambda *a: norms.append(max(
                p.grad.norm().item() for p in pl_module.backbone.parameters() if p.grad is not None)))

    trainer = quiet_trainer(tmp_path, max_steps=2, callbacks=[GradNorms()])
    trainer.fit(model, _loader(mnist_arrays))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert len(norms) == 2 and max(norms) <= 1e-3 * (1 + 1e-4)  # every parameter's gradient norm clipped
    trainer.save_checkpoint(tmp_path / "dino.ckpt")
    assert torch.equal(DINO.load_from_checkpoint(tmp_path / "dino.ckpt").center, model.center)  # checkpointed
    cfg = compose(["method=dino", "model.params.num_prototypes=32", "model.params.proj_hidden_dim=32",
                   "model.params.proj_output_dim=16"])
    model = build_model(cfg)
    assert isinstance(model, DINO) and model.head.last_layer.weight.shape == (32, 16)
    exp = compose(["experiment=cifar10_dino"])
    assert (exp.method, exp.optimizer.lr, exp.model.params.num_prototypes, exp.model.params.momentum_base) == \
        ("dino", 0.3, 4096, 0.9995)


# ---- SwAV: loss ----------------------------------------------------------------------------------------------
def test_sinkhorn_by_hand_and_its_marginals():
    # exp(scores / eps) = [[1, 2], [3, 4]] (samples x prototypes); one iteration, worked out by hand:
    # /10 -> rows (prototypes) to 1/2 each -> columns (samples) to 1/2 each -> x B
    scores = torch.log(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    q = sinkhorn(scores, iterations=1, epsilon=1.0)
    torch.testing.assert_close(q, torch.tensor([[3 / 7, 4 / 7], [9 / 17, 8 / 17]]))
    s = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    q = sinkhorn(s, iterations=3, epsilon=0.5)
    torch.testing.assert_close(q.sum(1), torch.ones(6))  # every sample's code sums to 1
    q = sinkhorn(s, iterations=200, epsilon=0.5)
    torch.testing.assert_close(q.sum(0), torch.full((4,), 6 / 4))  # converged: every prototype gets B/K
    from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

    torch.testing.assert_close(sinkhorn(s, 3, 0.05), lightly_sinkhorn(s, 3, 0.05))


@pytest.mark.parametrize("with_queue", [False, True])
def test_swav_loss_value_and_gradient_equal_lightly(with_queue):
    from lightly.loss import SwaVLoss

    normed = [F.normalize(x, dim=1).detach().requires_grad_(True) for x in _outs(4, dim=16, seed=5)]
    protos = F.normalize(torch.randn(10, 16, generator=torch.Generator().manual_seed(6)), dim=1)
    scores = [x @ protos.T for x in normed]
    high, low = scores[:2], scores[2:]
    queue = [F.normalize(x, dim=1) @ protos.T for x in _outs(2, batch=12, dim=16, seed=7)] if with_queue else None
    ref = SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)(high, low, queue)
    ours = swav_loss(high, low, 0.1, 3, 0.05, queue_outputs=queue)
    torch.testing.assert_close(ours, ref.squeeze(), rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, normed, retain_graph=True), torch.autograd.grad(ref.sum(), normed)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---- SwAV: method --------------------------------------------------------------------------------------------
def test_swav_prototypes_are_normalised_and_frozen(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = SwAV(**TINY_SWAV)  # freeze_prototypes_epochs=2: no prototype update in epoch 0
    start = model.prototypes.weight.detach().clone()
    first = model.projector[0].weight.detach().clone()
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model, _loader(mnist_arrays, num_local=2))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    torch.testing.assert_close(model.prototypes.weight, F.normalize(start, dim=1))  # only normalised
    assert not torch.equal(model.projector[0].weight, first)
    assert int(model.queue_filled) == 16 and model.queue.shape == (2, 16, 16)  # 2 steps of 8: the queue is full
    torch.testing.assert_close(model.queue.norm(dim=-1), torch.ones(2, 16))
    assert "queue" in model.state_dict()

    unfrozen = SwAV(freeze_prototypes_steps=0, **TINY_SWAV)
    g = torch.Generator().manual_seed(0)
    unfrozen.step(Batch([torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)]))["loss"].backward()
    unfrozen.on_after_backward()
    assert unfrozen.prototypes.weight.grad is not None


def test_swav_queue_joins_sinkhorn_once_full_and_started():
    model = SwAV(queue_start_epoch=0, **TINY_SWAV)
    assert model._queue_scores(2) is None  # empty
    model._enqueue([F.normalize(torch.randn(16, 16), dim=1)] * 2)
    scores = model._queue_scores(2)
    assert scores is not None and [s.shape for s in scores] == [(16, 32)] * 2
    assert SwAV(**TINY_SWAV)._queue_scores(2) is None  # default start epoch 50


def test_swav_trains_on_two_views_and_is_built_by_compose(mnist_arrays, tmp_path):
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(SwAV(**TINY_SWAV), _loader(mnist_arrays))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    model = build_model(compose(["method=swav", "model.params.num_prototypes=32", "model.params.proj_hidden_dim=32",
                                 "model.params.queue_size=0"]))
    assert isinstance(model, SwAV) and model.prototypes.weight.shape == (32, 128) and model.prototypes.bias is None
    exp = compose(["experiment=cifar10_swav"])
    assert (exp.method, exp.optimizer.lr, exp.model.params.num_prototypes, exp.model.params.queue_size) == \
        ("swav", 0.6, 3000, 3840)


def test_under_a_time_budget_dino_and_swav_phases_keep_their_share_of_the_recipe(mnist_arrays, tmp_path):
    """A budget run is often shorter than an epoch. Counted in epochs, DINO's teacher would stay at 0.04 with its
    last layer frozen, and SwAV's prototypes frozen without a queue, for the whole run. Mapped onto the 1000-epoch
    recipe (SSLMethod.phase_epoch), each phase keeps its share of the plan that train/budget.py lays out."""
    class Record(pl.Callback):
        def __init__(self, read):
            self.read, self.seen = read, []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append(self.read(pl_module))

    steps, loader = 12, _loader(mnist_arrays)
    assert steps < len(loader)  # all of it inside epoch 0
    dino = DINO(**TINY_DINO)
    dino.set_schedule_length(400)  # the plan: the 50-epoch warm-up is its first 20 steps, the freeze 0.4 of one
    last = dino.head.last_layer.parametrizations.weight.original1.detach().clone()
    temps = Record(DINO.teacher_temp_now)
    quiet_trainer(tmp_path / "dino", max_steps=steps, callbacks=[temps]).fit(dino, loader)
    expected = [teacher_temperature(1000 * k / 400, 0.04, 0.07, 50) for k in range(steps)]
    assert temps.seen == pytest.approx(expected) and temps.seen[-1] > 0.055
    assert not torch.equal(dino.head.last_layer.parametrizations.weight.original1, last)

    swav = SwAV(**TINY_SWAV)
    swav.set_schedule_length(100)  # the 2-epoch prototype freeze is step 0; the queue starts at step 5 (epoch 50)
    init = F.normalize(swav.prototypes.weight.detach(), dim=1)
    frozen, queued = Record(SwAV.prototypes_frozen), Record(lambda m: m._queue_scores(2) is not None)
    quiet_trainer(tmp_path / "swav", max_steps=steps, callbacks=[frozen, queued]).fit(swav, loader)
    assert frozen.seen == [True] + [False] * (steps - 1)
    assert queued.seen == [False] * 5 + [True] * (steps - 5)  # the 16-row queue is full after 2 steps of 8
    assert not torch.allclose(swav.prototypes.weight, init, atol=1e-4)
