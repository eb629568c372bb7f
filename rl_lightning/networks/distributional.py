"""Distributional heads: a return distribution for every action, C51's or QR-DQN's.

``CategoricalHead`` (C51) puts learned probabilities on fixed atoms; ``QuantileHead`` (QR-DQN,
Dabney et al., 2018) puts equal probabilities on learned atoms, the quantiles. Both output the
expected values from ``forward`` and their distribution from ``distribution``; ``kind`` tells the
loss which one it reads (``rl_lightning.distributional``).

The categorical head:

Bellemare, Dabney & Munos, "A Distributional Perspective on Reinforcement Learning" (ICML 2017).
The head maps features ``phi(s)`` ``(B, F)`` to logits ``(B, A, N)`` over N atoms

    z_j = v_min + j * dz,   dz = (v_max - v_min) / (N - 1),   j = 0 .. N - 1

and ``Z(s, a)`` takes the value ``z_j`` with probability ``p_j(s, a) = softmax_j(logits)``.
``forward`` returns the expected values ``Q(s, a) = sum_j p_j(s, a) z_j`` ``(B, A)``, so acting,
evaluation, embeddings and every diagnostic treat it like any other head; the distributional
loss (``rl_lightning.distributional.CategoricalTDLoss``) reads ``distribution`` instead.

With ``dueling=True`` the two streams of Wang et al. (2016) are per atom, as in Rainbow
(Hessel et al., 2018, eq. 2): ``logits(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``, each of
V ``(B, 1, N)`` and A ``(B, A, N)`` one linear layer, then the softmax over atoms.
"""

from __future__ import annotations

import torch
from torch import nn

from rl_lightning.networks.heads import QHead
from rl_lightning.networks.noisy import linear_layer


