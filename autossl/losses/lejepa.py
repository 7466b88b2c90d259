"""LeJEPA's objective (Balestriero & LeCun, 2025, "LeJEPA: Provable and Scalable Self-Supervised Learning
Without the Heuristics", arXiv:2511.08544; reference code github.com/rbalestr-lab/lejepa).

Two terms on the projections z_v [N, K] of V views of N images, the first `num_global` views being the
global crops:

- prediction: every view (global and local) predicts the mean of the global views' projections,
  mean_{v, n, k} (mean_{g < num_global} z_g[n, k] - z_v[n, k])^2, with no stop-gradient on the mean
  (the paper's listing: `(centers - a_emb).square().mean()`);
- SIGReg (Sketched Isotropic Gaussian Regularisation): project each view's batch on M random unit
  directions a_m (the same ones for every view of a step) and test each 1-D sample a_m^T z_v against
  N(0, 1) with the Epps-Pulley statistic
      EP = N * integral |phi_hat(t) - exp(-t^2 / 2)|^2 * exp(-t^2 / 2) dt,   phi_hat(t) = mean_n exp(i t x_n),
  averaged over directions and views. By Cramer-Wold, matching every 1-D projection to N(0, 1) makes z
  an isotropic Gaussian, which the paper shows minimises downstream prediction risk; it also rules out
  collapse (a constant or low-rank z fails the test along almost every direction).

The loss is (1 - lambd) * prediction + lambd * SIGReg, as the paper's listing and lightly write it.

The integral is the trapezoidal rule on `knots` points of [0, t_max], doubled: the integrand is even in
t, so this equals the rule on the symmetric grid of [-t_max, t_max] with 2 * knots - 1 points (the
authors' package and minimal example, and lightly, do this with t_max = 3, knots = 17). The paper's
listing integrates `torch.trapz` over linspace(-5, 5, 17), which is exactly t_max = 5, knots = 9 here.

Random directions come from torch's global generator (saved and restored with every checkpoint, so a
resumed run draws the same ones) or from a generator the caller passes, on that generator's device
(the CPU by default, so a run draws the same directions on any accelerator). Under DDP rank 0's
directions are broadcast, so every rank tests the same ones, and the empirical characteristic function
is summed over ranks (autograd-aware all-reduce): the statistic is that of the global batch. We reduce
the [V, M, knots] sums rather than gathering the embeddings, as the authors do, so that no rank
evaluates cos/sin over the whole global batch (that tensor is V x N x M x knots). Every rank then holds
the global SIGReg, and the all-reduce's backward sums the identical upstream gradients, so after DDP's
averaging the gradient equals one process's on the concatenated batch (as with `core.distributed.gather`).
The prediction term is per image: each rank's mean, which DDP's averaging makes the global one.
Computed in float32 (float64 inputs stay float64) outside autocast: cos/sin of bf16 arguments up to
t_max * |x| lose most of their digits.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.distributed as dist

from ..core.distributed import world_size


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32, or float64 when given (the tests' hand computations)."""
    return x if x.dtype == torch.float64 else x.float()


class LeJEPALossTerms(NamedTuple):
    loss: torch.Tensor
    prediction: torch.Tensor
    sigreg: torch.Tensor


def slice_directions(dim: int, num_slices: int = 1024, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None, sync: bool = True) -> torch.Tensor:
    """[dim, num_slices] random unit columns: N(0, I) draws normalised, i.e. uniform on the sphere.

    Drawn from `generator` (on its device) or from torch's global CPU generator, then moved to `device`;
    under DDP (with `sync`) every rank receives rank 0's draw."""
    where = generator.device if generator is not None else "cpu"
    a = torch.randn(dim, num_slices, generator=generator, device=where)
    a = (a / a.norm(p=2, dim=0)).to(device or where)
    if sync and world_size() > 1:  # every rank draws, so their generators advance alike, but their states may differ
        dist.broadcast(a, src=0)
    return a


