"""SARSA: target = r_t + discount_t * q_t[a_t], a_t the action the behaviour policy took in s_t."""

from __future__ import annotations

import torch

from rl_lightning.estimators.core import Estimator, TDInputs, one_hot, sarsa


class Sarsa(Estimator):
    """Bootstraps with the behaviour policy's own next action: learns Q of the behaviour policy
    (on-policy), so data from older policies biases it."""

    needs_next_action = True
    learns_behaviour_value = True
    label = "SARSA"

    def target(self, x: TDInputs) -> torch.Tensor:
        assert x.a_t is not None, "SARSA needs the next action a_t"
        return sarsa(x.r_t, x.discount_t, x.q_t, x.a_t)

    def bootstrap_policy(self, x: TDInputs) -> torch.Tensor:
        """The action the behaviour policy took at s_t."""
        assert x.a_t is not None, "SARSA needs the next action a_t"
        return one_hot(x.a_t, x.q_t)
