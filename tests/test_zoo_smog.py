"""SMoG (Pang et al., 2022, arXiv:2207.06167): the loss and the group update by hand; both, and a whole step,
against lightly's `SMoGPrototypes` (lightly/models/modules/heads.py) driven as its SMoG example and benchmark
drive it; training through a real Trainer; exact resume (and that the check would catch group features that
were not checkpointed); building from a composed config."""
from __future__ import annotations

import math
from unittest.mock import PropertyMock, patch

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import autossl.heads.smog as smog_head
import autossl.methods.smog  # noqa: F401  (registers "smog" before any config names it)
from autossl.data import make_dataloader
from autossl.data.batch import Batch
from autossl.heads.smog import SMoGGroups
from autossl.losses.smog import smog_loss
from autossl.methods.smog import SMoG
from autossl.train import build_model, compose
from conftest import TINY, quiet_trainer
from test_exact_resume import SaveAt, _assert_same_bits, _state


def _randn(*shape, seed=0, grad=False):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(grad)


def _lightly_prototypes(groups: torch.Tensor, beta: float):
    from lightly.models.modules.heads import SMoGPrototypes

    return SMoGPrototypes(group_features=groups.clone(), beta=beta)


# ---- by hand -------------------------------------------------------------------------------------------------
def test_loss_and_group_update_by_hand():
    # groups along e1 and e2 (lengths do not matter: cosines); predictions along e1 and e2, both assigned group 0
    groups, p, a = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[3.0, 0.0], [0.0, 0.5]]), torch.tensor([0, 0])
    # logits [1, 0] and [0, 1] / T; the loss is the mean of -log softmax(.)[0]
    for t in (1.0, 0.5):
        by_hand = (math.log(1 + math.exp(-1 / t)) + math.log(1 + math.exp(1 / t))) / 2
        assert smog_loss(p, groups, a, t).item() == pytest.approx(by_hand, rel=1e-6)
    # beta 0.5: [4, 1] and [2, -1] are both nearest e1, which moves halfway to their mean [3, 0]; e2 gets none
    head = SMoGGroups(2, 2, beta=0.5)
    head.features.copy_(torch.eye(2))
    x = torch.tensor([[4.0, 1.0], [2.0, -1.0]])
    assert head.assign(x).tolist() == [0, 0]
    new = head.updated(x)
    torch.testing.assert_close(new, torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(head.features, torch.eye(2))  # stored only by `set`
    head.set(new)
    assert torch.equal(head.features, new)
    with pytest.raises(ValueError, match="temperature"):
        smog_loss(p, groups, a, 0.0)


# ---- against lightly ---------------------------------------------------------------------------------------------
def test_assignments_update_loss_and_gradient_equal_lightlys_smog_prototypes():
    k, d, b, beta, t = 40, 8, 32, 0.9, 0.1
    init = F.normalize(torch.rand(k, d, generator=torch.Generator().manual_seed(0)), dim=1)
    ours = SMoGGroups(k, d, beta)
    ours.features.copy_(init)
    ref = _lightly_prototypes(init, beta)
    for step in range(2):  # the second step starts from the groups each side stored
        z_online, p_online = _randn(b, d, seed=10 + step, grad=True), _randn(b, d, seed=20 + step, grad=True)
        z_target = _randn(b, d, seed=30 + step)
        assign = ours.assign(z_target)
        assert torch.equal(assign, ref.assign_groups(z_target))
        counts = torch.bincount(ours.assign(z_online), minlength=k)
        assert torch.equal(ours.assign(z_online), ref.assign_groups(z_online))
        assert counts.max() > 1 and (counts == 0).any()  # a group averages several rows, another is left alone
        new, new_ref = ours.updated(z_online), ref.get_updated_group_features(z_online)
        torch.testing.assert_close(new, new_ref)
        loss = smog_loss(p_online, new, assign, t)
        loss_ref = torch.nn.CrossEntropyLoss()(ref(p_online, new_ref, temperature=t), ref.assign_groups(z_target))
        torch.testing.assert_close(loss, loss_ref)
        grads = torch.autograd.grad(loss, [p_online, z_online])
        grads_ref = torch.autograd.grad(loss_ref, [p_online, z_online])
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref)
        assert grads[1].abs().sum() > 0  # as lightly's: the updated groups carry a gradient to the online projection
        ours.set(new)
        ref.set_group_features(new_ref)
        torch.testing.assert_close(ours.features, ref.group_features.data)


@pytest.mark.parametrize("step", [0, 1])
def test_a_step_is_lightlys_training_step(step):
    torch.manual_seed(0)
    model = SMoG(num_groups=8, **TINY)
    ref = _lightly_prototypes(model.groups.features, 0.99)
    views = [_randn(8, 3, 16, 16, seed=s) for s in (1, 2)]
    # lightly's benchmark training_step: on odd batches x0 and x1 swap; x0 online, x1 through the momentum encoder
    x0, x1 = (views[1], views[0]) if step % 2 else (views[0], views[1])
    x0_encoded = model.projector(model.backbone(x0))
    x0_predicted = model.predictor(x0_encoded)
    with torch.no_grad():
        x1_encoded = model.target_projector(model.target_backbone(x1))
    assignments = ref.assign_groups(x1_encoded)
    group_features = ref.get_updated_group_features(x0_encoded)
    expected = torch.nn.CrossEntropyLoss()(ref(x0_predicted, group_features, temperature=0.1), assignments)
    ref.set_group_features(group_features)
    with patch.object(SMoG, "global_step", new_callable=PropertyMock, return_value=step):
        out = model.step(Batch(views))
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(model.groups.features, ref.group_features.data)
    assert out["feats"].shape == (8, model.feat_dim)


