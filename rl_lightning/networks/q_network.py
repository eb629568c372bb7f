"""Q-networks: an encoder (observation -> features) and a head (features -> Q-values).

Every Q-network maps observations ``(B, *obs_shape)`` to Q-values ``(B, num_actions)`` and
exposes ``features`` (the penultimate layer, for embeddings such as t-SNE).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class MLPEncoder(nn.Sequential):
    """Flatten, then ``Linear -> activation`` for each hidden size (none: identity features)."""

    def __init__(
        self, *, in_features: int, hidden_sizes: Sequence[int], activation: str = "relu"
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        super().__init__(*layers)
        self.out_features = width


class QNetwork(nn.Module):
    """Q(s, .) = head(encoder(s)): all actions' values from one forward pass."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape) -> (B, F) penultimate-layer activations."""
        if not torch.is_floating_point(obs):
            obs = obs.float()
        return self.encoder(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape) -> (B, num_actions)."""
        return self.head(self.features(obs))


class MLPQNetwork(QNetwork):
    """A multi-layer perceptron with a linear action-out head.

    ``hidden_sizes=[]`` gives a linear model; over one-hot observations that is a table.

    Args:
        obs_shape: observation shape (runtime fact, flattened).
        num_actions: number of discrete actions (runtime fact).
        hidden_sizes: widths of the hidden layers.
        activation: nonlinearity after each hidden layer.
        bias: whether the output layer has a bias (off makes a one-hot linear model a table).
    """

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        num_actions: int,
        hidden_sizes: Sequence[int] = (120, 84),
        activation: str = "relu",
        bias: bool = True,
        init_zero: bool = False,
    ) -> None:
        encoder = MLPEncoder(
            in_features=math.prod(obs_shape), hidden_sizes=list(hidden_sizes), activation=activation
        )
        head = nn.Linear(encoder.out_features, num_actions, bias=bias)
        if init_zero:
            nn.init.zeros_(head.weight)
            if head.bias is not None:
                nn.init.zeros_(head.bias)
        super().__init__(encoder, head)
