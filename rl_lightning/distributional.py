"""Distributional TD learning (C51): the categorical projection and its cross-entropy loss.

Bellemare, Dabney & Munos (ICML 2017), with the n-step windows and bootstrap-action choices of
Rainbow (Hessel et al., 2018). A categorical head (``arch/head=distributional``,
``networks.distributional.CategoricalHead``) gives every action a distribution ``p(s, a)`` over
fixed atoms ``z_0 < ... < z_{N-1}``. The distributional Bellman target of a transition is the
bootstrap distribution shifted and shrunk, ``r_t + discount_t * Z(s_t, .)``, which no longer sits
on the atoms; ``categorical_projection`` puts each shifted atom's mass on its two neighbours in
proportion to closeness (ends clipped to ``[v_min, v_max]``), and the loss is the cross-entropy
of the online distribution at ``(s_tm1, a_tm1)`` against that constant target (a semi-gradient,
as in ``TDLoss``).

Which distribution is bootstrapped is the estimator's choice, as in ``TDLoss``: every estimator
whose value of ``s_t`` is an average of ``q_t`` over actions, ``v(s_t) = sum_a w(a) q_t[a]``,
names the weights ``w`` (``Estimator.bootstrap_policy``) and the target distribution is the
same mixture of the bootstrap network's distributions at ``s_t``:

    Q-learning      w = onehot(argmax_a q_t)            (C51)
    Double Q        w = onehot(argmax_a q_t_online)     (Rainbow)
    SARSA           w = onehot(a_t)
    Expected SARSA  w = pi(.|s_t)

so the mean of the target is exactly the expectation estimator's target (while it stays inside
the support: the projection preserves the mean there). Munchausen's soft value is no such
average and is refused. The regression loss of ``loss/`` (Huber, MSE) does not apply.

Time indices as in ``rl_lightning.estimators.core``.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.estimators.core import Estimator
from rl_lightning.losses import TDLoss


def categorical_projection(
    support: torch.Tensor, r_t: torch.Tensor, discount_t: torch.Tensor, probs_t: torch.Tensor
) -> torch.Tensor:
    """Project ``r_t + discount_t * Z`` onto ``support``: ``(N,), (B,), (B,), (B, N) -> (B, N)``.

    ``Z`` puts mass ``probs_t[b, j]`` on ``support[j]``. Each shifted atom
    ``T z_j = clip(r_t + discount_t z_j, v_min, v_max)`` gives atom ``z_i`` the share
    ``max(0, 1 - |T z_j - z_i| / dz)`` of its mass: all of it when it lands on ``z_i``, else split
    between its two neighbours linearly (the hat-function form of C51's Algorithm 1, which also
    handles a ``T z_j`` exactly on an atom). ``discount_t = 0`` (the episode terminated) moves all
    the mass to ``r_t``. Needs evenly spaced atoms; the result sums to 1 per row like ``probs_t``.
    """
    v_min, v_max = support[0], support[-1]
    delta = (v_max - v_min) / (support.shape[0] - 1)
    shifted = (r_t.unsqueeze(-1) + discount_t.unsqueeze(-1) * support).clamp(v_min, v_max)
    # share[b, i, j] of shifted atom j that goes to atom i
    share = (1.0 - (shifted.unsqueeze(1) - support.view(1, -1, 1)).abs() / delta).clamp(min=0.0)
    return torch.bmm(share, probs_t.unsqueeze(-1)).squeeze(-1)


def log_distribution(network: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The head's ``distribution`` ``(B, A, N)`` of an action-out network at ``obs``: log
    probabilities (categorical) or quantile values (quantile)."""
    net = cast(Any, network)
    return cast(torch.Tensor, net.head.distribution(net.features(obs)))


def quantile_huber_loss(
    theta: torch.Tensor,
    taus: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    kappa: float,
) -> torch.Tensor:
    """QR-DQN's loss (B,): ``sum_i sum_j w_j rho_kappa_{tau_i}(T_j - theta_i)``.

    ``theta`` (B, N) quantile values at levels ``taus`` (N,); ``targets`` (B, M) target atoms with
    probabilities ``weights`` (B, M) (rows sum to 1); ``rho_kappa_tau(u) = |tau - 1{u < 0}|
    L_kappa(u) / kappa``, ``L_kappa`` the Huber loss of threshold kappa (kappa = 0: ``|tau -
    1{u < 0}| |u|``, the plain quantile loss). Dabney et al. (2018), eq. 10, with the target's
    mean over its atoms weighted (a mixture over actions for Expected SARSA).
    """
    u = targets.unsqueeze(1) - theta.unsqueeze(2)  # (B, N, M): T_j - theta_i
    if kappa > 0:
        abs_u = u.abs()
        huber = torch.where(abs_u <= kappa, 0.5 * u * u, kappa * (abs_u - 0.5 * kappa)) / kappa
    else:
        huber = u.abs()
    rho = (taus.view(1, -1, 1) - (u.detach() < 0).to(u.dtype)).abs() * huber
    return (rho * weights.unsqueeze(1)).sum(dim=(1, 2))


