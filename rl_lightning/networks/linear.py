"""Linear Q-functions over hand-made state features: Q(s, a) = w_a . phi(s) + b_a.

The lecture's "linear model over state features". Feature maps (``features=``):

* ``raw``: phi(s) = s.
* ``polynomial``: every monomial of the normalised observation up to ``degree``
  (1, x_i, x_i x_j, ...).
* ``rbf``: Gaussian radial basis functions on a grid of ``centers`` per dimension between
  ``obs_low`` and ``obs_high``; width = grid spacing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from rl_lightning.networks.noisy import linear_layer
from rl_lightning.networks.q_network import QNetwork

FEATURES = ("raw", "polynomial", "rbf")


#: the largest feature map built (an RBF grid has centers ** dims features)
MAX_FEATURES = 1_000_000


class FeatureMap(nn.Module):
    """phi: (B, *obs_shape) -> (B, F); no parameters."""

    low: torch.Tensor
    span: torch.Tensor
    index: torch.Tensor
    centers: torch.Tensor

    def __init__(
        self,
        *,
        kind: str,
        dims: int,
        obs_low: Sequence[float],
        obs_high: Sequence[float],
        degree: int = 2,
        centers: int = 5,
    ) -> None:
        super().__init__()
        if kind not in FEATURES:
            raise ValueError(f"arch.features={kind!r} is not one of {FEATURES}")
        self.kind = kind
        low = torch.tensor(list(obs_low), dtype=torch.float32)
        high = torch.tensor(list(obs_high), dtype=torch.float32)
        self.register_buffer("low", low)
        self.register_buffer("span", high - low)
        if kind == "raw":
            self.out_features = dims
        elif kind == "polynomial":
            terms = [
                c
                for d in range(1, degree + 1)
                for c in itertools.combinations_with_replacement(range(dims), d)
            ]
            index = torch.full(
                (len(terms), degree), dims, dtype=torch.long
            )  # dims -> the constant 1
            for row, term in enumerate(terms):
                index[row, : len(term)] = torch.tensor(term)
            self.register_buffer("index", index)
            self.out_features = len(terms)
        else:
            if centers**dims > MAX_FEATURES:  # a grid in many dimensions (a frame stack)
                raise ValueError(
                    f"arch.features=rbf: {centers}^{dims} = {centers**dims:.3g} features over "
                    f"{dims} observation dimensions; use arch.features=raw|polynomial or fewer "
                    "arch.centers"
                )
            grid = torch.linspace(0.0, 1.0, centers)
            self.register_buffer("centers", torch.cartesian_prod(*[grid] * dims).reshape(-1, dims))
            self.width = 1.0 / max(centers - 1, 1)
            self.out_features = centers**dims

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.flatten(1).float()
        if self.kind == "raw":
            return x
        z = (x - self.low) / self.span  # roughly in [0, 1]
        if self.kind == "polynomial":
            padded = torch.cat([z * 2.0 - 1.0, torch.ones_like(z[:, :1])], dim=1)  # [-1, 1] and 1
            return padded[:, self.index].prod(dim=-1)
        dist2 = ((z.unsqueeze(1) - self.centers) / self.width).pow(2).sum(dim=-1)
        return torch.exp(-0.5 * dist2)


class LinearQNetwork(QNetwork):
    """Q(s, .) = W phi(s) + b.

    Args:
        obs_shape, num_actions: runtime facts.
        obs_low, obs_high: per-dimension bounds used to normalise (polynomial, rbf).
        features: ``raw`` | ``polynomial`` | ``rbf``.
        degree: polynomial degree.
        centers: RBF centres per dimension (centers ** dims features).
        dropout: dropout on the features (exploration=dropout thins them while acting).
        noisy: a factorised-Gaussian noisy output layer (exploration=noisy).
    """

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        num_actions: int,
        obs_low: Sequence[float],
        obs_high: Sequence[float],
        features: str = "rbf",
        degree: int = 2,
        centers: int = 5,
        dropout: float = 0.0,
        noisy: bool = False,
    ) -> None:
        feature_map = FeatureMap(
            kind=features,
            dims=math.prod(obs_shape),
            obs_low=obs_low,
            obs_high=obs_high,
            degree=degree,
            centers=centers,
        )
        encoder: nn.Module = feature_map
        if dropout > 0.0:
            encoder = nn.Sequential(feature_map, nn.Dropout(dropout))
        head = linear_layer(feature_map.out_features, num_actions, noisy=noisy)
        if not noisy:
            for p in head.parameters():
                nn.init.zeros_(p)  # Q = 0 everywhere at the start
        super().__init__(encoder, head)
