"""Expected SARSA: target = r_t + discount_t * sum_a pi(a|s_t) q_t[a] (van Seijen et al., 2009)."""

from __future__ import annotations

import torch

from rl_lightning.estimators.core import Estimator, TDInputs, expected_sarsa


class ExpectedSarsa(Estimator):
    """Averages q_t over the behaviour policy's exact probabilities at s_t (the exploration
    acting on the online network's Q-values): the next action's noise averages out, so it is
    fine with replay at n = 1 (its fixed point is the value of the current behaviour policy)."""

    needs_probs_t = True
    label = "Expected SARSA"

    def target(self, x: TDInputs) -> torch.Tensor:
        assert x.probs_t is not None, "Expected SARSA needs the policy's probabilities"
        return expected_sarsa(x.r_t, x.discount_t, x.q_t, x.probs_t)

    def bootstrap_policy(self, x: TDInputs) -> torch.Tensor:
        """The behaviour policy's probabilities at s_t."""
        assert x.probs_t is not None, "Expected SARSA needs the policy's probabilities"
        return x.probs_t
