"""Running standardisation of a model's inputs (like stable-baselines3's VecNormalize, but
inside the network so it is saved, loaded and published with the weights).

Inputs mix scales: book levels in basis points (tens), shares and imbalances (±1), flow
(±1), z-scores. Standardising each one by its running mean and variance lets a network
read a ±0.3 imbalance beside a −40 bps level offset from its first updates on.
"""

from __future__ import annotations

import torch
from torch import nn


class InputNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps)``, clipped to ±``clip``; the running statistics are
    updated from every batch seen in train mode (Chan's parallel merge), frozen in eval."""

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, dim: int, eps: float = 1e-4, clip: float = 10.0) -> None:
        super().__init__()
        self.eps, self.clip = eps, clip
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                flat = x.detach().reshape(-1, x.shape[-1]).to(self.mean.dtype)
                n = flat.shape[0]
                b_mean = flat.mean(0)
                b_var = flat.var(0, unbiased=False)
                total = self.count + n
                delta = b_mean - self.mean
                self.mean += delta * (n / total)
                m2 = self.var * self.count + b_var * n + delta.pow(2) * self.count * n / total
                self.var.copy_(m2 / total)
                self.count.copy_(total)
        if self.count <= 0:
            return x
        out = (x - self.mean) / torch.sqrt(self.var + self.eps)
        return out.clamp(-self.clip, self.clip)
