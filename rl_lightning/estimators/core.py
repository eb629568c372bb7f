"""TD targets: the pure operators (tensors in, the target out) and the ``Estimator`` interface.

Time indices follow rlax. A sampled transition (an n-step window of k <= n real steps) is

    s_tm1, a_tm1  --r_t, discount_t-->  s_t (, a_t)

    s_tm1, a_tm1  the transition's start state and the action taken there: Q(s_tm1, a_tm1) is
                  what the loss regresses (``batch.obs``, ``batch.actions``)
    r_t           the discounted window reward sum_{i<k} gamma^i r_{i+1} (zero-padded rewards)
    discount_t    gamma^k * (1 - terminated): no bootstrap after termination; truncation still
                  bootstraps
    s_t           the bootstrap state k steps later (``batch.next_obs``)
    a_t           the action the behaviour policy took in s_t (``batch.next_actions``, SARSA)
    q_t, q_tm1    Q-values (B, A) at s_t and s_tm1; suffixes name the network: ``q_t`` is the
                  bootstrap network's (the target network, or the online one when there is none),
                  ``q_t_online`` the online network's, ``q_tm1_target`` the target network's

Every estimator here is  target = r_t + discount_t * v(s_t)  with its own v(s_t):

    q_learning       max_a q_t[a]
    sarsa            q_t[a_t]
    expected_sarsa   sum_a pi(a|s_t) q_t[a]            pi: the behaviour policy's probabilities
    double_q         q_t[argmax_a q_t_online[a]]       select online, evaluate target

and an estimator may also reshape the reward (Munchausen adds a term in Q(s_tm1, .)). Targets are
computed under ``torch.no_grad()`` by ``TDLoss``: the target is a constant (semi-gradient), so
minimising (Q(s_tm1, a_tm1) - target)^2 is a regression.

An ``Estimator`` subclass declares what it reads (``needs_*`` below); ``TDLoss`` computes exactly
that, so a new estimator is one file and one yaml: nothing to register anywhere.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import torch


def n_step_return(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """rewards: (B, n) zero-padded -> (B,) discounted sum sum_i gamma^i r_i."""
    n = rewards.shape[-1]
    powers = gamma ** torch.arange(n, dtype=rewards.dtype, device=rewards.device)
    return (rewards * powers).sum(dim=-1)


def bootstrap_discount(
    n_steps: torch.Tensor, terminated: torch.Tensor, gamma: float
) -> torch.Tensor:
    """gamma^k * (1 - terminated): (B,) int steps and (B,) {0, 1} flags -> (B,) float."""
    return torch.pow(torch.full_like(terminated, gamma), n_steps.to(terminated.dtype)) * (
        1.0 - terminated
    )


def window_return(
    rewards: torch.Tensor, n_steps: torch.Tensor, terminated: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_t, discount_t), each (B,), of windows of rewards (B, n), k = n_steps, terminated.

    A one-step window always holds its one step (k = 1): the same numbers as the general
    formula, r_t = r * gamma^0 and discount_t = gamma^1 * (1 - terminated), in two cheap ops.
    """
    if rewards.shape[-1] == 1:
        return rewards.squeeze(-1), (1.0 - terminated) * gamma
    return n_step_return(rewards, gamma), bootstrap_discount(n_steps, terminated, gamma)


