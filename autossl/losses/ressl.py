"""ReSSL's relational loss (Zheng et al., 2021, "ReSSL: Relational Self-Supervised Learning with Weak
Augmentation", NeurIPS 2021, arXiv:2107.09282; as solo-learn writes it, `solo/losses/ressl.py`).

Instead of matching two views' embeddings, the student matches the *relation* of its view to a queue of past
teacher embeddings to the teacher's relation of the other (weakly augmented) view to the same queue:
p_t = softmax(k Q^T / tau_t) (sharp, tau_t = 0.04, no gradient), p_s = softmax(q Q^T / tau_s) (tau_s = 0.1),
loss = H(p_t, p_s) averaged over the batch (paper eq. 4). The sharper teacher temperature is what prevents
collapse: a uniform relation is never the teacher's target. q and k are L2-normalised by the caller.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ressl_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature_q: float = 0.1,
               temperature_k: float = 0.04) -> torch.Tensor:
    """`q` [B, D] student embeddings, `k` [B, D] teacher embeddings of the other view (no gradient), `queue`
    [N, D] past teacher embeddings (no gradient): -mean_b sum_n softmax(k Q^T/tau_k) log softmax(q Q^T/tau_q)."""
    with torch.autocast(q.device.type, enabled=False):
        queue = queue.detach().float()
        logits_q = q.float() @ queue.T
        logits_k = k.detach().float() @ queue.T
        return -(F.softmax(logits_k / temperature_k, dim=1)
                 * F.log_softmax(logits_q / temperature_q, dim=1)).sum(dim=1).mean()


__all__ = ["ressl_loss"]
