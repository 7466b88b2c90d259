"""iBOT (Zhou et al., 2022, arXiv:2111.07832), DINOv2 (Oquab et al., 2023, arXiv:2304.07193), MSN (Assran et al.,
2022, arXiv:2204.07141) and PMSN (Assran et al., 2023, arXiv:2210.07277) on 2-block ViT-tiny at 16 px: the losses
against lightly (value and gradient) and by hand, the schedules against the reference code's formulas, masks,
local crops through the ViT, each method trained through a real Trainer (2 views and multi-crop) and built from a
composed config."""
from __future__ import annotations

import math
from unittest.mock import PropertyMock, patch

import numpy as np
import pytest
import timm
import torch

from autossl.backbones.vit_crops import vit_tokens
from autossl.data import make_dataloader
from autossl.losses.ibot import ibot_patch_loss
from autossl.losses.koleo import koleo_loss
from autossl.losses.msn import msn_loss, pmsn_loss
from autossl.methods.dinov2 import DINOv2
from autossl.methods.ibot import IBOT, sample_masks
from autossl.methods.msn import MSN, linear_tau
from autossl.methods.pmsn import PMSN
from autossl.train import build_model, compose
from conftest import quiet_trainer

VIT = dict(backbone="vit_tiny", image_size=16, backbone_kwargs={"depth": 2}, proj_hidden_dim=32, proj_output_dim=16,
           num_prototypes=32)
SMALL = ["model.backbone=vit_tiny", "model.params.backbone_kwargs={depth:2}", "model.params.num_prototypes=32",
         "model.params.proj_hidden_dim=32", "model.params.proj_output_dim=16"]


def _randn(*shape, seed=0, grad=False):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(grad)


def _loader(mnist_arrays, num_local=0):
    return make_dataloader(mnist_arrays, num_views=2, num_local=num_local, local_size=8, batch_size=8, image_size=16,
                           preset="mnist", num_workers=0, seed=0)


def _fit(model, mnist_arrays, tmp_path, num_local=0):
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model, _loader(mnist_arrays, num_local))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    return trainer


def _sizes(module, into):
    module.register_forward_pre_hook(lambda m, a: into.append(tuple(a[0].shape)))


# ---- losses --------------------------------------------------------------------------------------------------
def test_ibot_patch_loss_value_and_gradient_equal_lightly_and_by_hand():
    from lightly.loss import IBOTPatchLoss

    mask = _randn(4, 3, 3, seed=1) > 0.3
    mask[2] = False  # an unmasked image contributes 0
    n = int(mask.sum())
    teacher, student = _randn(n, 10, seed=2), _randn(n, 10, seed=3, grad=True)
    center = _randn(1, 10, seed=4) * 0.1
    ref = IBOTPatchLoss(output_dim=10, teacher_temp=0.05, student_temp=0.1)
    ref.center.center.copy_(center)
    expected = ref(teacher, student, mask, teacher_temp=0.05)
    ours = ibot_patch_loss(teacher, student, mask, center, student_temp=0.1, teacher_temp=0.05)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(ours, student)[0], torch.autograd.grad(expected, student)[0])
    # by hand: image 0 masks token 0, image 1 tokens 0 and 1; per-image means, then the mean over 2 images
    t, s = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])

    def ce(ti, si):  # teacher at temperature 1, no center; student at 1
        q = [math.exp(x) / sum(math.exp(y) for y in ti) for x in ti]
        return -sum(qk * (sk - math.log(sum(math.exp(y) for y in si))) for qk, sk in zip(q, si))

    ces = [ce(t[i].tolist(), s[i].tolist()) for i in range(3)]
    by_hand = (ces[0] + (ces[1] + ces[2]) / 2) / 2
    m = torch.tensor([[True, False], [True, True]])
    assert ibot_patch_loss(t, s, m, torch.zeros(1, 2), 1.0, 1.0).item() == pytest.approx(by_hand, rel=1e-6)


def test_koleo_loss_equals_lightly_and_by_hand():
    from lightly.loss import KoLeoLoss

    x = _randn(8, 5, seed=5, grad=True)
    ours, ref = koleo_loss(x), KoLeoLoss()(x)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(ref, x)[0])
    # unit vectors at 0, 60 and 180 degrees: nearest-neighbour distances 1, 1 and sqrt(3)
    pts = torch.tensor([[2.0, 0.0], [0.5, math.sqrt(3) / 2], [-3.0, 0.0]])
    assert koleo_loss(pts).item() == pytest.approx(-math.log(3) / 6, abs=1e-6)