def epps_pulley(x: torch.Tensor, t_max: float = 3.0, knots: int = 17, gather_distributed: bool = True) -> torch.Tensor:
    """The Epps-Pulley statistic of each 1-D sample in `x` [..., N, M] (N samples, M slices) against N(0, 1):
    [..., M]. Under DDP (gather_distributed) the samples of every rank form the sample."""
    if knots < 2 or t_max <= 0:
        raise ValueError(f"epps_pulley needs knots >= 2 and t_max > 0, got knots={knots}, t_max={t_max}")
    with torch.autocast(x.device.type, enabled=False):
        x = _wide(x)
        t = torch.linspace(0.0, t_max, knots, device=x.device, dtype=x.dtype)
        phi = torch.exp(-0.5 * t.square())  # N(0, 1)'s characteristic function, also the weight w(t)
        dt = t_max / (knots - 1)
        trapezoid = torch.full_like(t, 2 * dt)  # doubled: the [-t_max, 0] half
        trapezoid[[0, -1]] = dt  # t = 0 is counted once (dt/2 doubled), t_max is an end point
        xt = x.unsqueeze(-1) * t  # [..., N, M, knots]
        sums = torch.stack([xt.cos().sum(-3), xt.sin().sum(-3)])  # real and imaginary parts of N * phi_hat
        n = torch.tensor(float(x.shape[-2]), device=x.device, dtype=x.dtype)
        if gather_distributed and world_size() > 1:
            from torch.distributed.nn.functional import all_reduce

            sums = all_reduce(sums)  # with gradients: see the module docstring
            dist.all_reduce(n)
        ecf = sums / n
        err = (ecf[0] - phi).square() + ecf[1].square()  # |phi_hat - phi|^2 (phi is real)
        return (err @ (trapezoid * phi)) * n


def sigreg(z: torch.Tensor | Sequence[torch.Tensor], directions: torch.Tensor, t_max: float = 3.0, knots: int = 17,
           gather_distributed: bool = True) -> torch.Tensor:
    """SIGReg of one [N, K] batch or of V views ([V, N, K] or a list of [N, K]): the Epps-Pulley
    statistic along each column of `directions` [K, M], averaged over directions and views."""
    z = torch.stack(list(z)) if not isinstance(z, torch.Tensor) else z
    with torch.autocast(z.device.type, enabled=False):
        z = _wide(z)
        x = z @ directions.to(z.device, z.dtype)
    return epps_pulley(x, t_max, knots, gather_distributed).mean()


def lejepa_prediction_loss(z_views: Sequence[torch.Tensor], num_global: int) -> torch.Tensor:
    """Mean squared difference between every view's projection and the mean of the first `num_global`
    views' projections (over views, samples and dimensions)."""
    if not 1 <= num_global <= len(z_views):
        raise ValueError(f"lejepa needs 1 <= num_global <= {len(z_views)} views, got num_global={num_global}")
    z = _wide(torch.stack(list(z_views)))
    center = z[:num_global].mean(0)
    return (center - z).square().mean()


def lejepa_loss(z_views: Sequence[torch.Tensor], num_global: int, lambd: float = 0.05, num_slices: int = 1024,
                t_max: float = 3.0, knots: int = 17, generator: torch.Generator | None = None,
                directions: torch.Tensor | None = None, gather_distributed: bool = True) -> LeJEPALossTerms:
    """(1 - lambd) * prediction + lambd * SIGReg over all views, with its two terms for logging.
    `directions` [K, M] fixes the slices; otherwise `num_slices` are drawn (see `slice_directions`)."""
    if not 0.0 <= lambd <= 1.0:
        raise ValueError(f"lejepa's lambd weighs SIGReg against the prediction loss, in [0, 1]; got {lambd}")
    if directions is None:
        directions = slice_directions(z_views[0].shape[-1], num_slices, generator, z_views[0].device,
                                      sync=gather_distributed)
    pred = lejepa_prediction_loss(z_views, num_global)
    reg = sigreg(z_views, directions, t_max, knots, gather_distributed)
    return LeJEPALossTerms((1 - lambd) * pred + lambd * reg, pred, reg)


__all__ = ["LeJEPALossTerms", "slice_directions", "epps_pulley", "sigreg", "lejepa_prediction_loss", "lejepa_loss"]
