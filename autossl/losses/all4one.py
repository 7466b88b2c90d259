"""All4One's three objectives (Estepa et al., 2023, "All4One: Symbiotic Neighbour Contrastive Learning via
Self-Attention and Redundancy Reduction", ICCV 2023, §3), as solo-learn computes them
(solo/methods/all4one.py, `All4One.training_step`). Each is averaged over the ordered pairs of different
views (i, j): with 2 views, (term(a, b) + term(b, a)) / 2, solo-learn's form; more views extend it.

Both contrastive terms are solo-learn's `nnclr_loss_func(query, key)`: one-directional InfoNCE whose
negatives are the other samples' keys of the global batch, i.e. `infonce_loss(query, key)` here, which
gathers the keys with their gradient as solo-learn does.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .contrastive import infonce_loss
from .multiview import mean_over_cross_views


def neighbour_contrast_loss(neighbours: Sequence[torch.Tensor], predictions: Sequence[torch.Tensor],
                            temperature: float = 0.2) -> torch.Tensor:
    """NNCLR's term: the nearest neighbour of view i's target [B, D] is the query, the online predictions
    of the other view j [B, D] the keys (positive: the same image's). Neighbours carry no gradient."""
    return mean_over_cross_views(lambda q, k: infonce_loss(q, k, temperature), neighbours, predictions)


def centroid_loss(centroids: Sequence[torch.Tensor], shifted: Sequence[torch.Tensor],
                  temperature: float = 0.1) -> torch.Tensor:
    """The centroid term: the transformer's summary of view i's neighbour sequence [B, D] is the query,
    its summary of view j's shifted sequence (the online prediction, then the first k-1 neighbours) the
    key. Temperature 0.1: solo-learn calls `nnclr_loss_func` here without one, so its default applies."""
    return mean_over_cross_views(lambda q, k: infonce_loss(q, k, temperature), centroids, shifted)


def feature_contrast_loss(targets: Sequence[torch.Tensor], online: Sequence[torch.Tensor]) -> torch.Tensor:
    """The feature (redundancy-reduction) term: C_ij = cross-correlation between the columns of view i's
    target [B, D] and view j's online projection [B, D], each column L2-normalised over the batch;
    loss = (sqrt(mean_pairs mean_d (C_dd - 1)^2) + sqrt(mean_pairs mean_{d != e} C_de^2)) / 2.

    Unlike Barlow Twins the columns are normalised, not standardised (no mean removed), the diagonal and
    off-diagonal terms are means under a square root, and the batch is each process's own (solo-learn
    gathers nothing here). solo-learn passes the target rows already L2-normalised (its momentum_forward);
    the caller does the same. Computed in float32: the diagonal sits near 1, where bf16 rounding of
    (C_dd - 1) could make the mean exactly 0 and the square root's gradient infinite.
    """
    if len(targets) < 2 or len(targets) != len(online):
        raise ValueError(f"need at least 2 views on each side, got {len(targets)} and {len(online)}")
    with torch.autocast(online[0].device.type, enabled=False):
        corrs = [F.normalize(t.float(), dim=0).T @ F.normalize(z.float(), dim=0)
                 for i, t in enumerate(targets) for j, z in enumerate(online) if i != j]
        off = ~torch.eye(corrs[0].shape[0], dtype=torch.bool, device=corrs[0].device)
        on_diag = torch.stack([(c.diagonal() - 1).pow(2).mean() for c in corrs]).mean().sqrt()
        off_diag = torch.stack([c[off].pow(2).mean() for c in corrs]).mean().sqrt()
    return (on_diag + off_diag) / 2
