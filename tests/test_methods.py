"""Methods: the earlier autoSSL API trained by a plain Lightning Trainer, resume, the online probe's
stop-gradient, N views, momentum targets and MoCo's queue."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from autossl.data import make_dataloader
from autossl.methods import BYOL, MoCo, SimCLR, SimSiam, get_method
from autossl.methods.momentum import ema_update
from autossl.heads.queue import FeatureQueue
from conftest import TINY, quiet_trainer

# The earlier README's six calls, verbatim.
EARLIER_API = [
    ("BarlowTwins", dict(backbone="ResNet", memory_bank=False, projectionhead="linear")),
    ("MoCo", dict(backbone="ResNet", memory_bank=True, projectionhead="MLP")),
    ("SimCLR", dict(backbone="ResNet", memory_bank=False, projectionhead="linear")),
    ("SiaSiam", dict(backbone="ResNet", memory_bank=True, projectionhead="MLP")),
    ("BYOL", dict(backbone="ResNet", memory_bank=False, projectionhead="linear")),
    ("VICReg", dict()),
]


class _WeightsAtStart(pl.Callback):
    """Records one backbone weight when training starts, i.e. after a checkpoint was restored."""

    def on_train_start(self, trainer, pl_module):
        self.weight = pl_module.backbone.model.layer1[0].conv1.weight.detach().clone()


@pytest.mark.parametrize("batch_size", [8, pytest.param(32, marks=pytest.mark.slow)])
@pytest.mark.parametrize("cls_name,kwargs", EARLIER_API, ids=[c for c, _ in EARLIER_API])
def test_earlier_api_trains_and_resumes_on_mnist(cls_name, kwargs, batch_size, mnist_arrays, tmp_path):
    import autoSSL.models

    cls = getattr(autoSSL.models, cls_name)
    pl.seed_everything(0, verbose=False)
    # batch 8 by default (32 with -m slow): ResNet-18 at 32 px costs about 1 s per step of 8 on a CPU core
    dataloader_train = make_dataloader(mnist_arrays, batch_size=batch_size, image_size=32, preset="mnist",
                                       num_workers=0)
    model = cls(**kwargs)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[checkpoint], default_root_dir=str(tmp_path))
    start = model.backbone.model.layer1[0].conv1.weight.detach().clone()
    trainer.fit(model, dataloader_train)

    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert not torch.equal(start, model.backbone.model.layer1[0].conv1.weight)  # the SSL loss moved the backbone
    assert model.probe is not None and model.probe.classifier.out_features == 10  # classes found in the loader
    last = checkpoint.last_model_path
    assert last and (tmp_path / "ckpt" / "last.ckpt").exists()

    resumed, restored = cls(**kwargs), _WeightsAtStart()
    trainer2 = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                          enable_model_summary=False, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt2"), restored],
                          default_root_dir=str(tmp_path))
    trainer2.fit(resumed, dataloader_train, ckpt_path=last)
    assert trainer2.global_step == 3  # continued from step 2, not from scratch
    assert torch.equal(restored.weight, model.backbone.model.layer1[0].conv1.weight)  # from the checkpoint
    if isinstance(resumed, MoCo):
        assert int(resumed.queue.filled) == 3 * batch_size  # the queue was restored from the checkpoint, then grew


def test_method_registry_and_names():
    assert get_method("BarlowTwins").__name__ == "BarlowTwins" and get_method("siasiam") is SimSiam
    with pytest.raises(ValueError, match="did you mean 'simclr'"):
        get_method("simclrr")


def _views(n=2, batch=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=g) for _ in range(n)]


def _backbone_grads(model):
    return [p.grad for p in model.backbone.parameters()]


def test_online_probe_sends_no_gradient_into_the_backbone():
    model = SimCLR(num_classes=10, **TINY)
    views, labels = _views(), torch.arange(8) % 10
    feats = model.encode_views(views)
    probe_loss, _ = model.probe(feats[0], labels)
    probe_loss.backward()
    assert all(g is None for g in _backbone_grads(model))
    assert model.probe.classifier.weight.grad.abs().sum() > 0  # the probe itself does learn

    # the full training step: backbone gradients are the same with and without labels
    grads = []
    for with_labels in (True, False):
        model.zero_grad(set_to_none=True)
        batch = {"views": views, "label": labels if with_labels else torch.full((8,), -1), "skipped": 0}
        model.training_step(batch, 0).backward()
        grads.append([g.clone() for g in _backbone_grads(model)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_fewer_views_than_the_method_needs_is_refused():
    with pytest.raises(ValueError, match="at least 2 views"):
        SimCLR(num_views=1, **TINY)
    model = SimCLR(**TINY)
    with pytest.raises(ValueError, match="num_views>=2"):
        model.training_step({"views": _views(1), "label": torch.zeros(8, dtype=torch.long), "skipped": 0}, 0)


@pytest.mark.parametrize("cls", [SimCLR, BYOL], ids=["SimCLR", "BYOL"])
def test_four_views_train(cls, mnist_arrays, tmp_path):
    loader = make_dataloader(mnist_arrays, num_views=4, batch_size=8, image_size=16, preset="mnist", num_workers=0)
    model = cls(num_views=4, **TINY)
    seen = []
    real_loss = model.ssl_loss
    model.ssl_loss = lambda feats, views: seen.append(len(feats)) or real_loss(feats, views)
    quiet_trainer(tmp_path, max_steps=1).fit(model, loader)
    assert seen == [4]


def test_momentum_target_moves_by_ema(mnist_arrays, tmp_path):
    loader = make_dataloader(mnist_arrays, batch_size=8, image_size=16, preset="mnist", num_workers=0)
    for cls in (BYOL, MoCo):
        model = cls(momentum_base=0.9, **TINY)
        before = [p.detach().clone() for p in model.target_backbone.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))  # starts as a copy
        quiet_trainer(tmp_path, max_steps=1).fit(model, loader)
        online = list(model.backbone.parameters())
        target = list(model.target_backbone.parameters())
        assert not all(p.requires_grad for p in target)
        moved = sum(not torch.equal(t, b) for t, b in zip(target, before))
        assert moved > len(before) // 2, f"{cls.__name__}: target did not follow the online network"
        assert any(not torch.equal(t, o) for t, o in zip(target, online)), "target must lag, not copy"
        # the first update uses momentum_base: target = 0.9 * old target + 0.1 * online
        for t, b, o in zip(target, before, online):
            torch.testing.assert_close(t, 0.9 * b + 0.1 * o.detach(), rtol=1e-5, atol=1e-6)


def test_ema_update_formula():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    old = target.weight.detach().clone()
    ema_update(online, target, tau=0.75)
    torch.testing.assert_close(target.weight, 0.75 * old + 0.25 * online.weight.detach())


def test_moco_queue_fills_during_training(mnist_arrays, tmp_path):
    loader = make_dataloader(mnist_arrays, batch_size=8, image_size=16, preset="mnist", num_workers=0)
    model = MoCo(memory_bank=True, queue_size=64, **TINY)
    assert int(model.queue.filled) == 0
    quiet_trainer(tmp_path, max_steps=2).fit(model, loader)
    assert int(model.queue.filled) == 16 and int(model.queue.ptr) == 16
    torch.testing.assert_close(model.queue.items[:16].norm(dim=1), torch.ones(16))  # normalised keys


def test_queue_wraps_around_oldest_first():
    q = FeatureQueue(size=5, dim=2)
    q.push(torch.tensor([[1.0, 0.0]] * 3))
    q.push(torch.tensor([[0.0, 1.0]] * 3))
    assert int(q.filled) == 5 and int(q.ptr) == 1
    assert q.items[0].tolist() == [0.0, 1.0] and q.items[2].tolist() == [1.0, 0.0]
    assert q.negatives().shape == (5, 2)


def test_views_of_mixed_sizes_keep_their_order():
    model = SimCLR(**TINY).eval()
    views = [_views(1, size=16, seed=0)[0], _views(1, size=8, seed=1)[0], _views(1, size=16, seed=2)[0]]
    with torch.no_grad():
        concat = model.encode_views(views)  # the two 16 px views go through the backbone together
        single = [model(v) for v in views]
    for a, b in zip(concat, single):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_projection_heads_of_the_earlier_api():
    from autossl.heads import projection_head

    linear, out = projection_head("linear", 512, 2048, 128)
    assert isinstance(linear, torch.nn.Linear) and (linear.in_features, out) == (512, 128)
    mlp, out = projection_head("mlp", 512, 64, 32, num_layers=3)  # case-insensitive
    assert [type(m).__name__ for m in mlp] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"] and out == 32
    none, out = projection_head("none", 512)
    assert isinstance(none, torch.nn.Identity) and out == 512
    model = SimCLR(projectionhead="linear", **TINY)
    assert isinstance(model.projector, torch.nn.Linear)


def test_lightly_style_and_plain_batches_are_understood():
    model = SimCLR(**TINY)
    views, labels = _views(), torch.arange(8)
    for batch in ((views, labels, [f"{i}.png" for i in range(8)]), views):
        assert torch.isfinite(model.training_step(batch, 0))
    with pytest.raises(ValueError, match="num_views>=2"):  # (x, y) of a plain classification loader: one view
        model.training_step((views[0], labels), 0)
