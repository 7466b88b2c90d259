"""FCMAE, MAE and SimMIM as methods on the core: one view and a mask, built from the CLI config and the
Python API, trained, resumed, exported (the encoder into plain timm, the decoder on its own), with the
reconstruction figure written during training and the information barrier holding inside `step`."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file

from autossl.cli.main import main
from autossl.data import make_dataloader
from autossl.data.batch import unpack_batch
from autossl.heads.decoders import FCMAEDecoder
from autossl.methods import FCMAE, MAE, SimMIM
from autossl.methods.checkpoint import method_from_checkpoint
from autossl.train import build_model, compose

from conftest import quiet_trainer

SMALL = {
    "fcmae": (FCMAE, dict(backbone="convnextv2_atto", decoder_dim=32)),
    "mae": (MAE, dict(backbone="vit_tiny", backbone_kwargs=dict(depth=2), decoder_dim=32, decoder_depth=1,
                      decoder_heads=2)),
    "simmim": (SimMIM, dict(backbone="vit_tiny", backbone_kwargs=dict(depth=2))),
    "simmim_swin": (SimMIM, dict(backbone="swin_tiny", backbone_kwargs=dict(depths=(1, 1), num_heads=(3, 6)))),
}


def _make(key: str, **extra):
    cls, kw = SMALL[key]
    torch.manual_seed(0)
    return cls(image_size=32, num_views=1, **{"max_steps": 4, "warmup_steps": 1, **kw, **extra})


def _loader(mnist_arrays, batch=8):
    return make_dataloader(mnist_arrays, num_views=1, batch_size=batch, image_size=32, preset="mnist", num_workers=0,
                           seed=0)


@pytest.mark.parametrize("key", list(SMALL))
def test_one_view_methods_train_and_their_loss_falls(tmp_path, mnist_arrays, key):
    model = _make(key, lr=2e-3, scale_lr=False, max_steps=10)
    eight = (mnist_arrays[0][:8], mnist_arrays[1][:8])  # one batch per epoch: the steps see these digits
    batch = unpack_batch(next(iter(_loader(eight))))
    torch.manual_seed(1)
    first = float(model.step(batch)["loss"])
    quiet_trainer(tmp_path, max_steps=10).fit(model, _loader(eight))
    torch.manual_seed(1)
    after = float(model.step(batch)["loss"])  # the same masks on the same batch
    assert after < first, (first, after)
    assert model.probe is not None  # the labelled digits fed the online probe through `feats`


@pytest.mark.parametrize("key", ["fcmae", "mae"])
def test_masked_pixels_never_reach_the_prediction(key):
    """Inside the method's own step: the same mask, different pixels under it -> the same prediction."""
    model = _make(key).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(3)
    _, pred, mask, _, *_ = model._forward_masked(x)
    patch = model.encoder.stride if key == "fcmae" else model.encoder.patch_size
    grid = 32 // patch
    pixel_mask = mask.view(2, 1, grid, grid).float().repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    noisy = x + 5 * torch.randn_like(x) * pixel_mask
    torch.manual_seed(3)
    _, pred_noisy, mask_again, _, *_ = model._forward_masked(noisy)
    assert torch.equal(mask, mask_again)
    torch.testing.assert_close(pred_noisy, pred, atol=1e-5, rtol=0)
    torch.manual_seed(3)  # and the check can fail: noise on the visible pixels does change the prediction
    _, pred_visible, *_ = model._forward_masked(x + 5 * torch.randn_like(x) * (1 - pixel_mask))
    assert not torch.allclose(pred_visible, pred, atol=1e-3)


