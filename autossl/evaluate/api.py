"""The earlier autoSSL evaluation API, unchanged for its callers:

    Eval_knn(model=m, dataset=(X, y), metric='accuracy', top_k=1, average='macro')
    Eval_linear(model=m, dataset=(X, y), metric='accuracy', top_k=1, average='macro')
    Eval_transfer(model=m, target_dataset=(X, y), metric='accuracy', top_k=1, average='macro')
    Compare_eval(models=[m1, m2], dataset=(X, y), metrics=['accuracy', 'precision', 'recall'])

`model`: an autossl method, a bare nn.Module backbone, a .ckpt checkpoint, a run folder or a
.safetensors backbone. `dataset`: arrays (X, y) (numpy or torch, HWC or CHW, uint8 or float), a
torch Dataset, an image folder, a dataset name, or {'train': ..., 'test': ...}. With a single split,
test images are a stratified 20% cut (seed 0). Every result records its settings under 'settings'.
Keyword options (all optional): test_dataset, test_size, image_size (32), preset, batch_size,
num_workers, seed, bf16, device, and each protocol's own (k, temperature, augment, epochs, ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from torch.utils.data import Subset

from .compare import compare
from .embed import METHODS as EMBEDDINGS
from .embed import plot_embedding
from .encoders import load_encoder
from .features import extract_features
from .protocols import evaluate
from .splits import build_source, dataset_name, eval_loader, labelled_only


def Eval_knn(model: Any, dataset: Any, metric: Any = "accuracy", top_k: int = 1, average: str = "macro", *,
             k: int = 200, temperature: float = 0.1, **options: Any) -> dict:
    """Weighted cosine k-NN on frozen features (k=200, T=0.1)."""
    return evaluate(model, dataset, "knn", metric=metric, top_k=top_k, average=average, k=k, temperature=temperature,
                    **options)


def Eval_linear(model: Any, dataset: Any, metric: Any = "accuracy", top_k: int = 1, average: str = "macro", *,
                augment: bool = False, label_fractions: Sequence[float] | None = None, **options: Any) -> dict:
    """Linear probe on cached frozen features (lr/weight-decay picked on validation). `augment=True`
    runs the classic augmented protocol; `label_fractions=(0.01, 0.1)` the semi-supervised one."""
    if label_fractions:
        return evaluate(model, dataset, "semisup", metric=metric, top_k=top_k, average=average,
                        fractions=tuple(label_fractions), **options)
    return evaluate(model, dataset, "linear", metric=metric, top_k=top_k, average=average, augment=augment, **options)


def Eval_finetune(model: Any, dataset: Any, metric: Any = "accuracy", top_k: int = 1, average: str = "macro",
                  **options: Any) -> dict:
    """Full fine-tuning (layer-wise lr decay, warmup-cosine, label smoothing; mixup/cutmix/EMA by option)."""
    return evaluate(model, dataset, "finetune", metric=metric, top_k=top_k, average=average, **options)


def Eval_transfer(model: Any, target_dataset: Any, metric: Any = "accuracy", top_k: int = 1, average: str = "macro",
                  **options: Any) -> dict:
    """Linear probe and fine-tuning on a target dataset: scores 'linear_<metric>' and 'finetune_<metric>'.
    `protocols=('linear',)` skips fine-tuning; `finetune_epochs=` sets its length."""
    return evaluate(model, target_dataset, "transfer", metric=metric, top_k=top_k, average=average, **options)


def Compare_eval(models: Sequence[Any], dataset: Any, metrics: Any = ("accuracy", "precision", "recall"),
                 top_k: int = 1, average: str = "macro", *, protocol: str = "knn",
                 names: Sequence[str] | None = None, **options: Any) -> pd.DataFrame:
    """A DataFrame with one row per model: its scores under one protocol (k-NN by default) and split."""
    return compare(models, dataset, metrics=metrics, protocol=protocol, names=names, top_k=top_k, average=average,
                   **options)


def Plot_embedding(model: Any, dataset: Any, out: str | Path = "embedding.png", method: str = "umap", *,
                   image_size: int = 32, preset: str | None = None, max_points: int = 5000, seed: int = 0,
                   batch_size: int = 256, num_workers: int = 0, device: str | None = None) -> Path:
    """UMAP or t-SNE map of the model's features of `dataset` (labelled images), coloured by class."""
    if method not in EMBEDDINGS:  # before the features are computed
        raise ValueError(f"unknown embedding method '{method}'; choose from {', '.join(EMBEDDINGS)}")
    encoder, _ = load_encoder(model)
    ds = labelled_only(build_source(dataset), "embedding")
    classes = getattr(ds, "classes", None) or getattr(getattr(ds, "dataset", None), "classes", None)
    if len(ds) > max_points:  # sample before the backbone runs, not after
        keep = np.sort(np.random.default_rng(seed).choice(len(ds), max_points, replace=False))
        ds = Subset(ds, keep.tolist())
    loader = eval_loader(ds, image_size=image_size, preset=preset or dataset_name(dataset), batch_size=batch_size,
                         num_workers=num_workers)
    feats, labels = extract_features(encoder, loader, device)
    return plot_embedding(feats, labels, out, method, class_names=classes, max_points=max_points, seed=seed)