@pytest.mark.parametrize("power_law", [False, True])
def test_msn_and_pmsn_losses_equal_lightly(power_law):
    from lightly.loss import MSNLoss, PMSNLoss

    anchors, targets = _randn(12, 8, seed=6, grad=True), _randn(4, 8, seed=7)  # 3 anchor views of 4 images
    protos = _randn(6, 8, seed=8, grad=True)
    if power_law:
        ref = PMSNLoss(temperature=0.2, sinkhorn_iterations=3, regularization_weight=0.7, power_law_exponent=0.3)
        ours = pmsn_loss(anchors, targets, protos, 0.2, 0.25, 3, prior_weight=0.7, power_law_exponent=0.3)
    else:
        ref = MSNLoss(temperature=0.2, sinkhorn_iterations=3, regularization_weight=0.7)
        ours = msn_loss(anchors, targets, protos, 0.2, 0.25, 3, me_max_weight=0.7)
    expected = ref(anchors, targets, protos, target_sharpen_temperature=0.25)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, [anchors, protos], retain_graph=True),
                    torch.autograd.grad(expected, [anchors, protos])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_msn_and_pmsn_losses_by_hand():
    # one anchor = its target = prototype 1 of 2, temperature 1, no sharpening, no Sinkhorn: p = softmax([1, 0])
    e1, protos = torch.tensor([[1.0, 0.0]]), torch.eye(2)
    p = [math.e / (1 + math.e), 1 / (1 + math.e)]
    entropy = -sum(x * math.log(x) for x in p)
    # MSN: H(p, p) + KL(p || uniform) = H(p) + (log 2 - H(p)) = log 2
    assert msn_loss(e1, e1, protos, 1.0, 1.0, 0).item() == pytest.approx(math.log(2), rel=1e-6)
    prior = [1.0, 2 ** -0.25]
    prior = [x / sum(prior) for x in prior]
    kl = sum(q * math.log(q / x) for q, x in zip(prior, p))  # PMSN: KL(power law || p_bar)
    assert pmsn_loss(e1, e1, protos, 1.0, 1.0, 0, power_law_exponent=0.25).item() == pytest.approx(entropy + kl,
                                                                                                  rel=1e-6)


# ---- schedules, masks, local crops -------------------------------------------------------------------------
def test_schedules_follow_the_reference_formulas():
    model = IBOT(**VIT)  # iBOTLoss: np.concatenate((np.linspace(warmup, final, E), np.ones(epochs - E) * final))
    E, epochs = 30, 100
    expect = np.concatenate((np.linspace(0.04, 0.07, E), np.ones(epochs - E) * 0.07))
    got = []
    with patch.object(IBOT, "current_epoch", new_callable=PropertyMock) as epoch_now:
        for epoch in range(epochs):
            epoch_now.return_value = epoch
            got.append((model.teacher_temp_now(), model.teacher_patch_temp_now()))
    np.testing.assert_allclose(np.array(got), np.stack([expect, expect], 1), rtol=1e-12)
    # msn_train.py: _start_m + _increment * i with _increment = (1 - _start_m) / (ipe * num_epochs * 1.25)
    total = 40
    ref = [0.996 + (1 - 0.996) / (total * 1.25) * i for i in range(total)]
    np.testing.assert_allclose([linear_tau(i, total, 0.996) for i in range(total)], ref, rtol=1e-12)


def test_sample_masks_probability_and_ratio():
    torch.manual_seed(0)
    assert not sample_masks(64, 16, probability=0.0).any()
    m = sample_masks(64, 16, probability=1.0, ratio_min=0.25, ratio_max=0.25)
    assert m.sum(1).tolist() == [4] * 64
    m = sample_masks(4000, 64, probability=0.5, ratio_min=0.1, ratio_max=0.5)
    counts = m.sum(1)
    assert abs((counts > 0).float().mean().item() - 0.5) < 0.05 and counts.max() <= 32


def test_vit_tokens_interpolate_positions_as_timm_dynamic_size():
    model = IBOT(**VIT)
    vit = model.backbone.model
    x = _randn(2, 3, 16, 16, seed=9)
    torch.testing.assert_close(vit_tokens(vit, x), vit.forward_features(x))
    ref = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, num_classes=0,
                            dynamic_img_size=True)
    ref.load_state_dict(vit.state_dict())
    small = _randn(2, 3, 8, 8, seed=10)
    torch.testing.assert_close(vit_tokens(vit, small), ref.forward_features(small))
    assert vit.dynamic_img_size is False
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        IBOT(backbone="resnet18", image_size=16, proj_hidden_dim=32, proj_output_dim=16, num_prototypes=32)


