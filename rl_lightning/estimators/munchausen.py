"""Munchausen DQN (Vieillard, Pietquin & Geist, "Munchausen Reinforcement Learning", NeurIPS 2020).

DQN's target with two changes, both read off the target network's softmax policy
pi = softmax(q_target / tau):

    y = r_t + alpha * clip(tau * log pi(a_tm1 | s_tm1), l0, 0)                 (Munchausen bonus)
            + discount_t * sum_a pi(a | s_t) (q_t[a] - tau * log pi(a | s_t))  (soft value of s_t)

* the soft value sum_a pi(a|s) (q(s, a) - tau log pi(a|s)) = tau * logsumexp(q(s, .) / tau) is the
  maximum-entropy ("soft") version of max_a q(s, a), to which it tends as tau -> 0;
* the bonus adds the scaled log-probability of the action actually taken, alpha * tau *
  log pi(a_tm1|s_tm1) <= 0: the agent "pulls itself up by its own bootstraps". The paper shows
  that this regularises each policy towards the previous one (KL, weight alpha * tau) on top of
  an entropy bonus of weight (1 - alpha) * tau, and widens the action gap; without the clip the
  operator's fixed point has the policy of the entropy-regularised optimum of temperature
  (1 - alpha) * tau (checked on the chain in ``tests/integration/test_munchausen_chain.py``).
  tau * log pi -> -inf for unlikely actions, so the bonus is clipped to [l0, 0].

The clip applies to tau * log pi, as in the paper's M-DQN target, [tau ln pi(a_t|s_t)]_{l0}^0 in its time indices,
and the authors' code (``google-research/munchausen_rl/agents/m_dqn.py``: ``tau_log_pi_a``
clipped at ``clip_value_min``, and the same in rlax-style ``munchausen_q_learning``); the
defaults here are the paper's tau = 0.03, alpha = 0.9, l0 = -1 (the authors' agent class
defaults to clip_value_min = -10). tau * log pi is computed stably as tau * log_softmax(q / tau).

Everything comes from the target network (the online one without a target network): q_t at the
bootstrap state s_t, and its values at the transition's start state s_tm1 (``needs_q_tm1_target``),
one extra forward pass per update. Only one-step windows: an n-step version would need the bonus
of every step in the window, i.e. log pi at the intermediate states, which a window does not
hold.
"""

from __future__ import annotations

import torch

from rl_lightning.estimators.core import Estimator, TDInputs


def scaled_log_softmax(q: torch.Tensor, tau: float) -> torch.Tensor:
    """tau * log pi(.|s) with pi = softmax(q / tau): (B, A) -> (B, A), all <= 0."""
    return tau * torch.log_softmax(q / tau, dim=-1)


def munchausen_q_learning(
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t: torch.Tensor,
    q_tm1_target: torch.Tensor,
    a_tm1: torch.Tensor,
    *,
    tau: float,
    alpha: float,
    clip_min: float,
) -> torch.Tensor:
    """The M-DQN target (B,): r_t + alpha clip(tau log pi(a_tm1|s_tm1), clip_min, 0) + discount_t
    sum_a pi(a|s_t) (q_t[a] - tau log pi(a|s_t)), pi = softmax(q / tau) of the target network.

    r_t, discount_t, a_tm1: (B,); q_t (values at s_t), q_tm1_target (values at s_tm1): (B, A).
    """
    tau_log_pi_tm1 = scaled_log_softmax(q_tm1_target, tau)
    bonus = tau_log_pi_tm1.gather(-1, a_tm1.long().unsqueeze(-1)).squeeze(-1)
    bonus = bonus.clamp(min=clip_min, max=0.0)
    pi_t = torch.softmax(q_t / tau, dim=-1)
    soft_value_t = (pi_t * (q_t - scaled_log_softmax(q_t, tau))).sum(dim=-1)
    return r_t + alpha * bonus + discount_t * soft_value_t


class MunchausenQLearning(Estimator):
    """M-DQN's target; the config group option ``estimator=munchausen``.

    Args:
        n_step: window length; must be 1 (see the module docstring).
        tau: entropy temperature of pi = softmax(q / tau), in reward units (> 0).
        alpha: weight of the Munchausen bonus in [0, 1] (0: soft Q-learning).
        clip_min: l0 < 0, the lower clip of tau * log pi(a_tm1|s_tm1).
    """

    needs_q_tm1_target = True
    label = "Munchausen DQN"

    def __init__(
        self, *, n_step: int = 1, tau: float = 0.03, alpha: float = 0.9, clip_min: float = -1.0
    ) -> None:
        super().__init__(n_step=n_step)
        if self.n_step != 1:
            raise ValueError(
                f"estimator.n_step={n_step}: Munchausen DQN needs one-step windows (the bonus "
                "of every step in an n-step window needs log pi at states a window does not hold)"
            )
        if tau <= 0:
            raise ValueError(f"estimator.tau must be > 0, got {tau}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"estimator.alpha must be in [0, 1], got {alpha}")
        if clip_min >= 0:
            raise ValueError(f"estimator.clip_min must be < 0, got {clip_min}")
        self.tau, self.alpha, self.clip_min = float(tau), float(alpha), float(clip_min)

    def target(self, x: TDInputs) -> torch.Tensor:
        assert x.q_tm1_target is not None, "Munchausen DQN needs the target values at s_tm1"
        return munchausen_q_learning(
            x.r_t,
            x.discount_t,
            x.q_t,
            x.q_tm1_target,
            x.a_tm1,
            tau=self.tau,
            alpha=self.alpha,
            clip_min=self.clip_min,
        )

    def __repr__(self) -> str:
        return f"MunchausenQLearning(tau={self.tau}, alpha={self.alpha}, clip_min={self.clip_min})"
