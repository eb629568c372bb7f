"""TD targets as pure functions (tensors in, the target out), named with time subscripts.

Every estimator bootstraps from the value of the state ``s_t`` reached after the (n-step)
reward ``r_t`` with a discount ``discount_t``:

    target = r_t + discount_t * v(s_t)

with, for an n-step window of k <= n real steps starting at time t-k,

    r_t        = sum_{i<k} gamma^i r_{i+1}              (zero-padded rewards)
    discount_t = gamma^k * (1 - terminated)             (no bootstrap after termination;
                                                         truncation still bootstraps)

The estimators differ only in v(s_t):

    q_learning       max_a q_t[a]
    sarsa            q_t[a_t]                  a_t: the behaviour policy's stored action
    expected_sarsa   sum_a pi(a | s_t) q_t[a]  pi: the exploration policy's probabilities
    double_q         q_t[argmax_a q_t_selector[a]]   selector: online net, values: target net

All targets are computed under ``torch.no_grad()`` by the caller: the target is a constant
(semi-gradient), so minimising (Q(s, a) - target)^2 is a regression.
"""

from __future__ import annotations

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


def q_learning(r_t: torch.Tensor, discount_t: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
    """r + d * max_a q_t[a]. q_t: (B, A)."""
    return r_t + discount_t * q_t.max(dim=-1).values


def sarsa(
    r_t: torch.Tensor, discount_t: torch.Tensor, q_t: torch.Tensor, a_t: torch.Tensor
) -> torch.Tensor:
    """r + d * q_t[a_t] with a_t the action actually taken next. q_t: (B, A); a_t: (B,)."""
    return r_t + discount_t * q_t.gather(-1, a_t.long().unsqueeze(-1)).squeeze(-1)


def expected_sarsa(
    r_t: torch.Tensor, discount_t: torch.Tensor, q_t: torch.Tensor, probs_t: torch.Tensor
) -> torch.Tensor:
    """r + d * sum_a pi(a|s_t) q_t[a]. q_t, probs_t: (B, A)."""
    return r_t + discount_t * (probs_t * q_t).sum(dim=-1)


def double_q_learning(
    r_t: torch.Tensor, discount_t: torch.Tensor, q_t_value: torch.Tensor, q_t_selector: torch.Tensor
) -> torch.Tensor:
    """r + d * q_t_value[argmax_a q_t_selector[a]] (van Hasselt et al., 2016)."""
    a_star = q_t_selector.argmax(dim=-1, keepdim=True)
    return r_t + discount_t * q_t_value.gather(-1, a_star).squeeze(-1)


ESTIMATORS = ("q_learning", "sarsa", "expected_sarsa", "double_q")
#: estimators whose fixed point is the value of the behaviour policy, not Q*
ON_POLICY = ("sarsa",)


class Estimator:
    """Chooses the TD target and the window length; the config group ``estimator/``.

    Args:
        name: one of ``q_learning``, ``sarsa``, ``expected_sarsa``, ``double_q``.
        n_step: window length n >= 1 of the n-step return.
    """

    def __init__(self, *, name: str = "q_learning", n_step: int = 1) -> None:
        if name not in ESTIMATORS:
            raise ValueError(f"estimator.name={name!r} is not one of {ESTIMATORS}")
        if n_step < 1:
            raise ValueError(f"estimator.n_step must be >= 1, got {n_step}")
        self.name = name
        self.n_step = int(n_step)

    @property
    def needs_online_bootstrap(self) -> bool:
        """Double Q selects the bootstrap action with the online network."""
        return self.name == "double_q"

    @property
    def is_on_policy(self) -> bool:
        """Biased when learning from old data: SARSA, and any n-step > 1 return."""
        return self.name in ON_POLICY or self.n_step > 1

    def target(
        self,
        *,
        rewards: torch.Tensor,
        n_steps: torch.Tensor,
        terminated: torch.Tensor,
        gamma: float,
        q_t: torch.Tensor,
        q_t_online: torch.Tensor | None = None,
        a_t: torch.Tensor | None = None,
        probs_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The TD target (B,) from a window's rewards (B, n) and bootstrap Q-values (B, A)."""
        if rewards.shape[-1] == 1:
            # a one-step window always holds its one step (k = 1): the same numbers as below,
            # r_t = r * gamma^0 and discount_t = gamma^1 * (1 - terminated), in two cheap ops
            r_t = rewards.squeeze(-1)
            discount_t = (1.0 - terminated) * gamma
        else:
            r_t = n_step_return(rewards, gamma)
            discount_t = bootstrap_discount(n_steps, terminated, gamma)
        if self.name == "q_learning":
            return q_learning(r_t, discount_t, q_t)
        if self.name == "sarsa":
            assert a_t is not None, "sarsa needs the next action"
            return sarsa(r_t, discount_t, q_t, a_t)
        if self.name == "expected_sarsa":
            assert probs_t is not None, "expected_sarsa needs the policy's probabilities"
            return expected_sarsa(r_t, discount_t, q_t, probs_t)
        assert q_t_online is not None, "double_q needs the online network's Q-values"
        return double_q_learning(r_t, discount_t, q_t, q_t_online)
