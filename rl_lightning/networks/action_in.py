"""Action-in Q-network: Q(s, a) -> one scalar, the lecture's "left" architecture.

The action enters the network as an input (one-hot or a learned embedding) next to the
observation. Q-values of all actions -- for the max, the greedy action, Expected SARSA -- come
from one batched forward pass over all ``B * A`` (s, a) pairs, so the rest of the code cannot
tell it from an action-out network. It costs A times the compute of an action-out pass; it is
the architecture that scales to large or structured action spaces.

Its encoder is ``arch.encoder`` (as for ``arch=mlp``), built over the flat ``[s, encode(a)]``
vector, so only encoders of flat vectors fit (``mlp``); its head is one scalar output, so
``arch.head`` does not apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from rl_lightning.networks.encoders import Encoder
from rl_lightning.networks.noisy import linear_layer

ACTION_ENCODINGS = ("one_hot", "embedding")


class ActionInQNetwork(nn.Module):
    """An encoder over ``concat(flatten(s), encode(a))`` with a linear scalar output.

    Built in this order (the order of the random initialisation): the action embedding (if
    any), ``encoder(obs_shape=(prod(obs_shape) + action_width,))``, the output layer.

    Args:
        obs_shape, num_actions: runtime facts.
        encoder: builds the encoder of the pair (``arch.encoder``, e.g. a partial
            ``MLPEncoder``); it receives the flat pair width as ``obs_shape``.
        action_encoding: ``one_hot`` | ``embedding``.
        embedding_dim: width of the learned action embedding.
        noisy: a noisy output layer (exploration=noisy; the encoder gets its own ``noisy``).
    """

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        num_actions: int,
        encoder: Callable[..., Encoder],
        action_encoding: str = "one_hot",
        embedding_dim: int = 8,
        noisy: bool = False,
    ) -> None:
        super().__init__()
        if action_encoding not in ACTION_ENCODINGS:
            raise ValueError(
                f"arch.action_encoding={action_encoding!r} is not one of {ACTION_ENCODINGS}"
            )
        self.num_actions = num_actions
        self.action_encoding = action_encoding
        action_width = num_actions
        self.embedding: nn.Embedding | None = None
        if action_encoding == "embedding":
            self.embedding = nn.Embedding(num_actions, embedding_dim)
            action_width = embedding_dim
        self.encoder = encoder(obs_shape=(math.prod(obs_shape) + action_width,))
        self.head = linear_layer(self.encoder.out_features, 1, noisy=noisy)

    def _encode_actions(self, actions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(actions)
        return nn.functional.one_hot(actions, self.num_actions).to(dtype)

    def pair_features(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape), (B,) -> (B, F) penultimate activations of each (s, a) pair."""
        if not torch.is_floating_point(obs):
            obs = obs.float()
        flat = obs.flatten(1)
        return self.encoder(
            torch.cat([flat, self._encode_actions(actions.long(), flat.dtype)], dim=1)
        )

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s_b, a_b): one forward pass over the B given pairs -> (B,)."""
        return self.head(self.pair_features(obs, actions)).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """All actions: one batched pass over the B * A pairs -> (B, A)."""
        batch = obs.shape[0]
        obs_rep = obs.repeat_interleave(self.num_actions, dim=0)  # s_0 x A, s_1 x A, ...
        actions = torch.arange(self.num_actions, device=obs.device).repeat(batch)
        return self.q_values(obs_rep, actions).view(batch, self.num_actions)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Penultimate activations of (s, argmax_a Q(s, a)): (B, F)."""
        greedy = self(obs).argmax(dim=1)
        return self.pair_features(obs, greedy)
