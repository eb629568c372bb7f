"""Heads: features ``(B, F)`` -> Q-values ``(B, A)``, the last part of an action-out Q-network.

A head is chosen with ``arch/head=NAME`` (``conf/arch/head/NAME.yaml``) and tuned with
``arch.head.KEY=VALUE``; it composes with any encoder, since it only sees the encoder's
``out_features``. Heads here: ``linear`` (``linear_head``) and ``dueling`` (``DuelingHead``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from rl_lightning.networks.noisy import NoisyLinear, linear_layer


class QHead(nn.Module):
    """Base of the heads: ``forward(features (B, F)) -> Q (B, A)``.

    Constructor contract: keyword-only ``in_features`` (the encoder's ``out_features``) and
    ``num_actions`` (the env's), both runtime facts passed in by ``ActionOutQNetwork``; the other
    parameters come from ``conf/arch/head/NAME.yaml``. A ``noisy: bool`` parameter makes the
    head take part in exploration=noisy (``networks.build`` sends it to every part that has it).

    Distributional heads (C51, QR-DQN) subclass this too and keep ``forward`` returning the
    expected values ``Q(s, a) = E[Z(s, a)]`` as ``(B, A)``, so acting, evaluation, embeddings and
    the expectation-based estimators need no change. They set ``distributional = True`` and
    implement ``distribution(features) -> (B, A, N)``: for C51 the log-probabilities over N
    fixed atoms, with the atoms in a buffer ``support`` of shape ``(N,)`` (then ``forward`` is
    ``(softmax(logits) * support).sum(-1)``); for quantile regression the N quantile values
    ``theta`` at the midpoints ``tau_i = (2i + 1) / 2N`` (then ``forward`` is their mean). A
    distributional loss reads ``q_network.head.distribution(q_network.features(obs))``; heads of
    expected values only raise ``NotImplementedError`` there.
    """

    distributional: ClassVar[bool] = False

    def distribution(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``(B, A, N)``: the return distribution of each action (see above)."""
        raise NotImplementedError(f"{type(self).__name__} outputs expected Q-values only")


class LinearHead(nn.Linear, QHead):
    """Q(s, .) = W phi(s) + b: an ``nn.Linear`` (same parameters, initialisation and forward)
    that is also a ``QHead``."""


class NoisyLinearHead(NoisyLinear, QHead):
    """Q(s, .) = (mu_W + sigma_W * eps_W) phi(s) + mu_b + sigma_b * eps_b (``NoisyLinear``)."""


def linear_head(
    *,
    in_features: int,
    num_actions: int,
    bias: bool = True,
    init_zero: bool = False,
    noisy: bool = False,
    dueling: bool = False,
) -> nn.Module:
    """The linear head Q(s, a) = w_a . phi(s) + b_a: ``(B, F)`` -> ``(B, A)``.

    Args:
        in_features, num_actions: runtime facts (the encoder's width, the env's actions).
        bias: whether the layer has the bias b.
        init_zero: zero the layer (Q = 0 everywhere at the start).
        noisy: a factorised Gaussian noisy layer (``NoisyLinearHead``; exploration=noisy).
        dueling: the dueling split instead (``DuelingHead``, as ``arch/head=dueling``; its
            streams always have a bias). The same key switches the distributional head's
            streams, so ``arch.head.dueling`` is one switch whatever the head.
    """
    if dueling:
        return DuelingHead(
            in_features=in_features, num_actions=num_actions, init_zero=init_zero, noisy=noisy
        )
    head: nn.Linear | NoisyLinear = (
        NoisyLinearHead(in_features, num_actions, bias=bias)
        if noisy
        else LinearHead(in_features, num_actions, bias=bias)
    )
    if init_zero:
        for p in head.parameters():
            nn.init.zeros_(p)
    return head


class DuelingHead(QHead):
    """Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (Wang et al., 2016).

    Two linear streams of the features ``(B, F)``: ``value`` -> V ``(B, 1)`` and ``advantage`` ->
    A ``(B, A)``. Subtracting the mean advantage makes the split identifiable (mean_a Q = V) at
    no cost to the greedy action (argmax_a Q = argmax_a A).

    Args:
        in_features, num_actions: runtime facts.
        init_zero: zero both streams (Q = 0 everywhere at the start).
        noisy: factorised Gaussian noisy streams (exploration=noisy).
    """

    def __init__(
        self, *, in_features: int, num_actions: int, init_zero: bool = False, noisy: bool = False
    ) -> None:
        super().__init__()
        self.value = linear_layer(in_features, 1, noisy=noisy)
        self.advantage = linear_layer(in_features, num_actions, noisy=noisy)
        if init_zero:
            for p in self.parameters():
                nn.init.zeros_(p)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=-1, keepdim=True)
