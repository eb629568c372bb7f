"""Munchausen DQN's target against hand-computed numbers (2 actions, known log-probabilities).

tau = 0.5, alpha = 0.8, gamma = 0.9, r = 1. Q-values that differ by tau ln 3 give
pi = softmax(q / tau) = (1/4, 3/4), so

    tau log pi = 0.5 (ln 1/4, ln 3/4) = (-0.693147, -0.143841)

and, for any a, q(a) - tau log pi(a) = tau logsumexp(q / tau): the soft value of
q_t = (1, 1 + 0.5 ln 3) is 0.5 ln(e^2 + 3 e^2) = 1 + 0.5 ln 4 = 1.693147.
"""

from __future__ import annotations

import math

import pytest
import torch
from q_doubles import LookupQ
from torch import nn

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.estimators import TDInputs
from rl_lightning.estimators.munchausen import (
    MunchausenQLearning,
    munchausen_q_learning,
    scaled_log_softmax,
)
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.losses import TDLoss

LN3 = math.log(3.0)
TAU, ALPHA = 0.5, 0.8
SOFT_V = 1.0 + 0.5 * math.log(4.0)  # 1.693147


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), rtol=0, atol=1e-5
    )


def test_scaled_log_probabilities_by_hand() -> None:
    tau_log_pi = scaled_log_softmax(torch.tensor([[0.0, 0.5 * LN3]]), TAU)
    close(tau_log_pi[0], [0.5 * math.log(0.25), 0.5 * math.log(0.75)])  # -0.693147, -0.143841


def test_target_by_hand_with_and_without_clipping() -> None:
    q_tm1_target = torch.tensor(
        [
            [0.0, 0.5 * LN3],  # pi = (1/4, 3/4)
            [0.0, 0.5 * LN3],
            [0.0, 2.0],  # q / tau = (0, 4): tau log pi(0) = -0.5 ln(1 + e^4) = -2.009075
            [0.0, 2.0],  # tau log pi(1) = -0.5 ln(1 + e^-4) = -0.009075
        ]
    )
    a_tm1 = torch.tensor([0, 1, 0, 1])
    q_t = torch.tensor([[1.0, 1.0 + 0.5 * LN3]]).expand(4, 2)  # soft value 1.693147
    discount_t = torch.tensor([0.9, 0.9, 0.9, 0.0])  # the last one terminated
    y = munchausen_q_learning(
        torch.ones(4), discount_t, q_t, q_tm1_target, a_tm1, tau=TAU, alpha=ALPHA, clip_min=-1.0
    )
    close(
        y,
        [
            1 + 0.8 * -0.693147 + 0.9 * SOFT_V,  # 1 - 0.554518 + 1.523832 = 1.969315
            1 + 0.8 * -0.143841 + 0.9 * SOFT_V,  # 1 - 0.115073 + 1.523832 = 2.408759
            1 + 0.8 * -1.0 + 0.9 * SOFT_V,  # -2.009075 clipped to l0 = -1: 1.723832
            1 + 0.8 * -0.009075,  # no bootstrap after termination: 0.992740
        ],
    )
    # the clip l0 only bites below it: with l0 = -3 the third bonus is -2.009075 itself
    y = munchausen_q_learning(
        torch.ones(4), discount_t, q_t, q_tm1_target, a_tm1, tau=TAU, alpha=ALPHA, clip_min=-3.0
    )
    close(y[2:3], [1 + 0.8 * -2.009075 + 0.9 * SOFT_V])  # 0.916572


def test_limits_alpha_zero_is_soft_q_learning_and_small_tau_is_q_learning() -> None:
    g = torch.Generator().manual_seed(0)
    q_t, q_tm1 = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    r_t, discount_t = torch.randn(16, generator=g), torch.full((16,), 0.9)
    a_tm1 = torch.randint(3, (16,), generator=g)
    soft = munchausen_q_learning(
        r_t, discount_t, q_t, q_tm1, a_tm1, tau=TAU, alpha=0.0, clip_min=-1.0
    )
    torch.testing.assert_close(soft, r_t + 0.9 * TAU * torch.logsumexp(q_t / TAU, dim=-1))
    # tau -> 0: the soft value tends to the max, and the bonus of the greedy action to 0
    greedy = q_tm1.argmax(dim=1)
    hard = munchausen_q_learning(
        r_t, discount_t, q_t, q_tm1, greedy, tau=1e-4, alpha=0.9, clip_min=-1.0
    )
    q_learning = QLearning().target(TDInputs(r_t, discount_t, q_t, greedy))
    torch.testing.assert_close(hard, q_learning, rtol=0, atol=1e-3)


def test_the_loss_reads_the_target_network_at_both_states() -> None:
    # target table: state 0 = the start state (pi = 1/4, 3/4), state 1 = the bootstrap state
    target_table = torch.tensor([[0.0, 0.5 * LN3], [1.0, 1.0 + 0.5 * LN3]])
    loss = TDLoss(
        q_network=LookupQ(torch.zeros(2, 2)),  # the online table is never read for the target
        estimator=MunchausenQLearning(tau=TAU, alpha=ALPHA, clip_min=-1.0),
        loss=nn.MSELoss(),
        gamma=0.9,
        use_target_network=True,
    )
    assert loss.target_network is not None
    with torch.no_grad():
        loss.target_network.table.copy_(target_table)
    batch = TransitionBatch(
        obs=torch.zeros(2, 1),
        actions=torch.tensor([0, 1]),
        rewards=torch.ones(2, 1),
        n_steps=torch.ones(2, dtype=torch.int64),
        terminated=torch.zeros(2),
        next_obs=torch.ones(2, 1),
        next_actions=torch.zeros(2, dtype=torch.int64),
        env_steps=0,
    )
    close(loss.td_target(batch), [1.969315, 2.408759])


def test_construction() -> None:
    est = MunchausenQLearning()
    assert (est.tau, est.alpha, est.clip_min, est.n_step) == (0.03, 0.9, -1.0, 1)  # the paper's
    assert est.needs_q_tm1_target and not est.is_on_policy
    for bad, match in (
        ({"n_step": 3}, "n_step"),
        ({"tau": 0.0}, "tau"),
        ({"alpha": 1.5}, "alpha"),
        ({"clip_min": 0.0}, "clip_min"),
    ):
        with pytest.raises(ValueError, match=match):
            MunchausenQLearning(**bad)
