"""Factorised Gaussian noisy linear layers (Fortunato et al., 2018, "Noisy Networks").

    y = (mu_W + sigma_W * eps_W) x + (mu_b + sigma_b * eps_b),
    eps_W = f(eps_out) f(eps_in)^T,  eps_b = f(eps_out),  f(x) = sign(x) sqrt(|x|)

Fresh noise is drawn at every forward pass in train mode (acting and learning); eval mode uses
the mean weights (greedy evaluation).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class NoisyLinear(nn.Module):
    def __init__(
        self, in_features: int, out_features: int, *, sigma_0: float = 0.5, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(
            torch.empty(out_features, in_features).uniform_(-bound, bound)
        )
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma_0 * bound))
        if bias:
            self.bias_mu: nn.Parameter | None = nn.Parameter(
                torch.empty(out_features).uniform_(-bound, bound)
            )
            self.bias_sigma: nn.Parameter | None = nn.Parameter(
                torch.full((out_features,), sigma_0 * bound)
            )
        else:
            self.bias_mu = self.bias_sigma = None

    @staticmethod
    def _scaled_noise(size: int, device: torch.device) -> torch.Tensor:
        x = torch.randn(size, device=device)
        return x.sign() * x.abs().sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.functional.linear(x, self.weight_mu, self.bias_mu)
        eps_in = self._scaled_noise(self.in_features, x.device)
        eps_out = self._scaled_noise(self.out_features, x.device)
        weight = self.weight_mu + self.weight_sigma * torch.outer(eps_out, eps_in)
        bias = None
        if self.bias_mu is not None and self.bias_sigma is not None:
            bias = self.bias_mu + self.bias_sigma * eps_out
        return nn.functional.linear(x, weight, bias)


def linear_layer(
    in_features: int, out_features: int, *, noisy: bool, bias: bool = True
) -> nn.Module:
    """``nn.Linear``, or ``NoisyLinear`` when ``noisy`` (exploration=noisy)."""
    return (
        NoisyLinear(in_features, out_features, bias=bias)
        if noisy
        else nn.Linear(in_features, out_features, bias=bias)
    )
