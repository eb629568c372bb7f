"""Q-networks: an encoder (observation -> features) and a head (features -> Q-values).

Every Q-network maps observations ``(B, *obs_shape)`` to Q-values of all actions
``(B, num_actions)``, evaluates chosen actions with ``q_values(obs, actions) -> (B,)``, and
exposes ``features`` (the penultimate layer, for embeddings such as t-SNE). Estimators,
exploration and evaluation only use these three, so action-out and action-in networks, tables
and linear models are interchangeable.

``ActionOutQNetwork`` is what ``arch=mlp`` builds: any encoder (``arch.encoder``,
``networks/encoders.py``) under any head (``arch.head``, ``networks/heads.py``), each built
from its own config node, with the runtime facts passed in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from rl_lightning.networks.encoders import Encoder, MLPEncoder
from rl_lightning.networks.heads import DuelingHead, linear_head

#: ``encoder(obs_shape=...) -> Encoder`` with ``out_features`` (a class, or a ``_partial_``)
EncoderFactory = Callable[..., Encoder]
#: ``head(in_features=..., num_actions=...) -> nn.Module`` mapping (B, F) -> (B, A)
HeadFactory = Callable[..., nn.Module]
HEADS: dict[str, HeadFactory] = {"linear": linear_head, "dueling": DuelingHead}


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


class ActionOutQNetwork(QNetwork):
    """Q(s, .) = head(encoder(s)) with the parts built from their factories, encoder first.

    ``encoder(obs_shape=obs_shape)`` must return a module with ``out_features`` (the feature
    width F); ``head(in_features=F, num_actions=num_actions)`` a module ``(B, F) -> (B, A)``.
    From config both are ``_partial_`` instantiations of ``arch.encoder`` and ``arch.head``
    (``networks.build.build_q_network``); in code, classes or ``functools.partial``s.

    Args:
        obs_shape, num_actions: runtime facts.
        encoder: builds the encoder (``conf/arch/encoder/``).
        head: builds the head (``conf/arch/head/``).
    """

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        num_actions: int,
        encoder: EncoderFactory,
        head: HeadFactory,
    ) -> None:
        encoder_module = encoder(obs_shape=tuple(obs_shape))
        head_module = head(in_features=encoder_module.out_features, num_actions=num_actions)
        super().__init__(encoder_module, head_module)


class MLPQNetwork(ActionOutQNetwork):
    """Shorthand for ``ActionOutQNetwork`` with an ``MLPEncoder`` and a head named by a string,
    for code and tests; configs compose ``arch.encoder`` and ``arch.head`` instead.

    Args:
        obs_shape, num_actions: runtime facts.
        hidden_sizes, activation, dropout, norm: the ``MLPEncoder``'s.
        head: ``linear`` | ``dueling``.
        noisy: noisy linear layers everywhere (encoder and head).
        bias: whether the linear head has a bias (ignored by the dueling head).
        init_zero: zero the head (Q = 0 everywhere at the start).
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
            raise ValueError(f"head={head!r} is not one of {sorted(HEADS)}")
        head_options: dict[str, bool] = {"noisy": noisy, "init_zero": init_zero}
        if head == "linear":
            head_options["bias"] = bias
        super().__init__(
            obs_shape=obs_shape,
            num_actions=num_actions,
            encoder=functools.partial(
                MLPEncoder,
                hidden_sizes=list(hidden_sizes),
                activation=activation,
                dropout=dropout,
                norm=norm,
                noisy=noisy,
            ),
            head=functools.partial(HEADS[head], **head_options),
        )
