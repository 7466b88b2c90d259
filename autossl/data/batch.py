"""The batch contract: the one place that knows how a batch looks.

Our loaders yield dicts `{'views': [V x [B, C, H, W]], 'label': [B] (-1 = unlabelled), 'skipped': n}`
for training and `{'image': [B, C, H, W], 'label': [B], 'skipped': n}` for evaluation. Global views
come first, then local (multi-crop) views, which are smaller. `make_batch` builds them (both
collate functions call it); `unpack_batch` reads them, and also the formats users bring: lightly's
`(views, labels, filenames)`, plain `(x, y)` pairs and bare lists of views.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass
class Batch:
    """What a method's `step` receives."""
    views: list[torch.Tensor]
    labels: torch.Tensor | None = None
    skipped: int = 0

    @property
    def size(self) -> int:
        return len(self.views[0]) if self.views else 0

    def padded_to(self, n: int) -> "Batch":
        """The batch with its images repeated cyclically up to `n` (their views and labels alike): under DDP
        every rank must hand the gathering losses the same batch size, even after dropping unreadable files."""
        if self.size >= n or not self.size:
            return self
        idx = torch.arange(n, device=self.views[0].device) % self.size
        labels = self.labels[idx] if self.labels is not None else None
        return Batch([v[idx] for v in self.views], labels, self.skipped)

    @property
    def num_global(self) -> int:
        """Leading views at the first view's resolution (multi-crop puts smaller local crops after them)."""
        if not self.views:
            return 0
        shape = self.views[0].shape[1:]
        n = 0
        while n < len(self.views) and self.views[n].shape[1:] == shape:
            n += 1
        return n

    @property
    def global_views(self) -> list[torch.Tensor]:
        return self.views[: self.num_global]

    @property
    def local_views(self) -> list[torch.Tensor]:
        return self.views[self.num_global:]


def make_batch(views: Sequence[torch.Tensor] | torch.Tensor | None, labels: Sequence[int] | torch.Tensor,
               skipped: int = 0) -> dict[str, Any]:
    """A batch dict: a list of views (training) or one stacked image tensor (evaluation).
    `views=None` means every file of the batch was unreadable."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if views is None:
        return {"views": [], "label": labels.reshape(0), "skipped": skipped}
    if isinstance(views, torch.Tensor):
        return {"image": views, "label": labels, "skipped": skipped}
    return {"views": list(views), "label": labels, "skipped": skipped}


def unpack_batch(batch: Any) -> Batch:
    """Any accepted batch -> `Batch`. Accepted: our dicts; `(views, labels)` and lightly's
    `(views, labels, filenames)`; `(x, y)` with a single tensor; a bare list of views; a tensor."""
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, dict):
        views = batch.get("views")
        if views is None:
            views = [batch["image"]] if "image" in batch else []
        return Batch(list(views), _labels(batch.get("label")), int(batch.get("skipped", 0)))
    if isinstance(batch, (list, tuple)):
        if batch and all(isinstance(v, torch.Tensor) and v.ndim == 4 for v in batch):
            return Batch(list(batch))
        first = batch[0]
        labels = _labels(batch[1]) if len(batch) > 1 else None
        return Batch(list(first) if isinstance(first, (list, tuple)) else [first], labels)
    if isinstance(batch, torch.Tensor):
        return Batch([batch])
    raise TypeError(f"unsupported batch type {type(batch).__name__}; yield (views, labels) or use "
                    f"autossl.data.make_dataloader")


def images_and_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of an evaluation batch: the first view of a training batch, or the image."""
    b = unpack_batch(batch)
    images = b.views[0] if b.views else torch.empty(0)
    labels = b.labels if b.labels is not None else torch.as_tensor(batch[1] if isinstance(batch, (list, tuple))
                                                                     else torch.empty(0, dtype=torch.long))
    return images, labels


def _labels(y: Any) -> torch.Tensor | None:
    if isinstance(y, torch.Tensor) and y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and y.ndim == 1:
        return y.long()
    return None