@pytest.mark.parametrize("method, backbone", [("fcmae", "convnextv2_atto"), ("mae", "vit_tiny"), ("simmim", "vit_tiny")])
def test_cli_config_builds_each_method_with_its_published_recipe(method, backbone):
    cfg = compose([f"experiment=cifar10_{method}", "data.dataset=mnist", "data.image_size=32"])
    model = build_model(cfg)
    assert model.name == method and model.backbone.spec["name"] == backbone
    assert model.cfg["optimizer"] == "adamw" and model.cfg["weight_decay"] == 0.05 and model.min_views == 1
    if method in ("fcmae", "mae"):
        assert tuple(model.cfg["betas"]) == (0.9, 0.95) and model.cfg["lr"] == 1.5e-4
        assert model.cfg["mask_ratio"] == {"fcmae": 0.6, "mae": 0.75}[method]


def test_a_method_refuses_a_backbone_it_cannot_mask(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "method=fcmae", "model.backbone=resnet18", "data.image_size=32", "trainer.max_steps=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fcmae needs a ConvNeXt(-V2) backbone" in err


def test_pretrain_writes_the_reconstruction_figure_and_exports_encoder_and_decoder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "method=fcmae", "model.backbone=convnextv2_atto", "model.params.decoder_dim=32",
                 "data.image_size=32", "data.num_views=1", "data.batch_size=8", "data.num_workers=0",
                 "data.val_split=0", "trainer.max_steps=2", "trainer.progress_bar=false", "name=fc"]) == 0
    png = tmp_path / "runs" / "fc" / "reconstruction.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    ckpt = tmp_path / "checkpoints" / "fc" / "last.ckpt"
    assert main(["export", str(ckpt), "--out", "enc.safetensors", "--decoder", "dec.safetensors"]) == 0
    plain = timm.create_model("convnextv2_atto", num_classes=0)
    plain.load_state_dict(load_file("enc.safetensors"), strict=True)  # the encoder in plain timm
    trained = method_from_checkpoint(ckpt)
    decoder = FCMAEDecoder(320, 8, 3, decoder_dim=32)
    decoder.load_state_dict(load_file("dec.safetensors"), strict=True)
    for k, v in trained.decoder.state_dict().items():
        assert torch.equal(decoder.state_dict()[k], v)


def test_resume_continues_from_the_checkpoint_weights(tmp_path, mnist_arrays):
    from pytorch_lightning.callbacks import Callback

    first = _make("mae")
    t1 = quiet_trainer(tmp_path, max_steps=2)
    t1.fit(first, _loader(mnist_arrays))
    t1.save_checkpoint(tmp_path / "two.ckpt")

    class StartWeights(Callback):
        def on_train_start(self, trainer, pl_module):
            self.decoder = {k: v.clone() for k, v in pl_module.decoder.state_dict().items()}

    seen = StartWeights()
    resumed = _make("mae")  # fresh random weights: resuming must replace them
    t2 = quiet_trainer(tmp_path, max_steps=4, callbacks=[seen])
    t2.fit(resumed, _loader(mnist_arrays), ckpt_path=str(tmp_path / "two.ckpt"))
    assert t2.global_step == 4
    for k, v in first.decoder.state_dict().items():
        assert torch.equal(seen.decoder[k], v), k
    assert not torch.equal(resumed.decoder.pred.weight, first.decoder.pred.weight)  # and it trained on


def test_fcmae_decoder_init_the_reference_way_or_small():
    """The reference's decoder init (every conv at std 1) starts the norm-pix loss far above MAE's ~1; with
    decoder_init_std=0.02 it starts near 1 (norm-pix targets have unit variance, the predictions ~0)."""
    from autossl.data.batch import make_batch

    batch = unpack_batch(make_batch([torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))],
                                    torch.zeros(16, dtype=torch.long)))
    losses = {}
    for std in (None, 0.02):
        torch.manual_seed(0)
        model = FCMAE(backbone="convnextv2_atto", num_views=1, image_size=32, decoder_init_std=std)
        convs = [m.weight for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
        want = 0.88 * (std or 1.0)  # a normal truncated at 2 sigma has 0.88 sigma
        assert abs(float(torch.cat([w.flatten() for w in convs]).std()) - want) < 0.1 * want
        with torch.no_grad():
            losses[std] = float(model.step(batch)["loss"])
    assert losses[None] > 5 and 0.8 < losses[0.02] < 1.3, losses
