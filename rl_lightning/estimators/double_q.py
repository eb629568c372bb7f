"""Double Q-learning: target = r_t + discount_t * q_t[argmax_a q_t_online[a]] (van Hasselt et al.,
2016): the online network selects the bootstrap action, the target network values it."""

from __future__ import annotations

import torch

from rl_lightning.estimators.core import Estimator, TDInputs, double_q_learning, one_hot


class DoubleQLearning(Estimator):
    """Decouples selection from evaluation, which reduces the max operator's overestimation.
    Without a target network both are the online network: plain Q-learning."""

    needs_q_t_online = True
    label = "Double Q-learning"

    def target(self, x: TDInputs) -> torch.Tensor:
        assert x.q_t_online is not None, "Double Q needs the online network's values at s_t"
        return double_q_learning(x.r_t, x.discount_t, x.q_t, x.q_t_online)

    def bootstrap_policy(self, x: TDInputs) -> torch.Tensor:
        """The online network's greedy action at s_t (Rainbow's distributional Double Q)."""
        assert x.q_t_online is not None, "Double Q needs the online network's values at s_t"
        return one_hot(x.q_t_online.argmax(dim=-1), x.q_t)
