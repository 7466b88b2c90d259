"""Online monitors that read detached backbone features: a linear probe and a k-NN classifier.

Neither sends gradient into the backbone: both consume `features.detach()`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.knn import knn_predict


class OnlineProbe(nn.Module):
    """A linear classifier trained alongside the SSL objective on detached features (labels are
    used only here, never by the SSL loss)."""

    def __init__(self, feat_dim: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(feat_dim, num_classes)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        known = labels >= 0
        if not known.any():
            return None
        logits = self.classifier(features.detach()[known].float())
        loss = F.cross_entropy(logits, labels[known])
        acc = (logits.argmax(1) == labels[known]).float().mean()
        return loss, acc


class OnlineKNN:
    """Keeps a bank of the latest training features; at validation, classifies held-out images by
    weighted cosine k-NN against it (solo-learn's online k-NN)."""

    def __init__(self, k: int = 200, temperature: float = 0.1, max_bank: int = 20000):
        self.k, self.t, self.max_bank = k, temperature, max_bank
        self.bank_x: list[torch.Tensor] = []
        self.bank_y: list[torch.Tensor] = []
        self.query_x: list[torch.Tensor] = []
        self.query_y: list[torch.Tensor] = []

    def add_train(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        known = labels >= 0
        if known.any():
            self.bank_x.append(F.normalize(features.detach()[known].float(), dim=1))
            self.bank_y.append(labels[known])
            while sum(len(b) for b in self.bank_x) > self.max_bank:
                self.bank_x.pop(0), self.bank_y.pop(0)

    def add_val(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.query_x.append(F.normalize(features.detach().float(), dim=1))
        self.query_y.append(labels)

    def compute(self, num_classes: int) -> float | None:
        if not self.bank_x or not self.query_x:
            return None
        bank_x, bank_y = torch.cat(self.bank_x), torch.cat(self.bank_y)
        qx, qy = torch.cat(self.query_x), torch.cat(self.query_y)
        pred = knn_predict(qx, bank_x, bank_y, num_classes, k=self.k, temperature=self.t)
        self.query_x, self.query_y = [], []
        return (pred[:, 0] == qy).float().mean().item()

    def num_classes(self) -> int:
        """Classes seen so far in the bank and the queries (labels are 0..n-1)."""
        ys = self.bank_y + self.query_y
        return int(max(int(y.max()) for y in ys)) + 1 if ys else 0

    def reset_bank(self) -> None:
        self.bank_x, self.bank_y = [], []
