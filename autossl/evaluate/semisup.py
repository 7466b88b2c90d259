"""Semi-supervised evaluation: the cached-feature linear probe trained on 1% and 10% of the labels.

The labelled subsets are stratified (at least one image per class) and seeded; the probe's own
validation cut is taken from the labelled subset only, so no hidden label is ever used.
"""
from __future__ import annotations

import torch

from .linear import linear_probe
from .metrics import compute_metrics
from .splits import subset_by_fraction


def semi_supervised_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                          num_classes: int, fractions: tuple[float, ...] = (0.01, 0.1), *, metric="accuracy",
                          top_k: int = 1, average: str = "macro", seed: int = 0, **probe_kwargs) -> dict[str, dict]:
    """{'1%': {'scores': {...}, 'n_labelled': ..., 'lr': ..., 'weight_decay': ...}, '10%': {...}}."""
    results = {}
    for fraction in fractions:
        keep = torch.as_tensor(subset_by_fraction(train_y.numpy(), float(fraction), seed))
        logits, info = linear_probe(train_x[keep], train_y[keep], test_x, num_classes, seed=seed, **probe_kwargs)
        scores = compute_metrics(logits, test_y, num_classes, metric, top_k, average)
        results[f"{fraction:.0%}" if fraction * 100 == int(fraction * 100) else f"{fraction:.1%}"] = {
            "scores": scores, "n_labelled": len(keep), "lr": info["lr"], "weight_decay": info["weight_decay"]}
    return results
