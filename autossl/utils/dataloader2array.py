"""`dataloader2array(loader)`: the images and labels a DataLoader yields, as numpy arrays (the earlier
autoSSL's helper, used to hand a loader's data to `Eval_knn(model, dataset=(X, y))` and friends)."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from ..data.batch import unpack_batch


def dataloader2array(loader: Iterable, max_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 [N, C, H, W], y int64 [N]) from any accepted batch format; of a batch of views, the first
    view. Unlabelled images get label -1. Stops after `max_samples` images when given."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    n = 0
    for batch in loader:
        b = unpack_batch(batch)
        if not b.views:
            continue
        x = b.views[0]
        y = b.labels if b.labels is not None else torch.full((len(x),), -1, dtype=torch.long)
        xs.append(x.detach().float().cpu())
        ys.append(y.cpu())
        n += len(x)
        if max_samples is not None and n >= max_samples:
            break
    if not xs:
        raise ValueError("the loader yielded no readable images; check its dataset")
    X, y = torch.cat(xs), torch.cat(ys)
    if max_samples is not None:
        X, y = X[:max_samples], y[:max_samples]
    return X.numpy(), y.numpy()
