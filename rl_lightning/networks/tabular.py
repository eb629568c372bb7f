"""A table over binned states, learned by SGD on the squared TD error.

The lecture's first answer to large state spaces: cut each observation dimension into
``bins`` intervals between ``low`` and ``high`` (values outside fall into the edge bins) and
keep one row of Q-values per cell. One SGD step with learning rate a on (Q(s,a) - y)^2 is

    Q(s, a) := Q(s, a) - a * 2 (Q(s, a) - y) = (1 - 2a) Q(s, a) + 2a y,

the moving-average update with alpha' = 2a (tested in tests/unit/test_networks.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

#: the largest table built, in cells (the product of the bins per dimension)
MAX_CELLS = 100_000_000


class TabularQNetwork(nn.Module):
    """Q(s, .) = table[cell(s)].

    Args:
        obs_shape, num_actions: runtime facts.
        obs_low, obs_high: per-dimension bounds of the grid (from ``env.obs_low/obs_high`` or
            the observation space).
        bins: cells per dimension (an int for all, or one per dimension).
        init: initial Q-value of every cell.
        noisy: parameter-noise exploration: Q = table + sigma * eps with a learned sigma per
            entry and fresh Gaussian eps at every train-mode forward pass (exploration=noisy).
        dropout: dropout on the looked-up Q-values in train mode (exploration=dropout).
    """

    low: torch.Tensor
    high: torch.Tensor
    bins: torch.Tensor
    strides: torch.Tensor

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        num_actions: int,
        obs_low: Sequence[float],
        obs_high: Sequence[float],
        bins: int | Sequence[int] = 10,
        init: float = 0.0,
        noisy: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dims = math.prod(obs_shape)
        bins_list = [int(bins)] * dims if isinstance(bins, int) else [int(b) for b in bins]
        if len(bins_list) != dims or len(obs_low) != dims or len(obs_high) != dims:
            raise ValueError(f"tabular: bins, obs_low and obs_high need {dims} entries each")
        self.register_buffer("low", torch.tensor(list(obs_low), dtype=torch.float32))
        self.register_buffer("high", torch.tensor(list(obs_high), dtype=torch.float32))
        self.num_cells = math.prod(bins_list)
        if self.num_cells > MAX_CELLS:  # binning many dimensions (a frame stack)
            raise ValueError(
                f"arch=tabular: {self.num_cells:.3g} cells ({dims} dimensions); use fewer "
                "arch.bins, or function approximation (arch=mlp)"
            )
        self.register_buffer("bins", torch.tensor(bins_list, dtype=torch.long))
        strides = [math.prod(bins_list[i + 1 :]) for i in range(dims)]
        self.register_buffer("strides", torch.tensor(strides, dtype=torch.long))
        self.table = nn.Parameter(torch.full((self.num_cells, num_actions), float(init)))
        self.sigma: nn.Parameter | None = None
        if noisy:
            self.sigma = nn.Parameter(torch.full((self.num_cells, num_actions), 0.5))
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else None

    def bin_coordinates(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape) -> (B, D) integer bin of each dimension."""
        x = obs.flatten(1).float()
        frac = (x - self.low) / (self.high - self.low)
        return torch.minimum((frac * self.bins).floor().long().clamp(min=0), self.bins - 1)

    def cell(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape) -> (B,) flat cell index."""
        return (self.bin_coordinates(obs) * self.strides).sum(dim=1)

    def _perturb(self, q: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
        if not self.training:
            return q
        if sigma is not None:
            q = q + sigma * torch.randn_like(q)
        if self.dropout is not None:
            q = self.dropout(q)
        return q

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        cell = self.cell(obs)
        return self._perturb(self.table[cell], None if self.sigma is None else self.sigma[cell])

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        cell, a = self.cell(obs), actions.long()
        return self._perturb(
            self.table[cell, a], None if self.sigma is None else self.sigma[cell, a]
        )

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The cell's normalised grid coordinates (B, D) in [0, 1]."""
        return self.bin_coordinates(obs).float() / (self.bins - 1).clamp(min=1)
