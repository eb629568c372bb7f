"""Q-networks: an encoder (observation -> features) and a head (features -> Q-values).

Every Q-network maps observations ``(B, *obs_shape)`` to Q-values of all actions
``(B, num_actions)``, evaluates chosen actions with ``q_values(obs, actions) -> (B,)``, and
exposes ``features`` (the penultimate layer, for embeddings such as t-SNE). Estimators,
exploration and evaluation only use these three, so action-out and action-in networks, tables
and linear models are interchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rl_lightning.networks.noisy import NoisyLinear

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
NORMS = ("none", "batchnorm", "layernorm")
HEADS = ("linear", "dueling")


def linear_layer(
    in_features: int, out_features: int, *, noisy: bool, bias: bool = True
) -> nn.Module:
    return (
        NoisyLinear(in_features, out_features, bias=bias)
        if noisy
        else nn.Linear(in_features, out_features, bias=bias)
    )


class MLPEncoder(nn.Sequential):
    """Flatten, then ``Linear -> [norm] -> activation -> [dropout]`` for each hidden size.

    ``hidden_sizes=[]`` is the identity on the flattened observation.
    """

    def __init__(
        self,
        *,
        in_features: int,
        hidden_sizes: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        noisy: bool = False,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"arch.activation={activation!r} is not one of {sorted(ACTIVATIONS)}")
        if norm not in NORMS:
            raise ValueError(f"arch.norm={norm!r} is not one of {NORMS}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"arch.dropout={dropout} must be in [0, 1)")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden_sizes:
            layers.append(linear_layer(width, size, noisy=noisy))
            if norm == "batchnorm":
                layers.append(nn.BatchNorm1d(size))
            elif norm == "layernorm":
                layers.append(nn.LayerNorm(size))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0.0:
                layers.append(nn.Dropout(dropout))
            width = size
        super().__init__(*layers)
        self.out_features = width

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """The layers in order; the leading Flatten is skipped for an already flat batch
        ``(B, F)``, where it is the identity (one module call and one op less per pass)."""
        layers = iter(self._modules.values())
        if input.dim() == 2:
            next(layers)  # layer 0 is the Flatten
        for layer in layers:
            input = layer(input)
        return input


class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (Wang et al., 2016)."""

    def __init__(self, in_features: int, num_actions: int, *, noisy: bool = False) -> None:
        super().__init__()
        self.value = linear_layer(in_features, 1, noisy=noisy)
        self.advantage = linear_layer(in_features, num_actions, noisy=noisy)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=-1, keepdim=True)


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

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s_b, a_b) for each pair: (B, *obs_shape), (B,) -> (B,)."""
        if actions.dtype != torch.int64:
            actions = actions.long()
        return self(obs).gather(1, actions.unsqueeze(1)).squeeze(1)


class MLPQNetwork(QNetwork):
    """A multi-layer perceptron with an action-out head (linear or dueling).

    Args:
        obs_shape: observation shape (runtime fact, flattened).
        num_actions: number of discrete actions (runtime fact).
        hidden_sizes: widths of the hidden layers (``[]``: a linear model of the observation;
            over one-hot observations with ``bias=False`` that is a table).
        activation: nonlinearity after each hidden layer.
        dropout: dropout probability after each hidden layer (0: none).
        norm: ``none`` | ``batchnorm`` | ``layernorm`` after each hidden linear layer.
        head: ``linear`` | ``dueling``.
        noisy: factorised Gaussian noisy linear layers everywhere (NoisyNet exploration).
        bias: whether the output layer has a bias.
        init_zero: zero the output layer (Q = 0 everywhere at the start).
    """

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        num_actions: int,
        hidden_sizes: Sequence[int] = (128, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        head: str = "linear",
        noisy: bool = False,
        bias: bool = True,
        init_zero: bool = False,
    ) -> None:
        if head not in HEADS:
            raise ValueError(f"arch.head={head!r} is not one of {HEADS}")
        encoder = MLPEncoder(
            in_features=math.prod(obs_shape),
            hidden_sizes=list(hidden_sizes),
            activation=activation,
            dropout=dropout,
            norm=norm,
            noisy=noisy,
        )
        head_module: nn.Module
        if head == "dueling":
            head_module = DuelingHead(encoder.out_features, num_actions, noisy=noisy)
        else:
            head_module = linear_layer(encoder.out_features, num_actions, noisy=noisy, bias=bias)
        if init_zero:
            for p in head_module.parameters():
                nn.init.zeros_(p)
        super().__init__(encoder, head_module)
