"""The method core: registry, batch contract, and the three shapes a method can take on the base:
one view (+ a mask), a teacher that sees a subset of the views, and parameter groups with layer decay."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn

from autossl.core.registry import METHODS, Registry
from autossl.data import make_dataloader
from autossl.data.batch import Batch, make_batch, unpack_batch
from autossl.heads import DINOHead, prediction_head
from autossl.losses import negative_cosine_loss
from autossl.methods import SimCLR, SSLMethod
from autossl.methods.checkpoint import method_from_checkpoint

from conftest import TINY, quiet_trainer


# ---- registry -----------------------------------------------------------------------------------------
def test_registry_names_aliases_and_did_you_mean():
    reg = Registry("widget")
    reg.register("alpha", 1, aliases=("first",), info="the first one")

    @reg.register("beta")
    class Beta:
        """Second widget."""

    assert reg.get("ALPHA") == 1 and reg.get("first") == 1 and reg.get("beta") is Beta
    assert reg.describe("beta") == "Second widget." and reg.describe("first") == "the first one"
    with pytest.raises(ValueError, match=r"^unknown widget 'alpah'; did you mean 'alpha'\? \(choose one of alpha, beta\)$"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha", 2)


def test_every_method_is_registered_where_it_is_defined():
    for name, cls in METHODS.items():
        assert issubclass(cls, SSLMethod) and cls.name == name
        assert cls.__module__ == f"autossl.methods.{name}"  # declared in its own file
    assert METHODS.get("SiaSiam").name == "simsiam" and METHODS.get("mocov2").name == "moco"


# ---- the batch contract ----------------------------------------------------------------------------------
def test_batch_contract_round_trips_every_accepted_format():
    g = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    local = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    y = torch.arange(4)
    b = unpack_batch(make_batch(g + local, y, skipped=1))
    assert b.num_global == 2 and b.global_views == g and b.local_views == local and b.skipped == 1
    assert torch.equal(b.labels, y) and b.size == 4
    assert unpack_batch((g, y, ["a.jpg"] * 4)).views == g  # lightly's (views, labels, filenames)
    assert unpack_batch((g[0], y)).views == [g[0]] and unpack_batch(g).labels is None
    empty = unpack_batch(make_batch(None, [], skipped=4))
    assert empty.views == [] and empty.size == 0 and empty.skipped == 4
    with pytest.raises(TypeError, match="unsupported batch type"):
        unpack_batch("not a batch")


def test_cfg_is_read_only_and_hparams_are_what_the_caller_passed(tmp_path, mnist_arrays):
    model = SimCLR(**TINY, temperature=0.3)
    assert model.cfg["temperature"] == 0.3 and model.cfg["optimizer"] == "lars"  # the method's default filled in
    with pytest.raises(TypeError, match="read-only"):
        model.cfg["temperature"] = 1.0
    loader = make_dataloader(mnist_arrays, batch_size=32, image_size=16, preset="mnist", num_workers=0, seed=0)
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model, loader)
    assert model.probe is not None and model.probe.classifier.out_features == 10  # sized from the data...
    assert model.hparams.num_classes is None  # ...without rewriting what the caller passed
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    again = method_from_checkpoint(tmp_path / "m.ckpt")  # the probe comes back from the checkpoint's weights
    assert torch.equal(again.probe.classifier.weight, model.probe.classifier.weight)


# ---- a method whose teacher sees only the global views ---------------------------------------------------------
class GlobalTeacher(SSLMethod):
    """A DINO-shaped toy: student on every view (global and local crops), EMA teacher on global crops only."""
    name = "global_teacher_toy"
    momentum_targets = {"target_backbone": "backbone", "target_projector": "projector"}
    defaults = dict(optimizer="adamw", lr=1e-3, weight_decay=0.0, proj_hidden_dim=32, proj_output_dim=16, proj_layers=2,
                    momentum_base=0.9)

    def build_heads(self):
        self.build_projector()
        self.predictor = prediction_head(self.cfg["proj_output_dim"], 16)
        self.teacher_inputs: list[tuple] = []

    def step(self, batch: Batch):
        student = self.encode_views(batch.views)
        self.teacher_inputs.append(tuple(v.shape[-1] for v in batch.global_views))
        teacher = self.encode_target(batch.global_views)
        loss = torch.stack([negative_cosine_loss(self.predictor(self.projector(s)), t)
                            for i, s in enumerate(student) for j, t in enumerate(teacher) if i != j]).mean()
        return {"loss": loss, "feats": student[0]}


def test_a_teacher_can_see_a_subset_of_the_views(tmp_path, mnist_arrays):
    torch.manual_seed(0)
    model = GlobalTeacher(backbone="resnet18", image_size=16)
    seen_by_teacher = []
    model.target_backbone.register_forward_pre_hook(lambda m, args: seen_by_teacher.append(args[0].shape[-1]))
    loader = make_dataloader(mnist_arrays, num_views=2, num_local=3, local_size=8, batch_size=32, image_size=16,
                             preset="mnist", num_workers=0, seed=0)
    before = [p.clone() for p in model.target_backbone.parameters()]
    quiet_trainer(tmp_path, max_steps=2).fit(model, loader)
    assert model.teacher_inputs == [(16, 16), (16, 16)]  # two global crops per step, never the 8 px local crops
    assert set(seen_by_teacher) == {16}
    after = list(model.target_backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # the EMA moved the teacher
    assert all(not p.requires_grad for p in after)
    assert [id(t) for _, t in model.momentum_pairs] == [id(model.target_backbone), id(model.target_projector)]


# ---- parameter groups --------------------------------------------------------------------------------------
def test_layer_decay_scales_the_lr_by_depth_and_spares_biases_and_norms(tmp_path, mnist_arrays):
    base_lr, decay = 1e-3, 0.5
    model = SimCLR(backbone="vit_tiny", image_size=16, backbone_kwargs=dict(depth=2), proj_hidden_dim=32,
                   proj_output_dim=16, optimizer="adamw", lr=base_lr, scale_lr=False, weight_decay=0.05,
                   layer_decay=decay, betas=(0.9, 0.95), max_steps=4)
    loader = make_dataloader(mnist_arrays, batch_size=32, image_size=16, preset="mnist", num_workers=0, seed=0)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(model, loader)
    opt = trainer.optimizers[0]
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    vit = model.backbone.model
    scales = [group_of[id(p)]["lr_scale"] for p in (vit.patch_embed.proj.weight, vit.blocks[0].mlp.fc1.weight,
                                                      vit.blocks[1].mlp.fc1.weight)]
    assert scales[1] == pytest.approx(scales[0] / decay) and scales[2] == pytest.approx(scales[1] / decay)
    head = group_of[id(model.projector[0].weight)]
    assert head.get("lr_scale", 1.0) == 1.0 >= scales[2] and head["weight_decay"] == 0.05
    # after the step, the scheduler applied the scales: each layer moves at its scale times the head's LR
    stem = group_of[id(vit.patch_embed.proj.weight)]
    assert stem["lr"] == pytest.approx(head["lr"] * scales[0]) and head["lr"] > 0
    for bias_or_norm in (vit.blocks[0].norm1.weight, vit.blocks[0].attn.qkv.bias, model.projector[1].weight):
        assert group_of[id(bias_or_norm)]["weight_decay"] == 0.0
    assert all(g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    probe = group_of[id(model.probe.classifier.weight)]  # the online probe: its own group, its own LR, no decay
    assert probe["weight_decay"] == 0.0 and probe is not head and "lr_scale" not in probe


def test_dino_head_is_weight_normalised_with_a_fixed_norm():
    head = DINOHead(32, hidden_dim=64, bottleneck_dim=16, out_dim=100)
    out = head(torch.randn(8, 32))
    assert out.shape == (8, 100)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    norms = head.last_layer.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    out.sum().backward()
    head.cancel_last_layer_gradients(epoch=0, freeze_epochs=1)
    assert all(p.grad is None for p in head.last_layer.parameters())
    assert head.mlp[0].weight.grad is not None


def test_a_method_without_loss_says_what_to_write():
    class NoLoss(SSLMethod):
        name = "noloss"

        def build_heads(self):
            self.projector = nn.Identity()

    model = NoLoss(**TINY)
    with pytest.raises(NotImplementedError, match="ssl_loss\\(feats, views\\) or step\\(batch\\)"):
        model.step(Batch([torch.randn(2, 3, 16, 16)] * 2))


def test_a_loader_without_length_needs_a_step_limit(tmp_path):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            while True:
                yield {"views": [torch.randn(4, 3, 16, 16)] * 2, "label": torch.zeros(4, dtype=torch.long) - 1}

    loader = torch.utils.data.DataLoader(Stream(), batch_size=None)
    with pytest.raises(ValueError, match="no length and no step limit is set; pass max_steps"):
        quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2).fit(SimCLR(**TINY), loader)
    quiet_trainer(tmp_path, max_steps=2).fit(SimCLR(**TINY), loader)  # with a limit it trains


def test_the_backbone_is_held_once_and_compile_does_not_change_the_checkpoint(tmp_path):
    plain, compiled = SimCLR(**TINY), SimCLR(**TINY, compile=True)  # compile is lazy: nothing is traced here
    keys = list(plain.state_dict())
    assert keys == list(compiled.state_dict()) and not [k for k in keys if not k.startswith(("backbone.", "projector."))]
    assert compiled._encoder is not compiled.backbone and plain._encoder is plain.backbone
    # a checkpoint written while `_encoder` was a registered module (every backbone weight twice) still loads
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(plain)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)
    ckpt["state_dict"].update({"_encoder." + k[len("backbone."):]: v for k, v in ckpt["state_dict"].items()
                               if k.startswith("backbone.")})
    torch.save(ckpt, tmp_path / "old.ckpt")
    again = method_from_checkpoint(tmp_path / "old.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), plain.state_dict().values()))
