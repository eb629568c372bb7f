"""TDLoss: the semi-gradient TD regression, all of its maths in one place.

    loss = mean_B  l(Q(s_tm1, a_tm1), y),    y = estimator(r_t, discount_t, Q-values at s_t, ...)

with ``l`` the elementwise regression loss (``loss/``: Huber or squared error), ``y`` a constant
(computed without gradient) and Q(s_tm1, a_tm1) the online network's value of the taken action,
the only term the gradient flows through. Time indices as in ``rl_lightning.estimators.core``.

The loss owns the networks (TorchRL's loss modules are the model): the online network, and the
target network -- a frozen copy, ``requires_grad=False`` -- that a target update (``target/``)
moves after each optimizer step. ``QLearningModule.train()`` puts the target network in eval mode,
but nothing calls it during ``trainer.fit`` (Lightning 2.6), so in training runs the target stays
in the mode it was copied in: train mode (dropout, noisy layers and batchnorm then act in the
target as in the online network). Kept as it is: changing it changes every such run. The
estimator declares what it reads (``needs_*``); the loss computes exactly that:

    network pass                          when
    bootstrap net (target, else online)   always: q_t = Q(s_t, .)
    online net at s_t                     needs_q_t_online or needs_probs_t (pi acts on it),
                                          only when a target network exists (else it is q_t)
    behaviour pi(.|s_t)                   needs_probs_t: ``exploration.probs(online q_t, env step)``
    bootstrap net at s_tm1                needs_q_tm1_target
    online net at s_tm1, a_tm1            always, with gradient

in this order: noisy layers and dropout draw random numbers per forward pass, so the order is
part of the result.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.estimators.core import Estimator, TDInputs, window_return
from rl_lightning.exploration import Exploration


class TDLoss:
    """``loss(batch) -> (loss, q_sa (B,), target (B,))`` for a minibatch of n-step transitions.

    Not an ``nn.Module``: the LightningModule registers the two networks under its own names
    (``q_network.*``, ``target_network.*`` in checkpoints) and moves them between devices.

    Args:
        q_network: the online network ``(B, *obs_shape) -> (B, A)`` with ``q_values(obs, a)``.
        estimator: the TD target and its window (``estimator/``).
        loss: elementwise-mean regression loss ``loss(q_sa, target)`` (``loss/``).
        gamma: discount per environment step.
        use_target_network: keep a frozen copy of ``q_network`` to bootstrap from
            (``target_update.uses_target_network``); without one the online network
            bootstraps, still without gradient.
        exploration: the behaviour policy; its ``probs`` are read by estimators that declare
            ``needs_probs_t``.
    """

    def __init__(
        self,
        *,
        q_network: nn.Module,
        estimator: Estimator,
        loss: nn.Module,
        gamma: float,
        use_target_network: bool = True,
        exploration: Exploration | None = None,
    ) -> None:
        self.check(q_network, estimator)
        if estimator.needs_probs_t and exploration is None:
            raise ValueError(f"{type(estimator).__name__} needs the exploration's probabilities")
        self.q_network = q_network
        self.target_network: nn.Module | None = None
        if use_target_network:
            self.target_network = copy.deepcopy(q_network).requires_grad_(False)
        self.estimator = estimator
        self.loss_fn = loss
        # the same loss per sample, for importance-weighted batches (a prioritized sampler)
        self._per_sample: Any = None
        if hasattr(loss, "reduction"):  # torch's losses
            self._per_sample = copy.copy(loss)
            self._per_sample.reduction = "none"
        self.gamma = float(gamma)
        self.exploration = exploration
        self._bootstrap = self.target_network if self.target_network is not None else q_network
        self._q_values = cast(Any, q_network).q_values
        # what the estimator reads, decided once
        self._next_action = estimator.needs_next_action
        self._probs_t = estimator.needs_probs_t
        self._q_t_online = estimator.needs_q_t_online
        self._online_pass = estimator.needs_q_t_online or estimator.needs_probs_t
        self._q_tm1_target = estimator.needs_q_tm1_target

    def __call__(self, batch: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, Q(s_tm1, a_tm1) (B,), target (B,)); only the first two carry gradient.

        With importance weights w (B,) in the batch (a prioritized sampler's) the loss is
        mean_B w * l(Q(s_tm1, a_tm1), y); without (uniform, online) ``loss(q_sa, target)``."""
        target = self.td_target(batch)
        q_sa = self._q_values(batch.obs, batch.actions)
        if batch.weights is None:
            return self.loss_fn(q_sa, target), q_sa, target
        assert self._per_sample is not None, "weighted batches need a loss with `reduction`"
        return (self._per_sample(q_sa, target) * batch.weights).mean(), q_sa, target

    forward = __call__

    def check(self, q_network: nn.Module, estimator: Estimator) -> None:
        """ValueError if this loss cannot learn ``q_network`` with ``estimator`` (called first
        by the constructor; the distributional and recurrent losses say what they need)."""

    def td_errors(self, q_sa: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-transition TD errors target - Q(s_tm1, a_tm1) (B,), without gradient (what a
        prioritized sampler takes back)."""
        return target - q_sa.detach()

    @torch.no_grad()
    def td_target(self, batch: TransitionBatch) -> torch.Tensor:
        """y (B,) for a minibatch, computed without gradient (the semi-gradient target)."""
        return self.estimator.target(self.td_inputs(batch, self._bootstrap(batch.next_obs)))

    @torch.no_grad()
    def td_inputs(self, batch: TransitionBatch, q_t: torch.Tensor) -> TDInputs:
        """What the estimator declared it reads, given the bootstrap network's values ``q_t``
        (B, A) at s_t: the other passes in the module docstring's order, after q_t's."""
        q_t_online = q_tm1_target = None
        if self._online_pass:
            q_t_online = q_t if self.target_network is None else self.q_network(batch.next_obs)
        if self._q_tm1_target:
            q_tm1_target = self._bootstrap(batch.obs)
        r_t, discount_t = window_return(batch.rewards, batch.n_steps, batch.terminated, self.gamma)
        return self.assemble_inputs(
            r_t,
            discount_t,
            q_t,
            batch.actions,
            batch.next_actions,
            q_t_online,
            q_tm1_target,
            batch.env_steps,
        )

    def assemble_inputs(
        self,
        r_t: torch.Tensor,
        discount_t: torch.Tensor,
        q_t: torch.Tensor,
        a_tm1: torch.Tensor,
        a_t: torch.Tensor | None,
        q_t_online: torch.Tensor | None,
        q_tm1_target: torch.Tensor | None,
        env_steps: int,
    ) -> TDInputs:
        """``TDInputs`` holding what the estimator declared and None for the rest; the
        behaviour probabilities, where declared, from ``q_t_online`` (the behaviour policy acts
        on the online network's Q-values). ``q_t_online`` / ``q_tm1_target``: None unless
        ``needs_q_t_online or needs_probs_t`` / ``needs_q_tm1_target``."""
        probs_t = None
        if self._probs_t:
            assert q_t_online is not None, "the behaviour probabilities need q_t_online"
            probs_t = cast(Exploration, self.exploration).probs(q_t_online, env_steps)
        return TDInputs(
            r_t,
            discount_t,
            q_t,
            a_tm1,
            a_t if self._next_action else None,
            probs_t,
            q_t_online if self._q_t_online else None,
            q_tm1_target,
        )
