"""Evaluation data: a train and a test split from whatever the user gave, and eval-style loaders.

Given one split only (arrays, a Dataset, a flat class folder, 'mnist'), the train/test split is a
stated, seeded one: stratified, 80/20, seed 0 by default, and it is recorded in every result.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..data import PRESETS, TransformedDataset, build_dataset, collate_views, eval_transform, preset_for
from ..data.datasets import check_same_classes
from ..data.views import Augment, view_transform

OFFICIAL_TEST = ("cifar10", "cifar100", "stl10")  # names whose test split we load instead of cutting one


@dataclass
class EvalData:
    train: Dataset
    test: Dataset
    num_classes: int
    split: str  # how train/test were obtained, recorded beside every score
    preset: str | None  # normalisation preset (dataset name) or None for ImageNet statistics


def dataset_labels(ds: Dataset) -> np.ndarray:
    """All labels of a dataset, without decoding images where the dataset lists them."""
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[np.asarray(ds.indices)]
    if isinstance(ds, TransformedDataset):
        return dataset_labels(ds.base)
    targets = getattr(ds, "targets", None)
    if targets is not None:
        return np.asarray(targets, dtype=np.int64)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)


def build_source(data: Any, train: bool = True) -> Dataset:
    if isinstance(data, (str, Path)) and str(data).endswith(".npz"):
        if not Path(data).is_file():
            raise FileNotFoundError(f"arrays file not found: {data}")
        arrays = np.load(data)
        keys = {k.lower(): k for k in arrays.files}
        if "x" not in keys or "y" not in keys:
            raise ValueError(f"{data} must hold arrays named X and y (it has {', '.join(arrays.files)})")
        return build_dataset((arrays[keys["x"]], arrays[keys["y"]]))
    return build_dataset(data, train=train)


def dataset_name(data: Any) -> str | None:
    if isinstance(data, str) and not os.path.exists(data) and os.sep not in data:
        return data.lower().replace("-", "").replace("_", "")
    return None


def labelled_only(ds: Dataset, what: str) -> Dataset:
    labels = dataset_labels(ds)
    keep = np.flatnonzero(labels >= 0)
    if len(keep) == 0:
        raise ValueError(f"the {what} data has no labels; evaluation needs labelled images (class sub-folders or y)")
    return ds if len(keep) == len(labels) else Subset(ds, keep.tolist())


def stratified_split(ds: Dataset, test_size: float = 0.2, seed: int = 0) -> tuple[Subset, Subset, str]:
    """A seeded train/test cut, stratified by class when every class has at least two images."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    labels = dataset_labels(ds)
    idx = np.arange(len(labels))
    counts = np.unique(labels, return_counts=True)[1]
    # sklearn stratifies only when every class has 2+ images and each side can hold one of every class
    fits = min(len(labels) * test_size, len(labels) * (1 - test_size)) >= len(counts)
    stratify = labels if len(counts) and counts.min() >= 2 and fits else None
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=stratify)
    how = "stratified" if stratify is not None else "random"
    desc = f"{round((1 - test_size) * 100)}/{round(test_size * 100)} {how} split, seed {seed}"
    return Subset(ds, sorted(tr.tolist())), Subset(ds, sorted(te.tolist())), desc


def eval_splits(dataset: Any, test_dataset: Any = None, *, test_size: float = 0.2, seed: int = 0) -> EvalData:
    """Train and test datasets (labelled images only) from one source, or from two given ones.

    `dataset` may be a name, a folder (one with train/ and test/ or val/ sub-folders gives both
    splits), arrays (X, y) or a .npz file holding X and y, a torch Dataset, or a dict {'train', 'test'}."""
    if isinstance(dataset, dict):
        if "train" not in dataset or "test" not in dataset:
            raise ValueError("a dataset dict needs 'train' and 'test' entries")
        dataset, test_dataset = dataset["train"], dataset["test"]
    name = dataset_name(dataset)
    preset = name if name in PRESETS else None
    if test_dataset is not None:
        train, test, split = build_source(dataset), build_source(test_dataset), "given train and test sets"
    elif name in OFFICIAL_TEST:
        train, test, split = build_source(dataset, True), build_source(dataset, False), f"official {name} train/test split"
    elif isinstance(dataset, (str, Path)) and Path(dataset).is_dir() and _split_folders(Path(dataset)):
        tr_dir, te_dir = _split_folders(Path(dataset))
        train, test, split = build_dataset(tr_dir, labelled=True), build_dataset(te_dir, labelled=True), \
            f"folders {tr_dir.name}/ and {te_dir.name}/"
    else:
        full = labelled_only(build_source(dataset), "evaluation")
        train, test, split = stratified_split(full, test_size, seed)
    check_same_classes(train, test, "training", "test")
    train, test = labelled_only(train, "training"), labelled_only(test, "test")
    ys = np.concatenate([dataset_labels(train), dataset_labels(test)])
    num_classes = max(int(ys.max()) + 1, len(getattr(_root(train), "classes", None) or []))
    return EvalData(train, test, num_classes, split, preset)


def _root(ds: Dataset) -> Dataset:
    while isinstance(ds, (Subset, TransformedDataset)):
        ds = ds.dataset if isinstance(ds, Subset) else ds.base
    return ds


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    for test_name in ("test", "val", "validation"):
        if (root / "train").is_dir() and (root / test_name).is_dir():
            return root / "train", root / test_name
    return None


def subset_by_fraction(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a stratified `fraction` of the labels, at least one per class (semi-supervised)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, int(round(len(idx) * fraction)))
        keep.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def eval_loader(ds: Dataset, *, image_size: int = 32, preset: str | None = None, batch_size: int = 256,
                num_workers: int = 0, augment: bool = False, shuffle: bool = False, drop_last: bool = False,
                seed: int = 0) -> DataLoader:
    """Resize + normalise batches {'image', 'label'}; with `augment`, the random-resized-crop and flip
    of the classic supervised protocols instead of the centre resize."""
    p = preset_for(preset, image_size)
    if augment:
        transform = view_transform(p, Augment(crop_scale=(0.08, 1.0), jitter_prob=0.0, grayscale_prob=0.0))
    else:
        transform = eval_transform(p)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TransformedDataset(ds, transform), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, collate_fn=collate_views, generator=generator,
                      persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())