def test_the_group_update_uses_the_batch_of_every_process(monkeypatch):
    head = SMoGGroups(6, 4, beta=0.5)
    x, other = _randn(5, 4, seed=1), _randn(5, 4, seed=2)  # this process's rows, another process's
    expected = head.updated(torch.cat([x, other]))
    monkeypatch.setattr(smog_head, "gather", lambda z: torch.cat([z, other]))  # what DDP's gather returns
    torch.testing.assert_close(head.updated(x), expected)


# ---- training through a Trainer ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    """24 random 28 px "digits" with labels: 3 batches of 8 an epoch. Random pixels rather than the MNIST subset:
    loading that costs several seconds, and nothing here depends on what the images show."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(24, 28, 28), dtype=np.uint8), np.arange(24) % 10


def _loader(digits):
    return make_dataloader(digits, num_views=2, batch_size=8, image_size=16, preset="mnist", num_workers=0, seed=0)


def test_trains_on_two_views_one_per_network(digits, tmp_path):
    torch.manual_seed(0)
    model = SMoG(num_groups=8, **TINY)
    seen = {"online": [], "target": []}
    model.backbone.register_forward_pre_hook(lambda m, a: seen["online"].append(tuple(a[0].shape)))
    model.target_backbone.register_forward_pre_hook(lambda m, a: seen["target"].append(tuple(a[0].shape)))
    groups, target = model.groups.features.clone(), [p.detach().clone() for p in model.target_projector.parameters()]
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model, _loader(digits))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert seen == {"online": [(8, 3, 16, 16)] * 2, "target": [(8, 3, 16, 16)] * 2}
    assert model.groups.features.shape == (8, 16) and torch.isfinite(model.groups.features).all()
    assert not torch.equal(model.groups.features, groups)
    assert any(not torch.equal(a, b) for a, b in zip(target, model.target_projector.parameters()))
    assert "groups.features" in model.state_dict()
    trained = {id(p) for g in model.param_groups() for p in g["params"]}
    assert all(id(p) not in trained for p in model.target_backbone.parameters())  # EMA copies are not optimised


# ---- exact resume ------------------------------------------------------------------------------------------------
STEPS, STOP = 4, 2


def _run(digits, tmp_path, seed, stop_at=None, resume=None):
    pl.seed_everything(seed, verbose=False)
    model = SMoG(max_steps=STEPS, warmup_steps=1, num_classes=10, num_groups=8, **TINY)
    callbacks = [SaveAt(stop_at, tmp_path / f"step{stop_at}.ckpt")] if stop_at else []
    trainer = quiet_trainer(tmp_path, max_steps=STEPS, callbacks=callbacks, log_every_n_steps=1)
    trainer.fit(model, _loader(digits), ckpt_path=str(resume) if resume else None)
    return model, trainer


def test_resume_ends_with_the_same_bits_and_needs_the_saved_groups(digits, tmp_path):
    straight = _state(*_run(digits, tmp_path / "straight", seed=0))
    assert straight["step"] == STEPS
    stopped, _ = _run(digits, tmp_path / "stopped", seed=0, stop_at=STOP)
    ckpt = tmp_path / "stopped" / f"step{STOP}.ckpt"
    # another seed, so nothing matches by luck; 3 batches an epoch, so the resumed steps cross an epoch boundary
    resumed = _state(*_run(digits, tmp_path / "resumed", seed=1000, resume=ckpt))
    _assert_same_bits(straight, resumed, "smog, resumed after step 2")
    assert not torch.equal(stopped.groups.features, straight["model"]["groups.features"])  # steps 3-4 moved them
    # the check would catch unsaved groups: the resumed run would start from its own fresh ones instead
    saved = torch.load(ckpt, weights_only=True)
    pl.seed_everything(1000, verbose=False)
    saved["state_dict"]["groups.features"] = SMoG(num_groups=8, **TINY).groups.features
    torch.save(saved, tmp_path / "unsaved.ckpt")
    unsaved = _state(*_run(digits, tmp_path / "unsaved", seed=1000, resume=tmp_path / "unsaved.ckpt"))
    assert not torch.equal(unsaved["model"]["groups.features"], straight["model"]["groups.features"])
    with pytest.raises(AssertionError):
        _assert_same_bits(straight, unsaved)


# ---- from a composed config --------------------------------------------------------------------------------------
def test_is_built_by_compose_and_ships_its_cifar10_experiment():
    model = build_model(compose(["method=smog", "model.params.num_groups=16", "model.params.proj_hidden_dim=32",
                                 "model.params.pred_hidden_dim=32"]))
    assert isinstance(model, SMoG) and model.groups.features.shape == (16, 128)
    assert (model.cfg["temperature"], model.cfg["beta"], model.cfg["optimizer"]) == (0.1, 0.99, "sgd")
    exp = compose(["experiment=cifar10_smog"])
    p = exp.model.params
    assert (exp.method, exp.optimizer.name, exp.optimizer.lr, exp.data.batch_size) == ("smog", "sgd", 0.005, 512)
    assert (p.num_groups, p.beta, p.temperature, p.proj_output_dim, p.momentum_base) == (300, 0.99, 0.1, 128, 0.99)
