"""Test doubles shared by the estimator tests."""

from __future__ import annotations

import torch
from torch import nn


class LookupQ(nn.Module):
    """Q(s, .) = table[s]: observations are state ids."""

    def __init__(self, q: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(q.clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.table[obs[:, 0].long()]

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self(obs).gather(1, actions.long().unsqueeze(1)).squeeze(1)
