"""Reading the batch formats users bring: ours, lightly's and plain (x, y) pairs."""
from __future__ import annotations

from typing import Any

import torch


def unpack_batch(batch: Any) -> tuple[list[torch.Tensor], torch.Tensor | None, int]:
    """-> (views, labels or None, number of skipped files).

    Accepted: our dict batches ({'views'|'image', 'label', 'skipped'}); `(views, labels)` and
    lightly's `(views, labels, filenames)`; `(x, y)` with a single tensor; a bare list of views.
    """
    if isinstance(batch, dict):
        views = batch.get("views")
        if views is None:
            views = [batch["image"]] if "image" in batch else []
        labels = batch.get("label")
        return list(views), _labels(labels), int(batch.get("skipped", 0))
    if isinstance(batch, (list, tuple)):
        if batch and all(isinstance(v, torch.Tensor) and v.ndim == 4 for v in batch):
            return list(batch), None, 0
        first = batch[0]
        labels = _labels(batch[1]) if len(batch) > 1 else None
        views = list(first) if isinstance(first, (list, tuple)) else [first]
        return views, labels, 0
    if isinstance(batch, torch.Tensor):
        return [batch], None, 0
    raise TypeError(f"unsupported batch type {type(batch).__name__}; yield (views, labels) or use autossl.data.make_dataloader")


def _labels(y: Any) -> torch.Tensor | None:
    if isinstance(y, torch.Tensor) and y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and y.ndim == 1:
        return y.long()
    return None