def q_learning(r_t: torch.Tensor, discount_t: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
    """r_t + discount_t * max_a q_t[a]. q_t: (B, A)."""
    return r_t + discount_t * q_t.max(dim=-1).values


def sarsa(
    r_t: torch.Tensor, discount_t: torch.Tensor, q_t: torch.Tensor, a_t: torch.Tensor
) -> torch.Tensor:
    """r_t + discount_t * q_t[a_t], a_t the action taken in s_t. q_t: (B, A); a_t: (B,)."""
    return r_t + discount_t * q_t.gather(-1, a_t.long().unsqueeze(-1)).squeeze(-1)


def expected_sarsa(
    r_t: torch.Tensor, discount_t: torch.Tensor, q_t: torch.Tensor, probs_t: torch.Tensor
) -> torch.Tensor:
    """r_t + discount_t * sum_a pi(a|s_t) q_t[a]. q_t, probs_t: (B, A)."""
    return r_t + discount_t * (probs_t * q_t).sum(dim=-1)


def one_hot(actions: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) action indices -> (B, A) one-hot weights, A and dtype those of ``like`` (B, A)."""
    return torch.zeros_like(like).scatter_(-1, actions.long().unsqueeze(-1), 1.0)


def double_q_learning(
    r_t: torch.Tensor, discount_t: torch.Tensor, q_t_value: torch.Tensor, q_t_selector: torch.Tensor
) -> torch.Tensor:
    """r_t + discount_t * q_t_value[argmax_a q_t_selector[a]] (van Hasselt et al., 2016)."""
    a_star = q_t_selector.argmax(dim=-1, keepdim=True)
    return r_t + discount_t * q_t_value.gather(-1, a_star).squeeze(-1)


class TDInputs(NamedTuple):
    """What ``TDLoss`` hands an estimator (B transitions, A actions; see the module docstring).

    ``r_t``, ``discount_t``, ``q_t`` and ``a_tm1`` are always there; the others only when the
    estimator's matching ``needs_*`` flag is set (``None`` otherwise).
    """

    r_t: torch.Tensor  # (B,) window reward
    discount_t: torch.Tensor  # (B,) gamma^k (1 - terminated)
    q_t: torch.Tensor  # (B, A) bootstrap network at s_t
    a_tm1: torch.Tensor  # (B,) the action whose value is regressed
    a_t: torch.Tensor | None = None  # (B,) behaviour action in s_t        needs_next_action
    probs_t: torch.Tensor | None = None  # (B, A) behaviour pi(.|s_t)      needs_probs_t
    q_t_online: torch.Tensor | None = None  # (B, A) online net at s_t     needs_q_t_online
    q_tm1_target: torch.Tensor | None = None  # (B, A) target net at s_tm1 needs_q_tm1_target


class Estimator(abc.ABC):
    """A TD target and its window length; the config group ``estimator/`` (one class per file).

    Subclasses set the class attributes below and implement ``target``. ``TDLoss`` reads the
    ``needs_*`` flags once and computes exactly those inputs, all without gradient.

    Args:
        n_step: window length n >= 1 of the n-step return.
    """

    #: a_t: the action the behaviour policy took in s_t (read from the buffer)
    needs_next_action: ClassVar[bool] = False
    #: pi(.|s_t): the behaviour policy's probabilities, from the online network's q_t
    needs_probs_t: ClassVar[bool] = False
    #: the online network's values at s_t (one more forward pass when a target network exists)
    needs_q_t_online: ClassVar[bool] = False
    #: the target network's values at the start state s_tm1 (one more forward pass)
    needs_q_tm1_target: ClassVar[bool] = False
    #: the fixed point is the behaviour policy's value even at n = 1 (SARSA)
    learns_behaviour_value: ClassVar[bool] = False
    #: how messages name the method
    label: ClassVar[str] = "TD"

    def __init__(self, *, n_step: int = 1) -> None:
        if n_step < 1:
            raise ValueError(f"estimator.n_step must be >= 1, got {n_step}")
        self.n_step = int(n_step)

    @property
    def is_on_policy(self) -> bool:
        """Biased when learning from old data: it learns the behaviour policy's value, or its
        n-step return (n > 1) follows the behaviour policy for n - 1 steps."""
        return self.learns_behaviour_value or self.n_step > 1

    def describe(self) -> str:
        """What makes the target on-policy, as the replay warning names it: ``SARSA``, or
        ``a 3-step return``."""
        if self.learns_behaviour_value:
            return self.label
        return f"a {self.n_step}-step return"

    @abc.abstractmethod
    def target(self, x: TDInputs) -> torch.Tensor:
        """The TD target (B,) from the inputs this estimator declared."""

    def bootstrap_policy(self, x: TDInputs) -> torch.Tensor:
        """Weights w (B, A) over the actions at s_t with ``target = r_t + discount_t *
        sum_a w[a] q_t[a]``, for estimators whose value of s_t is such an average: the
        distributional loss bootstraps the same mixture of return distributions
        (``rl_lightning.distributional``). Estimators without one raise NotImplementedError."""
        raise NotImplementedError(f"{self.label} has no bootstrap policy over the actions")

    @property
    def supports_distributional(self) -> bool:
        """Whether ``bootstrap_policy`` is defined (a distributional head can learn with it)."""
        return type(self).bootstrap_policy is not Estimator.bootstrap_policy

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_step={self.n_step})"