# ---- methods -------------------------------------------------------------------------------------------------
def test_ibot_multicrop_trains_student_masked_teacher_global(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = IBOT(**VIT)
    student, teacher = [], []
    _sizes(model.backbone.model.patch_embed.proj, student)
    _sizes(model.target_backbone.model.patch_embed.proj, teacher)
    token = model.mask_token.detach().clone()
    trainer = _fit(model, mnist_arrays, tmp_path, num_local=2)
    assert set(teacher) == {(16, 3, 16, 16)} and len(teacher) == 2  # the 2 global crops, once per step
    assert sorted({s[-1] for s in student}) == [8, 16]  # the student sees global and local crops
    assert trainer.callback_metrics["teacher_patch_temp"].item() == pytest.approx(0.04)
    assert model.center.abs().sum() > 0 and model.patch_center.abs().sum() > 0
    assert {"patch_center", "center"} <= set(model.state_dict())
    assert not torch.equal(model.mask_token, token)  # the mask token is learnt


def test_ibot_trains_on_two_views_and_is_built_by_compose(mnist_arrays, tmp_path):
    _fit(IBOT(**VIT), mnist_arrays, tmp_path)
    model = build_model(compose(["method=ibot"] + SMALL))
    assert isinstance(model, IBOT) and model.head.last_layer.weight.shape == (32, 16)
    exp = compose(["experiment=cifar10_ibot"])
    p = exp.model.params
    assert (exp.method, exp.model.backbone, exp.optimizer.lr, p.num_prototypes, p.teacher_patch_temp,
            exp.data.num_local) == ("ibot", "vit_tiny", 5e-4, 8192, 0.07, 10)


def test_dinov2_adds_koleo_per_global_crop_and_trains(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = DINOv2(**VIT)
    a, b = _randn(8, 192, seed=11), _randn(8, 192, seed=12)
    reg = model.regularizer([a, b])["loss_koleo"]
    torch.testing.assert_close(reg, 0.1 * (koleo_loss(a) + koleo_loss(b)))
    assert any(g.get("lr_scale", 1.0) < 1.0 for g in model.param_groups())  # layer-wise LR decay 0.9
    trainer = _fit(model, mnist_arrays, tmp_path, num_local=2)
    assert torch.isfinite(trainer.callback_metrics["loss_koleo"])
    _fit(DINOv2(**VIT), mnist_arrays, tmp_path)
    assert isinstance(build_model(compose(["method=dinov2"] + SMALL)), DINOv2)
    exp = compose(["experiment=cifar10_dinov2"])
    assert (exp.method, exp.model.params.koleo_weight, exp.model.params.momentum_base) == ("dinov2", 0.1, 0.992)


def test_msn_multicrop_masks_anchors_only_and_follows_linear_momentum(mnist_arrays, tmp_path):
    torch.manual_seed(0)
    model = MSN(mask_ratio=0.25, **VIT)
    teacher, tokens = [], []
    _sizes(model.target_backbone.model.patch_embed.proj, teacher)
    _sizes(model.backbone.model.blocks[0], tokens)
    protos = model.prototypes.detach().clone()
    trainer = _fit(model, mnist_arrays, tmp_path, num_local=2)
    assert teacher == [(8, 3, 16, 16)] * 2  # the target view only, unmasked
    # anchor: [CLS] + 12 of 16 patches kept; focal crops (2 x 8 images, 8 px): [CLS] + 4 patches, unmasked
    assert {t[:2] for t in tokens} == {(8, 13), (16, 5)}
    assert trainer.callback_metrics["tau"].item() == pytest.approx(linear_tau(1, 2, 0.996))
    assert not torch.equal(model.prototypes, protos)
    assert [g["weight_decay"] for g in model.param_groups() if any(p is model.prototypes for p in g["params"])] == [0.0]
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        MSN(backbone="resnet18", image_size=16, proj_hidden_dim=32, proj_output_dim=16, num_prototypes=32)


@pytest.mark.parametrize("cls", [MSN, PMSN])
def test_msn_and_pmsn_train_on_two_views_and_are_built_by_compose(cls, mnist_arrays, tmp_path):
    model = cls(**VIT)  # one step: exactly one EMA update, at the linear schedule's first momentum
    assert model.momentum_targets == {} and [t for _, t in model.momentum_pairs] == [model.target_backbone,
                                                                                     model.target_projector]
    before = [p.detach().clone() for p in model.target_projector.parameters()]
    quiet_trainer(tmp_path, max_steps=1).fit(model, _loader(mnist_arrays))
    for b, t, o in zip(before, model.target_projector.parameters(), model.projector.parameters()):
        torch.testing.assert_close(t, 0.996 * b + 0.004 * o)
    _fit(cls(**VIT), mnist_arrays, tmp_path)
    model = build_model(compose([f"method={cls.name}"] + SMALL))
    assert type(model) is cls and model.prototypes.shape == (32, 16)
    exp = compose([f"experiment=cifar10_{cls.name}"])
    assert (exp.method, exp.optimizer.lr, exp.optimizer.scale_lr, exp.model.params.num_prototypes,
            exp.model.params.mask_ratio) == (cls.name, 1e-3, False, 1024, 0.15)
    if cls is PMSN:
        assert exp.model.params.power_law_exponent == 0.25 and "me_max_weight" not in PMSN.defaults
