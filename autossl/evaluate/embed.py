"""2-D maps of the features, coloured by class: UMAP (umap-learn) or t-SNE (scikit-learn), saved as PNG.

Figures are drawn on a bare matplotlib Figure (Agg canvas), so the user's pyplot backend, e.g. a
notebook's inline one, is never switched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

METHODS = ("umap", "tsne")


def embed_2d(features: torch.Tensor | np.ndarray, method: str = "umap", seed: int = 0) -> np.ndarray:
    """[N, 2] coordinates of the features (cosine geometry for UMAP, PCA-initialised t-SNE)."""
    x = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float32)
    if len(x) < 5:
        raise ValueError(f"an embedding plot needs at least 5 images, got {len(x)}")
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ImportError("UMAP plots need umap-learn: pip install umap-learn (or use method='tsne')") from None
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), min_dist=0.1, metric="cosine",
                            random_state=seed)
        return reducer.fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(x) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    raise ValueError(f"unknown embedding method '{method}'; choose from {', '.join(METHODS)}")


def plot_embedding(features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, out: str | Path,
                   method: str = "umap", class_names: Sequence[str] | None = None, title: str | None = None,
                   max_points: int = 5000, seed: int = 0) -> Path:
    """Embed (a seeded sample of at most `max_points` of) the features in 2-D and save a scatter
    plot coloured by class. Returns the PNG path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    feats = features.cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if len(feats) != len(labels):
        raise ValueError(f"{len(feats)} feature rows but {len(labels)} labels; they must match")
    if len(feats) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(feats), max_points, replace=False))
        feats, labels = feats[keep], labels[keep]
    xy = embed_2d(feats, method, seed)
    fig = Figure(figsize=(6, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    classes = np.unique(labels)
    colours = _palette(len(classes))
    for colour, c in zip(colours, classes):
        m = labels == c
        name = class_names[int(c)] if class_names is not None and 0 <= int(c) < len(class_names) else str(c)
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=colour, label=name, alpha=0.8, linewidths=0)
    if len(classes) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best", frameon=False)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title or f"{method.upper() if method == 'umap' else 't-SNE'} of {len(feats)} images")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    return out


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return [cmap(i if n <= 20 else i / max(1, n - 1)) for i in range(n)]
