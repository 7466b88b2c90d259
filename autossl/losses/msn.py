"""MSN's and PMSN's losses (Assran et al., 2022, "Masked Siamese Networks for Label-Efficient Learning",
arXiv:2204.07141, reference code github.com/facebookresearch/msn, `src/losses.py`; Assran et al., 2023, "The
Hidden Uniform Cluster Prior in Self-Supervised Learning", ICLR 2023, arXiv:2210.07277).

Anchor embeddings (masked / focal views) and target embeddings (the EMA network's view of an unmasked crop)
are turned into soft assignments over K learnable prototypes, p = softmax(cos(z, prototypes) / tau) (MSN eq. 1).
The target's assignment is sharpened (p^(1/T), renormalised) and balanced by Sinkhorn-Knopp, without
gradient; each anchor view of an image predicts its target with the cross-entropy H(p_target, p_anchor)
(eq. 2). The collapse-preventing regulariser acts on the mean anchor prediction p_bar over the batch:

- MSN (me-max): KL(p_bar || uniform) = sum_k p_bar_k log p_bar_k + log K, i.e. maximise the entropy of p_bar;
- PMSN: KL(pi || p_bar) towards a power-law prior pi_k proportional to k^(-exponent), k = 1..K (the paper
  shows me-max imposes a uniform cluster prior, which suits class-balanced data less than a power law).

p_bar and the Sinkhorn marginals are over the global batch under DDP (the reference all-reduces both; lightly
does so only with `gather_distributed=True` and never for p_bar). Pure functions; on one process the values
equal lightly's `MSNLoss` and `PMSNLoss`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.distributed import gather
from .swav import sinkhorn as _sinkhorn


def _cross_entropy_and_mean(anchors: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor,
                            temperature: float, target_sharpen_temperature: float, sinkhorn_iterations: int,
                            gather_distributed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if anchors.shape[0] % targets.shape[0]:
        raise ValueError(f"anchors ({anchors.shape[0]} rows) must be whole views of the {targets.shape[0]} targets")
    views = anchors.shape[0] // targets.shape[0]
    with torch.autocast(anchors.device.type, enabled=False):
        protos = F.normalize(prototypes.float(), dim=1)
        logits = F.normalize(anchors.float(), dim=1) @ protos.T / temperature
        log_p = F.log_softmax(logits, dim=1)
        with torch.no_grad():
            t = F.softmax(F.normalize(targets.detach().float(), dim=1) @ protos.T.detach() / temperature, dim=1)
            t = t ** (1.0 / target_sharpen_temperature)
            t = t / t.sum(dim=1, keepdim=True)
            if sinkhorn_iterations > 0:  # MSN's Sinkhorn on probabilities = SwAV's on their logs at epsilon 1
                t = _sinkhorn(torch.log(t), sinkhorn_iterations, 1.0, gather_distributed)
            t = t.repeat(views, 1)  # anchors are view-major: view 1 of every image, then view 2, ...
        ce = -(t * log_p).sum(dim=1).mean()
        probs = log_p.exp()
        mean_probs = (gather(probs) if gather_distributed else probs).mean(dim=0)
    return ce, mean_probs


def msn_loss(anchors: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, temperature: float = 0.1,
             target_sharpen_temperature: float = 0.25, sinkhorn_iterations: int = 3, me_max_weight: float = 1.0,
             gather_distributed: bool = True) -> torch.Tensor:
    """MSN: cross-entropy to the sharpened, balanced targets + `me_max_weight` * KL(p_bar || uniform).

    `anchors`: [V * B, D] (view-major), `targets`: [B, D], `prototypes`: [K, D] (all normalised here); the
    targets and the prototypes on the target side get no gradient, the prototypes do through the anchors.
    """
    ce, p_bar = _cross_entropy_and_mean(anchors, targets, prototypes, temperature, target_sharpen_temperature,
                                        sinkhorn_iterations, gather_distributed)
    if not me_max_weight:
        return ce
    return ce + me_max_weight * ((p_bar * torch.log(p_bar)).sum() + math.log(p_bar.shape[0]))


def power_law_prior(size: int, exponent: float = 0.25, device: torch.device | None = None) -> torch.Tensor:
    """pi_k = k^(-exponent) / sum_j j^(-exponent), k = 1..size (PMSN's prior)."""
    k = torch.arange(1, size + 1, device=device, dtype=torch.float32)
    prior = k ** (-exponent)
    return prior / prior.sum()


def pmsn_loss(anchors: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, temperature: float = 0.1,
              target_sharpen_temperature: float = 0.25, sinkhorn_iterations: int = 3, prior_weight: float = 1.0,
              power_law_exponent: float = 0.25, gather_distributed: bool = True) -> torch.Tensor:
    """PMSN: MSN's cross-entropy + `prior_weight` * KL(power-law prior || p_bar)."""
    ce, p_bar = _cross_entropy_and_mean(anchors, targets, prototypes, temperature, target_sharpen_temperature,
                                        sinkhorn_iterations, gather_distributed)
    if not prior_weight:
        return ce
    prior = power_law_prior(p_bar.shape[0], power_law_exponent, p_bar.device)
    return ce + prior_weight * (prior * (torch.log(prior) - torch.log(p_bar))).sum()


__all__ = ["msn_loss", "pmsn_loss", "power_law_prior"]