class DistributionalTDLoss(TDLoss):
    """A TD loss on return distributions: what C51 and QR-DQN share.

    ``loss(batch) -> (loss, Q(s_tm1, a_tm1) (B,), E[target] (B,))`` with
    ``loss = mean_B w_b * l_b``, ``l_b`` the subclass's per-transition loss and ``w_b`` a
    prioritized sampler's importance weights (1 without); ``td_errors`` is a per-transition
    priority signal of the last call. Same constructor as ``TDLoss``; ``loss`` (the regression
    loss of ``loss/``) is not used. The online network's head must be distributional
    (``head.distributional``), and the estimator must name its bootstrap policy
    (``Estimator.supports_distributional``).
    """

    def __init__(self, *, loss: nn.Module | None = None, **kwargs: Any) -> None:
        """``TDLoss``'s keywords; ``loss`` (the regression loss of ``loss/``) is not used."""
        super().__init__(loss=nn.Identity() if loss is None else loss, **kwargs)
        self.head: Any = cast(Any, self.q_network).head
        self._priority: torch.Tensor | None = None

    def check(self, q_network: nn.Module, estimator: Estimator) -> None:
        if not getattr(getattr(q_network, "head", None), "distributional", False):
            raise ValueError(
                f"the distributional loss needs an action-out network with a distributional "
                f"head (arch/head=distributional), got {type(q_network).__name__}"
            )
        if not estimator.supports_distributional:
            raise ValueError(
                f"{estimator.label} has no distributional form (its value of s_t is not an "
                "average of Q over actions); use q_learning, double_q, sarsa or expected_sarsa"
            )

    def __call__(self, batch: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    forward = __call__

    def _reduce(self, per_sample: torch.Tensor, batch: TransitionBatch) -> torch.Tensor:
        if batch.weights is None:
            return per_sample.mean()
        return (per_sample * batch.weights).mean()

    def td_errors(self, q_sa: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The last call's per-transition priority signal (B,), without gradient (``q_sa`` and
        ``target`` unused)."""
        assert self._priority is not None, "td_errors is read after the loss of a batch"
        return self._priority

    @torch.no_grad()
    def bootstrap(
        self, batch: TransitionBatch, expected: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(dist_t (B, A, N), weights (B, A), r_t (B,), discount_t (B,))``: the bootstrap
        network's distributions at s_t and the estimator's weights over them (its
        ``bootstrap_policy``, given the expected values ``expected(dist_t)`` (B, A))."""
        dist_t = log_distribution(self._bootstrap, batch.next_obs)
        x = self.td_inputs(batch, expected(dist_t))
        return dist_t, self.estimator.bootstrap_policy(x), x.r_t, x.discount_t


def _taken(dist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``dist`` (B, A, N) at the taken actions (B,) -> (B, N)."""
    index = actions.long().view(-1, 1, 1).expand(-1, 1, dist.shape[-1])
    return dist.gather(1, index).squeeze(1)


class CategoricalTDLoss(DistributionalTDLoss):
    """C51's cross-entropy: ``l_b = CE(Phi(r_t + discount_t Z_t), p(s_tm1, a_tm1))`` with
    ``Phi`` the projection and ``Z_t`` the estimator's mixture of bootstrap distributions.

    ``td_errors``: the KL divergence of the online distribution from the target (Rainbow's
    priority; the cross-entropy minus the target's entropy, which is not learnable).
    """

    def __call__(self, batch: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target_probs = self.target_distribution(batch)
        log_p_sa = _taken(log_distribution(self.q_network, batch.obs), batch.actions)
        cross_entropy = -(target_probs * log_p_sa).sum(dim=-1)
        support = self.head.support
        with torch.no_grad():
            entropy = torch.xlogy(target_probs, target_probs).sum(-1)
            self._priority = cross_entropy.detach() + entropy
            target = target_probs @ support
        return self._reduce(cross_entropy, batch), log_p_sa.exp() @ support, target

    forward = __call__

    @torch.no_grad()
    def target_distribution(self, batch: TransitionBatch) -> torch.Tensor:
        """The projected target distribution ``(B, N)`` (a constant: no gradient)."""
        support = self.head.support
        log_p_t, weights, r_t, discount_t = self.bootstrap(batch, lambda d: d.exp() @ support)
        mixture = torch.bmm(weights.unsqueeze(1), log_p_t.exp()).squeeze(1)  # (B, N)
        return categorical_projection(support, r_t, discount_t, mixture)


class QuantileTDLoss(DistributionalTDLoss):
    """QR-DQN's quantile Huber loss (``quantile_huber_loss``): the online quantiles at
    ``(s_tm1, a_tm1)`` regress on the target atoms ``r_t + discount_t theta_j(s_t, a)`` of every
    action a, each with probability ``w(a) / N`` (w the estimator's bootstrap policy: one action
    for Q-learning, Double Q and SARSA, the behaviour policy for Expected SARSA).

    ``td_errors``: the per-transition loss (what Dopamine's prioritized QR agents use).
    """

    def __call__(self, batch: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            theta_t, weights, r_t, discount_t = self.bootstrap(batch, lambda d: d.mean(-1))
            b, a, n = theta_t.shape
            targets = (r_t.view(-1, 1, 1) + discount_t.view(-1, 1, 1) * theta_t).view(b, a * n)
            atom_weights = (weights.unsqueeze(-1) / n).expand(b, a, n).reshape(b, a * n)
            target = (targets * atom_weights).sum(-1)
        theta = _taken(log_distribution(self.q_network, batch.obs), batch.actions)
        per_sample = quantile_huber_loss(
            theta, self.head.taus, targets, atom_weights, self.head.kappa
        )
        self._priority = per_sample.detach()
        return self._reduce(per_sample, batch), theta.mean(-1), target

    forward = __call__