class AtomHead(QHead):
    """N outputs per action, ``(B, F)`` -> ``(B, A, N)`` (``per_atom``): the linear layers that
    C51's logits and QR-DQN's quantiles share, with optional per-atom dueling streams
    ``V(s) + A(s, a) - mean_a' A(s, a')``, V ``(B, 1, N)`` and A ``(B, A, N)`` (Rainbow, eq. 2).

    Args:
        in_features, num_actions: runtime facts.
        atoms: N, outputs per action.
        dueling, noisy, init_zero: see the subclasses.
    """

    distributional = True

    def __init__(
        self,
        *,
        in_features: int,
        num_actions: int,
        atoms: int,
        dueling: bool,
        noisy: bool,
        init_zero: bool,
    ) -> None:
        super().__init__()
        self.num_actions, self.atoms = num_actions, atoms
        self.value = linear_layer(in_features, atoms, noisy=noisy) if dueling else None
        self.advantage = linear_layer(in_features, num_actions * atoms, noisy=noisy)
        if init_zero:
            for p in self.parameters():
                nn.init.zeros_(p)

    def per_atom(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``(B, A, N)``: the advantage stream, or the dueling combination."""
        advantage = self.advantage(features).view(-1, self.num_actions, self.atoms)
        if self.value is None:
            return advantage
        value = self.value(features).unsqueeze(1)
        return value + advantage - advantage.mean(dim=1, keepdim=True)


class CategoricalHead(AtomHead):
    """C51's head: features ``(B, F)`` -> expected Q ``(B, A)``; ``distribution`` -> log p ``(B, A, N)``.

    Args:
        in_features, num_actions: runtime facts (the encoder's width, the env's actions).
        atoms: N >= 2, the number of atoms (51 in C51 and Rainbow).
        v_min, v_max: the support's ends, in return units (v_min < v_max). Returns outside are
            projected onto the nearest end (``categorical_projection``), so the support should
            cover the discounted returns the task can give. From config, null means the env's
            ``reward_range / (1 - gamma)`` (``networks.build``).
        dueling: per-atom value and advantage streams (Rainbow's).
        noisy: factorised Gaussian noisy layers (exploration=noisy).
        init_zero: zero the output layers: uniform distributions, Q = (v_min + v_max) / 2.
    """

    kind = "categorical"

    def __init__(
        self,
        *,
        in_features: int,
        num_actions: int,
        atoms: int = 51,
        v_min: float | None = -10.0,
        v_max: float | None = 10.0,
        dueling: bool = False,
        noisy: bool = False,
        init_zero: bool = False,
    ) -> None:
        if v_min is None or v_max is None:
            raise ValueError(
                "arch.head.v_min/v_max are null and the env's return range is unknown: set them, "
                "or env.reward_range=[low,high] (the support is then reward_range / (1 - gamma))"
            )
        if atoms < 2:
            raise ValueError(f"arch.head.atoms must be >= 2, got {atoms}")
        if not v_min < v_max:
            raise ValueError(f"arch.head.v_min={v_min} must be below arch.head.v_max={v_max}")
        super().__init__(
            in_features=in_features,
            num_actions=num_actions,
            atoms=atoms,
            dueling=dueling,
            noisy=noisy,
            init_zero=init_zero,
        )
        self.v_min, self.v_max = float(v_min), float(v_max)
        self.register_buffer("support", torch.linspace(self.v_min, self.v_max, atoms))
        self.support: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> unnormalised log-probabilities ``(B, A, N)``."""
        return self.per_atom(features)

    def distribution(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``log p_j(s, a)`` ``(B, A, N)``, normalised over the atoms."""
        return torch.log_softmax(self.logits(features), dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``Q(s, a) = sum_j p_j(s, a) z_j`` ``(B, A)``."""
        return torch.softmax(self.logits(features), dim=-1) @ self.support

    def extra_repr(self) -> str:
        return f"atoms={self.atoms}, v_min={self.v_min}, v_max={self.v_max}"


class QuantileHead(AtomHead):
    """QR-DQN's head: features ``(B, F)`` -> expected Q ``(B, A)``; ``distribution`` -> the N
    quantile values ``theta_i(s, a)`` ``(B, A, N)`` at the levels ``tau_i = (2i + 1) / 2N``.

    Z(s, a) puts mass 1/N on each ``theta_i``, so ``Q(s, a)`` is their mean. No support to
    choose: the atoms move, which is why QR-DQN needs no ``v_min``/``v_max``
    (Dabney, Rowland, Bellemare & Munos, "Distributional RL with Quantile Regression", 2018).

    Args:
        in_features, num_actions: runtime facts.
        quantiles: N >= 1 (QR-DQN on Atari: 200; Dopamine's classic-control configs: 51).
        kappa: the quantile Huber loss's threshold (QR-DQN: 1; 0: the plain quantile loss).
        dueling: per-quantile value and advantage streams.
        noisy: factorised Gaussian noisy layers (exploration=noisy).
        init_zero: zero the output layers (every quantile 0).
    """

    kind = "quantile"

    def __init__(
        self,
        *,
        in_features: int,
        num_actions: int,
        quantiles: int = 51,
        kappa: float = 1.0,
        dueling: bool = False,
        noisy: bool = False,
        init_zero: bool = False,
    ) -> None:
        if quantiles < 1:
            raise ValueError(f"arch.head.quantiles must be >= 1, got {quantiles}")
        if kappa < 0:
            raise ValueError(f"arch.head.kappa must be >= 0, got {kappa}")
        super().__init__(
            in_features=in_features,
            num_actions=num_actions,
            atoms=quantiles,
            dueling=dueling,
            noisy=noisy,
            init_zero=init_zero,
        )
        self.quantiles, self.kappa = quantiles, float(kappa)
        self.register_buffer("taus", (2 * torch.arange(quantiles) + 1) / (2.0 * quantiles))
        self.taus: torch.Tensor

    def distribution(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> quantile values ``theta`` ``(B, A, N)``."""
        return self.per_atom(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``Q(s, a) = mean_i theta_i(s, a)`` ``(B, A)``."""
        return self.distribution(features).mean(dim=-1)

    def extra_repr(self) -> str:
        return f"quantiles={self.quantiles}, kappa={self.kappa}"
