"""The one-call helper that turns a dataset name, a folder or arrays into a DataLoader of views."""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .batch import make_batch
from .batch_views import BatchViewCollate, make_batch_views
from .datasets import build_dataset, default_image_size, num_classes_of
from .seeded import SeededSampler, seeded
from .views import Augment, eval_transform, make_views, preset_for


class TransformedDataset(Dataset):
    """Applies a transform to the image of `(image, label)`; a None image (corrupt file) passes through."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base, self.transform = base, transform
        self.classes = getattr(base, "classes", None) or getattr(getattr(base, "dataset", None), "classes", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]):
        """`key` is an index, or `(index, seed)` from a SeededSampler: the views are then drawn from that seed
        (and the seed is passed on, for augmentations made per batch in the collate function)."""
        if isinstance(key, tuple):
            i, seed = key
            image, label = self.base[i]
            if self.transform is _identity:  # batched views: drawn in the collate function, from the seed
                return image, label, seed
            with seeded(seed):
                return (None if image is None else self.transform(image)), label, seed
        image, label = self.base[key]
        return (None if image is None else self.transform(image)), label

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else num_classes_of(_root(self.base))


def _root(ds: Dataset) -> Dataset:
    while isinstance(ds, Subset):
        ds = ds.dataset
    return ds


def collate_views(samples: list) -> dict[str, Any]:
    """Batch `(views | image, label)` samples, dropping unreadable ones and counting them."""
    good = [s for s in samples if s[0] is not None]
    skipped = len(samples) - len(good)
    if not good:
        return make_batch(None, [], skipped)
    labels = [s[1] for s in good]
    first = good[0][0]
    if isinstance(first, (list, tuple)):
        return make_batch([torch.stack([s[0][v] for s in good]) for v in range(len(first))], labels, skipped)
    return make_batch(torch.stack([s[0] for s in good]), labels, skipped)


def default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def _check_batch(dataset: Dataset, batch_size: int, drop_last: bool) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if drop_last and batch_size > len(dataset):
        raise ValueError(f"batch_size {batch_size} is larger than the dataset ({len(dataset)} images); "
                         f"set data.batch_size to at most {len(dataset)}")


def make_dataloader(data: Any = "mnist", *, num_views: int = 2, batch_size: int = 128, image_size: int | None = None,
                    preset: str | None = None, asymmetric: bool = False, num_local: int = 0, local_size: int | None = None,
                    augment: Augment | None = None, num_workers: int | None = None, shuffle: bool = True,
                    drop_last: bool = True, seed: int | None = None, batched_views: bool = False,
                    **dataset_kwargs: Any) -> DataLoader:
    """A training DataLoader of views: `trainer.fit(model, make_dataloader('mnist', num_views=4))`.

    `image_size` defaults to the preset's (a dataset name), else to the data's own size (arrays, folders:
    `datasets.default_image_size`: their own size, 16 to 224 px).

    `data` is a dataset name, a folder path, arrays `(X, y)` or a Dataset. Batches are dicts with
    `views` (list of [B, C, H, W] tensors), `label` (-1 when unlabelled) and `skipped` (unreadable files).
    `batched_views=True` augments each stacked batch at once (batch_views.py): the same recipe, several
    times cheaper on a CPU than per-image transforms.
    """
    dataset = build_dataset(data, **dataset_kwargs)
    preset = preset or (data if isinstance(data, str) and not os.path.exists(data) else None)
    image_size = image_size or (None if preset else default_image_size(dataset))
    view_args = dict(asymmetric=asymmetric, num_local=num_local, local_size=local_size, augment=augment)
    if batched_views:
        collate = BatchViewCollate(make_batch_views(preset, num_views, image_size, **view_args))
        ds = TransformedDataset(dataset, _identity)
    else:
        collate = collate_views
        ds = TransformedDataset(dataset, make_views(preset, num_views, image_size, **view_args))
    _check_batch(ds, batch_size, drop_last)
    return _loader(ds, batch_size, shuffle, drop_last, num_workers, seed, collate)


def _identity(image: Any) -> Any:
    return image


def make_eval_loader(data: Any, *, batch_size: int = 256, image_size: int | None = None, preset: str | None = None,
                     num_workers: int | None = None, **dataset_kwargs: Any) -> DataLoader:
    """Deterministic (resize + normalise) batches of `image`/`label`, for validation and evaluation."""
    dataset = build_dataset(data, **dataset_kwargs)
    preset = preset or (data if isinstance(data, str) and not os.path.exists(data) else None)
    image_size = image_size or (None if preset else default_image_size(dataset))
    ds = TransformedDataset(dataset, eval_transform(preset_for(preset, image_size)))
    return _loader(ds, batch_size, False, False, num_workers, None)


class SeededDataLoader(DataLoader):
    """A DataLoader whose order and augmentations are a function of (seed, epoch, index) alone
    (`SeededSampler`): epoch e is the same whatever happened before, and a run resumed after any batch
    continues with exactly the batches an uninterrupted run draws (the method stores the position in its
    checkpoint and calls `sampler.resume_at`)."""

    def __init__(self, dataset: Dataset, *args, seed: int, shuffle: bool = True, sampler=None, **kwargs):
        # Lightning re-creates the loader with the arguments it was built with (to insert a DistributedSampler,
        # which then wraps ours, or for overfit_batches): `sampler` comes back then, `generator` too (kwargs).
        sampler = sampler if sampler is not None else SeededSampler(len(dataset), seed, shuffle)
        # its own generator for the workers' base seed, so that starting an epoch never draws from the global
        # one (the model's random state, which a resumed run restores from the checkpoint)
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(dataset, *args, sampler=sampler, **kwargs)
        self.seed = seed


def _loader(ds: Dataset, batch_size: int, shuffle: bool, drop_last: bool, num_workers: int | None,
            seed: int | None, collate: Callable = collate_views) -> DataLoader:
    workers = default_workers() if num_workers is None else num_workers
    common = dict(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=workers,
                  collate_fn=collate, pin_memory=torch.cuda.is_available())
    if seed is not None:
        common.pop("shuffle")
        return SeededDataLoader(ds, seed=seed, shuffle=shuffle, **common)
    return DataLoader(ds, persistent_workers=workers > 0, **common)
