"""Classification scores from class scores [N, C] and labels, through torchmetrics.

Names: accuracy, top{K}_accuracy (e.g. top5_accuracy; `top_k_accuracy` uses top_k, at least 2),
precision, recall, f1, balanced_accuracy. Accuracy is the plain fraction of correct predictions (as
scikit-learn's accuracy_score and the k-NN numbers papers report); `average` ('macro', 'micro',
'weighted') applies to precision, recall and F1 as in torchmetrics/scikit-learn; balanced_accuracy is
the mean per-class recall.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torchmetrics.functional.classification import (multiclass_accuracy, multiclass_f1_score, multiclass_precision,
                                                    multiclass_recall)

METRICS = ("accuracy", "top_k_accuracy", "precision", "recall", "f1", "balanced_accuracy")
_ALIASES = {"acc": "accuracy", "top1": "accuracy", "top1_accuracy": "accuracy", "f1_score": "f1", "f1score": "f1",
            "balanced": "balanced_accuracy", "balanced_acc": "balanced_accuracy", "topk": "top_k_accuracy",
            "top_k": "top_k_accuracy", "topk_accuracy": "top_k_accuracy"}
AVERAGES = ("macro", "micro", "weighted")


def metric_names(metric: str | Iterable[str]) -> list[str]:
    """Normalise one name or a list of names; unknown names fail with the list of choices."""
    names = [metric] if isinstance(metric, str) else list(metric)
    if not names:
        raise ValueError(f"no metric given; choose from {', '.join(METRICS)} (or top5_accuracy)")
    out = []
    for name in names:
        key = _ALIASES.get(str(name).lower().replace("-", "_").replace(" ", "_"), str(name).lower())
        if key not in METRICS and not re.fullmatch(r"top\d+_accuracy", key):
            raise ValueError(f"unknown metric '{name}'; choose from {', '.join(METRICS)} (or topK_accuracy, e.g. top5_accuracy)")
        out.append(key)
    return out


def check_average(average: str) -> str:
    if average not in AVERAGES:
        raise ValueError(f"unknown average '{average}'; choose from {', '.join(AVERAGES)}")
    return average


def compute_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    metric: str | Iterable[str] = "accuracy", top_k: int = 1, average: str = "macro") -> dict[str, float]:
    """{name: value in [0, 1]} for every requested metric. `scores` are logits, probabilities or votes."""
    check_average(average)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    scores, labels = scores.detach().float().cpu(), labels.detach().long().cpu()
    if scores.shape[1] < num_classes:  # a classifier that never saw the last classes: they score -inf
        pad = torch.full((scores.shape[0], num_classes - scores.shape[1]), float("-inf"))
        scores = torch.cat([scores, pad], dim=1)
    scores = torch.nan_to_num(scores, nan=-1e30, neginf=-1e30, posinf=1e30)
    if num_classes < 2:  # torchmetrics needs two classes; a one-class problem is trivially right
        scores, num_classes = torch.cat([scores, torch.full_like(scores[:, :1], -1e30)], dim=1), 2
    k = min(top_k, num_classes)
    out = {}
    for name in metric_names(metric):
        if name == "accuracy":
            value = multiclass_accuracy(scores, labels, num_classes, average="micro", top_k=k)
        elif name == "top_k_accuracy" or name.startswith("top"):
            kk = max(2, top_k) if name == "top_k_accuracy" else int(name[3:].split("_")[0])
            name = f"top{kk}_accuracy"
            value = multiclass_accuracy(scores, labels, num_classes, average="micro", top_k=min(kk, num_classes))
        elif name == "precision":
            value = multiclass_precision(scores, labels, num_classes, average=average, top_k=k)
        elif name == "recall":
            value = multiclass_recall(scores, labels, num_classes, average=average, top_k=k)
        elif name == "f1":
            value = multiclass_f1_score(scores, labels, num_classes, average=average, top_k=k)
        else:  # balanced accuracy: mean recall over classes, always top-1
            value = multiclass_recall(scores, labels, num_classes, average="macro", top_k=1)
        out[name] = min(1.0, max(0.0, float(value)))  # float sums can land a hair above 1
    return out


def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., 2023, arXiv:2210.02885, eq. 1): exp of the entropy of the singular values of the
    features [N, D], normalised to sum to 1. Between 1 and min(N, D); near 1 when the representation has collapsed
    onto a few directions (a method can collapse without labels to show it; k-NN then sits at random init's)."""
    s = torch.linalg.svdvals(features.float())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))
