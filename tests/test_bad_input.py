"""Bad input gets one clear line (or is handled): missing/empty folders, corrupt and odd image files,
tiny images, oversized batches, NaN losses, foreign checkpoints, misspelt names."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint

from autossl.data import build_dataset, make_dataloader, make_eval_loader
from autossl.data.images import read_image
from autossl.methods import BYOL, SimCLR, get_method
from conftest import TINY, quiet_trainer, write_image


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg, f"error message spans lines: {msg!r}"
    return msg


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        make_dataloader(tmp_path / "nope" / "images", batch_size=2, num_workers=0)
    assert "data folder not found" in _one_line(err) and "nope" in str(err.value)


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError) as err:
        build_dataset(tmp_path / "empty")
    assert "no images found" in _one_line(err)


def _folder_with_corrupt_files(root, good=7):
    (root).mkdir(parents=True)
    (root / "a_text.jpg").write_text("this is not a jpeg")  # sorts first: seen even without shuffling
    for i in range(good):
        write_image(root / f"img{i}.png", seed=i)
    return root


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    root = _folder_with_corrupt_files(tmp_path / "imgs", good=6)
    full = tmp_path / "imgs" / "img0.png"
    (tmp_path / "imgs" / "b_truncated.png").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    (tmp_path / "imgs" / "c_empty.png").write_bytes(b"")
    loader = make_dataloader(root, batch_size=9, image_size=16, num_workers=0, shuffle=False)
    batch = next(iter(loader))
    assert batch["skipped"] == 3
    assert [tuple(v.shape) for v in batch["views"]] == [(6, 3, 16, 16)] * 2 and len(batch["label"]) == 6
    eval_batch = next(iter(make_eval_loader(root, batch_size=9, image_size=16, num_workers=0)))
    assert eval_batch["skipped"] == 3 and eval_batch["image"].shape == (6, 3, 16, 16)


def test_training_reports_skipped_files_and_stops_past_the_threshold(tmp_path, capsys):
    root = _folder_with_corrupt_files(tmp_path / "imgs", good=7)  # 1 bad of 8: 12.5%
    loader = lambda: make_dataloader(root, batch_size=4, image_size=16, num_workers=0, shuffle=False)

    tolerant = SimCLR(max_bad_fraction=0.2, **TINY)
    quiet_trainer(tmp_path, max_epochs=1).fit(tolerant, loader())
    assert "skipped 1 unreadable image(s) of 8" in capsys.readouterr().out

    strict = SimCLR(**TINY)  # default max_bad_fraction 0.1
    with pytest.raises(RuntimeError) as err:
        quiet_trainer(tmp_path, max_epochs=1).fit(strict, loader())
    assert "max_bad_fraction" in _one_line(err) and "skipped 1" in str(err.value)


def test_odd_image_modes_become_rgb_uint8(tmp_path):
    paths = {mode: write_image(tmp_path / f"{mode.replace(';', '')}.png", size=(12, 9), mode=mode)
             for mode in ("L", "LA", "RGBA", "P", "I;16", "1")}
    paths["CMYK"] = write_image(tmp_path / "cmyk.jpg", size=(12, 9), mode="CMYK")
    for mode, path in paths.items():
        image = read_image(path)
        assert image.dtype == torch.uint8 and image.shape == (3, 9, 12), mode

    sixteen = read_image(paths["I;16"])
    assert Image.open(paths["I;16"]).mode.startswith("I")  # really a 16-bit file
    assert int(sixteen.min()) == 0 and int(sixteen.max()) == 255  # 1000..4000 rescaled, not clipped to 255
    assert len(sixteen.unique()) > 50

    transparent = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(transparent)
    assert read_image(transparent).unique().tolist() == [255]  # composited on white, not black

    # a folder mixing all of them (and sizes) trains as one dataset
    batch = next(iter(make_dataloader(tmp_path, batch_size=7, image_size=16, num_workers=0)))
    assert batch["skipped"] == 0 and batch["views"][0].shape == (7, 3, 16, 16)


def test_images_smaller_than_the_crop_are_upsampled(tmp_path):
    for i in range(4):
        write_image(tmp_path / "tiny" / f"{i}.png", size=(10, 10), seed=i)
    batch = next(iter(make_dataloader(tmp_path / "tiny", batch_size=4, image_size=32, num_workers=0)))
    assert [tuple(v.shape) for v in batch["views"]] == [(4, 3, 32, 32)] * 2
    evaluated = next(iter(make_eval_loader(tmp_path / "tiny", batch_size=4, image_size=32, num_workers=0)))
    assert evaluated["image"].shape == (4, 3, 32, 32)


def test_batch_larger_than_the_dataset(flat_folder):
    with pytest.raises(ValueError) as err:
        make_dataloader(flat_folder, batch_size=16, num_workers=0)
    msg = _one_line(err)
    assert "larger than the dataset (8 images)" in msg and "at most 8" in msg
    # without drop_last a single short batch is fine
    assert len(make_dataloader(flat_folder, batch_size=16, num_workers=0, drop_last=False)) == 1


def test_nan_loss_stops_with_step_and_last_good_checkpoint(mnist_arrays, tmp_path):
    loader = make_dataloader(mnist_arrays, batch_size=8, image_size=16, preset="mnist", num_workers=0)
    model = SimCLR(**TINY)
    real_loss, calls = model.ssl_loss, []

    def loss_that_explodes(feats, views):
        calls.append(1)
        loss = real_loss(feats, views)
        return loss * float("nan") if len(calls) == 2 else loss

    model.ssl_loss = loss_that_explodes
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    trainer = quiet_trainer(tmp_path, max_steps=5, callbacks=[checkpoints], enable_checkpointing=True)
    with pytest.raises(FloatingPointError) as err:
        trainer.fit(model, loader)
    msg = _one_line(err)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert "loss is nan at step 1" in msg and str(last) in msg

    restored = SimCLR.load_from_checkpoint(last)
    assert all(torch.isfinite(p).all() for p in restored.parameters())
    assert torch.load(last, weights_only=False)["global_step"] == 1


def test_resuming_from_another_methods_or_backbones_checkpoint(mnist_arrays, tmp_path):
    loader = make_dataloader(mnist_arrays, batch_size=8, image_size=16, preset="mnist", num_workers=0)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(BYOL(**TINY), loader)
    ckpt = tmp_path / "byol.ckpt"
    trainer.save_checkpoint(ckpt)

    with pytest.raises(ValueError) as err:
        quiet_trainer(tmp_path, max_steps=2).fit(SimCLR(**TINY), loader, ckpt_path=str(ckpt))
    assert "checkpoint is byol" in _one_line(err) and "simclr" in str(err.value)

    other_backbone = dict(TINY, backbone="wide_resnet16_4")
    with pytest.raises(ValueError) as err:
        quiet_trainer(tmp_path, max_steps=2).fit(BYOL(**other_backbone), loader, ckpt_path=str(ckpt))
    assert "resnet18" in _one_line(err) and "wide_resnet16_4" in str(err.value)


def test_misspelt_names_suggest_the_nearest():
    with pytest.raises(ValueError, match="did you mean 'byol'"):
        get_method("byl")
    with pytest.raises(ValueError, match="did you mean 'resnet50'"):
        SimCLR(backbone="resnet_50")
    with pytest.raises(ValueError, match="did you mean 'mnist'"):
        build_dataset("mnsit")
    with pytest.raises(ValueError, match="unknown projectionhead 'mlpp'"):
        SimCLR(projectionhead="mlpp", **{k: v for k, v in TINY.items()})


def test_arrays_of_the_wrong_shape():
    with pytest.raises(ValueError, match="got shape"):
        build_dataset(np.zeros((2, 3, 4, 5, 6)))
    with pytest.raises(ValueError, match="not square"):
        build_dataset(np.zeros((2, 10)))
    with pytest.raises(TypeError, match="cannot build a dataset"):
        build_dataset(3.5)


# ---- hostile and awkward files (reliability issue, finding 6) ------------------------------------------------
def test_a_decompression_bomb_is_skipped_like_any_unreadable_file(tmp_path, monkeypatch):
    for i in range(3):
        write_image(tmp_path / "imgs" / f"{i}.png", size=(8, 8), seed=i)
    write_image(tmp_path / "imgs" / "bomb.png", size=(40, 40), seed=9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)  # 40x40 = 1600 > 2 x 600: PIL raises, not warns
    ds = build_dataset(str(tmp_path / "imgs"))
    assert [ds[i][0] is None for i in range(len(ds))] == [False, False, False, True]  # sorted: 0, 1, 2, bomb


def test_hidden_and_macos_resource_files_are_not_images(tmp_path):
    for i in range(2):
        write_image(tmp_path / "imgs" / "cat" / f"{i}.jpg", seed=i)
    (tmp_path / "imgs" / "cat" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    write_image(tmp_path / "imgs" / "__MACOSX" / "cat" / "1.jpg", seed=5)
    write_image(tmp_path / "imgs" / ".thumbnails" / "2.jpg", seed=6)
    ds = build_dataset(str(tmp_path / "imgs"))
    assert [p.name for p in ds.files] == ["0.jpg", "1.jpg"] and ds.classes == ["cat"]


def test_class_folders_that_differ_between_splits_are_an_error(tmp_path):
    from autossl.evaluate.splits import eval_splits
    from autossl.train import compose
    from autossl.train.run import build_loaders

    for split, classes in (("train", ("cat", "dog", "emu")), ("test", ("cat", "emu"))):
        for c in classes:
            for i in range(2):
                write_image(tmp_path / split / c / f"{i}.png", size=(8, 8), seed=i)
    with pytest.raises(ValueError) as err:
        eval_splits(str(tmp_path / "train"), str(tmp_path / "test"))
    assert _one_line(err) == ("the training and test folders have different class sub-folders (only in training: dog), "
                              "so their labels would not match; give both the same class folders")
    cfg = compose(["data.dataset=folder", f"data.path={tmp_path / 'train'}", f"data.val_path={tmp_path / 'test'}",
                   "data.batch_size=2", "data.num_workers=0"])
    with pytest.raises(ValueError, match="training and validation folders have different class sub-folders"):
        build_loaders(cfg)


def test_a_batch_left_with_one_readable_image_is_skipped_not_a_crash(tmp_path, capsys):
    root = _folder_with_corrupt_files(tmp_path / "imgs", good=5)  # sorted: 1 corrupt file, then 5 good ones
    loader = make_dataloader(root, batch_size=2, image_size=16, num_workers=0, shuffle=False)
    assert [len(b["label"]) for b in loader] == [1, 2, 2]  # the first batch has one readable image
    model = SimCLR(max_bad_fraction=0.5, **TINY)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, loader)  # BatchNorm in training mode raises on a single sample: the step is skipped
    assert trainer.global_step == 3  # Lightning counts a skipped step (no gradient: the optimiser moves nothing)
    assert "skipped 2 unreadable image(s) of 6" in capsys.readouterr().out


@pytest.mark.parametrize("key, value", [("checkpoint_path", "/etc/passwd"), ("pretrained", True),
                                        ("pretrained_cfg_overlay", {"file": "/tmp/other.pth"})])
def test_a_files_metadata_cannot_make_loading_fetch_other_weights(tmp_path, key, value):
    import json

    from safetensors.torch import load_file, save_file

    from autossl.backbones import create_backbone, load, save

    path = save(create_backbone("resnet18", image_size=16), tmp_path / "b.safetensors")
    spec = {"name": "resnet18", "image_size": 16, "in_chans": 3, key: value}
    save_file(load_file(str(path)), str(path), metadata={"autossl.backbone": json.dumps(spec)})
    with pytest.raises(ValueError) as err:
        load(path)
    assert _one_line(err).startswith(f"refusing {path}: its backbone spec sets '{key}'")


def test_a_checkpoints_hyperparameters_cannot_reach_timm(tmp_path):
    from autossl.methods.checkpoint import method_from_checkpoint

    model = SimCLR(**TINY)
    trainer = quiet_trainer(tmp_path, max_steps=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "ok.ckpt")
    assert method_from_checkpoint(tmp_path / "ok.ckpt").cfg["proj_output_dim"] == 16
    ckpt = torch.load(tmp_path / "ok.ckpt", weights_only=True)
    for bad in ({"backbone_kwargs": {"checkpoint_path": "/tmp/x.pth"}},
                {"backbone_kwargs": {"pretrained_cfg_overlay": {"file": "/tmp/x.pth"}}}):
        ckpt["hyper_parameters"] = {**ckpt["hyper_parameters"], **bad}
        torch.save(ckpt, tmp_path / "bad.ckpt")
        with pytest.raises(ValueError) as err:
            method_from_checkpoint(tmp_path / "bad.ckpt")
        assert _one_line(err).startswith(f"refusing {tmp_path / 'bad.ckpt'}")
