"""Encoders: observations ``(B, *obs_shape)`` -> features ``(B, F)``, the first part of a Q-network.

An encoder is chosen with ``arch/encoder=NAME`` (``conf/arch/encoder/NAME.yaml``, whose
``_target_`` names the class) and tuned with ``arch.encoder.KEY=VALUE``. The network that owns
it (``ActionOutQNetwork``, ``ActionInQNetwork``) builds it; the contract:

* a keyword-only constructor. ``obs_shape`` is a runtime fact passed in by the network, never
  written in YAML (``ActionInQNetwork`` passes the flat ``[s, encode(a)]`` width as
  ``(D + action_width,)``); every other parameter comes from the YAML file.
* ``noisy: bool`` and ``dropout: float`` parameters, where the encoder has such layers: the
  explorations ``noisy`` and ``dropout`` set them on every part of the network that declares
  them (``networks.build.build_q_network``). An encoder without them simply is not sent them.
* ``obs_low``, ``obs_high`` parameters, only if the encoder needs the observation bounds (bins,
  feature maps): they are passed to the parts that declare them, and only to those.
* ``out_features: int``: the width F of the features, read by the head.
* ``forward(obs)``: float ``(B, *obs_shape)`` -> ``(B, F)``. ``QNetwork.features`` casts integer
  observations to float first, and ``rl-embed`` plots these features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rl_lightning.networks.noisy import linear_layer

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
NORMS = ("none", "batchnorm", "layernorm")


class Encoder(nn.Module):
    """Base of the encoders: ``(B, *obs_shape)`` -> ``(B, out_features)`` (contract above)."""

    out_features: int


class MLPEncoder(nn.Sequential, Encoder):
    """Flatten, then ``Linear -> [norm] -> activation -> [dropout]`` for each hidden size.

    ``hidden_sizes=[]`` is the identity on the flattened observation (``out_features`` =
    ``prod(obs_shape)``).

    Args:
        obs_shape: observation shape (runtime fact); flattened to ``prod(obs_shape)`` inputs.
        hidden_sizes: widths of the hidden layers.
        activation: ``relu`` | ``tanh`` | ``elu`` | ``gelu`` | ``silu`` after each hidden layer.
        dropout: dropout probability after each hidden layer (0: no dropout layers).
        norm: ``none`` | ``batchnorm`` | ``layernorm`` after each hidden linear layer.
        noisy: factorised Gaussian noisy linear layers (exploration=noisy).
    """

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        hidden_sizes: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        noisy: bool = False,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"arch.encoder.activation={activation!r} is not one of {sorted(ACTIVATIONS)}"
            )
        if norm not in NORMS:
            raise ValueError(f"arch.encoder.norm={norm!r} is not one of {NORMS}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"arch.encoder.dropout={dropout} must be in [0, 1)")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(obs_shape)
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
