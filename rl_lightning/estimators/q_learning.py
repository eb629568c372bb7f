"""Q-learning: target = r_t + discount_t * max_a q_t[a] (Watkins, 1989; DQN, Mnih et al., 2015)."""

from __future__ import annotations

import torch

from rl_lightning.estimators.core import Estimator, TDInputs, one_hot, q_learning


class QLearning(Estimator):
    """Bootstraps with the greedy value of s_t: its fixed point is Q* (off-policy at n = 1)."""

    label = "Q-learning"

    def target(self, x: TDInputs) -> torch.Tensor:
        return q_learning(x.r_t, x.discount_t, x.q_t)

    def bootstrap_policy(self, x: TDInputs) -> torch.Tensor:
        """The greedy action of the bootstrap network at s_t (C51's)."""
        return one_hot(x.q_t.argmax(dim=-1), x.q_t)
