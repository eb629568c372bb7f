"""TD targets: the pure functions and the estimator classes against hand-computed numbers.

Common numbers (gamma = 0.9):
    gamma^2 = 0.81, gamma^3 = 0.729
    rewards [1, 2, 3] -> 1 + 0.9 * 2 + 0.81 * 3 = 1 + 1.8 + 2.43 = 5.23
    rewards [1, 2, 0] -> 1 + 0.9 * 2            = 2.8
    bootstrap Q-values q_t = [2, 5, 3] -> max = 5
"""

from __future__ import annotations

import pytest
import torch

from rl_lightning.estimators import Estimator, TDInputs, window_return
from rl_lightning.estimators.core import (
    bootstrap_discount,
    double_q_learning,
    expected_sarsa,
    n_step_return,
    q_learning,
    sarsa,
)
from rl_lightning.estimators.double_q import DoubleQLearning
from rl_lightning.estimators.expected_sarsa import ExpectedSarsa
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.estimators.sarsa import Sarsa

GAMMA = 0.9


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), rtol=0, atol=1e-5
    )


# -- pure functions --------------------------------------------------------------------------


def test_n_step_return_discounts_each_reward() -> None:
    rewards = torch.tensor(
        [
            [1.0, 2.0, 3.0],  # 1 + 0.9*2 + 0.81*3 = 5.23
            [1.0, 2.0, 0.0],  # zero-padded after 2 steps: 1 + 1.8 = 2.8
            [0.0, 0.0, 1.0],  # 0.81
            [-1.0, -1.0, -1.0],  # -(1 + 0.9 + 0.81) = -2.71
        ]
    )
    close(n_step_return(rewards, GAMMA), [5.23, 2.8, 0.81, -2.71])


def test_n_step_return_of_one_step_is_the_reward() -> None:
    close(n_step_return(torch.tensor([[4.0], [-2.5]]), GAMMA), [4.0, -2.5])


def test_bootstrap_discount() -> None:
    n_steps = torch.tensor([1, 2, 3, 2, 1, 0])
    terminated = t(0, 0, 0, 1, 1, 0)
    # 0.9, 0.81, 0.729, terminated -> 0, terminated -> 0, 0.9^0 = 1
    close(bootstrap_discount(n_steps, terminated, GAMMA), [0.9, 0.81, 0.729, 0.0, 0.0, 1.0])


def test_q_learning_bootstraps_with_the_max() -> None:
    q_t = torch.tensor([[2.0, 5.0, 3.0], [2.0, 5.0, 3.0], [-1.0, -4.0, -2.0]])
    # 1 + 0.9 * 5 = 5.5; discount 0 (terminated) -> 1; 0.5 + 0.81 * (-1) = -0.31
    close(q_learning(t(1, 1, 0.5), t(0.9, 0.0, 0.81), q_t), [5.5, 1.0, -0.31])


def test_sarsa_bootstraps_with_the_next_action() -> None:
    q_t = torch.tensor([[2.0, 5.0, 3.0], [2.0, 5.0, 3.0], [2.0, 5.0, 3.0]])
    a_t = torch.tensor([2, 0, 1])
    # 1 + 0.9 * q[2]=3 -> 3.7; 1 + 0.9 * q[0]=2 -> 2.8; 1 + 0 * q[1] -> 1
    close(sarsa(t(1, 1, 1), t(0.9, 0.9, 0.0), q_t, a_t), [3.7, 2.8, 1.0])


def test_expected_sarsa_averages_over_the_policy() -> None:
    q_t = torch.tensor([[2.0, 5.0, 3.0], [2.0, 5.0, 3.0]])
    probs = torch.tensor([[0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    # E[q] = 0.2 + 4.0 + 0.3 = 4.5 -> 1 + 0.9 * 4.5 = 5.05
    # uniform: E[q] = 10 / 3 -> 1 + 0.9 * 10/3 = 4.0
    close(expected_sarsa(t(1, 1), t(0.9, 0.9), q_t, probs), [5.05, 4.0])


def test_expected_sarsa_with_a_greedy_policy_is_q_learning() -> None:
    q_t = torch.tensor([[2.0, 5.0, 3.0]])
    greedy = torch.tensor([[0.0, 1.0, 0.0]])
    close(expected_sarsa(t(1), t(0.9), q_t, greedy), [5.5])  # 1 + 0.9 * 5
    close(q_learning(t(1), t(0.9), q_t), [5.5])


def test_double_q_selects_with_one_net_and_evaluates_with_the_other() -> None:
    q_value = torch.tensor([[2.0, 5.0, 3.0], [2.0, 5.0, 3.0]])
    q_selector = torch.tensor([[10.0, 0.0, 1.0], [0.0, 1.0, 7.0]])
    # selector argmax 0 -> value 2 -> 1 + 0.9 * 2 = 2.8; argmax 2 -> value 3 -> 1 + 2.7 = 3.7
    close(double_q_learning(t(1, 1), t(0.9, 0.9), q_value, q_selector), [2.8, 3.7])
    # selecting with the value net itself is plain Q-learning: 1 + 0.9 * 5 = 5.5
    close(double_q_learning(t(1), t(0.9), q_value[:1], q_value[:1]), [5.5])


# -- the estimator classes on n-step windows -------------------------------------------------

Q_T = torch.tensor([[2.0, 5.0]])  # bootstrap Q-values of s_t; max = 5


def window_target(
    est: Estimator,
    *,
    rewards: torch.Tensor,
    n_steps: torch.Tensor,
    terminated: torch.Tensor,
    q_t: torch.Tensor,
    **extra: torch.Tensor,
) -> torch.Tensor:
    """What TDLoss does: (r_t, discount_t) of the window, then the estimator's target."""
    r_t, discount_t = window_return(rewards, n_steps, terminated, GAMMA)
    a_tm1 = torch.zeros(len(rewards), dtype=torch.int64)
    return est.target(TDInputs(r_t=r_t, discount_t=discount_t, q_t=q_t, a_tm1=a_tm1, **extra))


def test_window_return_one_step_is_bitwise_the_general_formula() -> None:
    rewards, terminated = torch.tensor([[1.5], [-2.0]]), t(0, 1)
    r_t, discount_t = window_return(rewards, torch.tensor([1, 1]), terminated, GAMMA)
    close(r_t, [1.5, -2.0])
    close(discount_t, [0.9, 0.0])


def test_one_step_terminated_does_not_bootstrap() -> None:
    y = window_target(
        QLearning(n_step=1),
        rewards=torch.tensor([[1.0]]),
        n_steps=torch.tensor([1]),
        terminated=t(1),
        q_t=Q_T,
    )
    close(y, [1.0])  # r only


def test_one_step_truncated_bootstraps() -> None:
    y = window_target(
        QLearning(n_step=1),
        rewards=torch.tensor([[1.0]]),
        n_steps=torch.tensor([1]),
        terminated=t(0),  # truncation is not termination: the episode goes on
        q_t=Q_T,
    )
    close(y, [5.5])  # 1 + 0.9 * max(2, 5)


def test_three_step_windows() -> None:
    y = window_target(
        QLearning(n_step=3),
        rewards=torch.tensor(
            [
                [1.0, 2.0, 3.0],  # full window, bootstraps with gamma^3
                [1.0, 2.0, 0.0],  # terminated after 2 steps (zero-padded)
                [1.0, 2.0, 0.0],  # truncated after 2 steps
            ]
        ),
        n_steps=torch.tensor([3, 2, 2]),
        terminated=t(0, 1, 0),
        q_t=Q_T.expand(3, 2),
    )
    # 5.23 + 0.729 * 5 = 8.875; 2.8 (no bootstrap); 2.8 + 0.81 * 5 = 6.85
    close(y, [8.875, 2.8, 6.85])


def test_each_class_computes_its_own_target() -> None:
    common = dict(
        rewards=torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, 3.0]]),
        n_steps=torch.tensor([2, 3]),
        terminated=t(0, 0),
        q_t=torch.tensor([[2.0, 5.0, 3.0], [2.0, 5.0, 3.0]]),
    )
    # r_t = [2.8, 5.23], discount_t = [0.81, 0.729]
    y = window_target(Sarsa(n_step=3), **common, a_t=torch.tensor([2, 0]))
    close(y, [2.8 + 0.81 * 3, 5.23 + 0.729 * 2])  # [5.23, 6.688]
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.5, 0.0, 0.5]])
    y = window_target(ExpectedSarsa(n_step=3), **common, probs_t=probs)
    close(y, [2.8 + 0.81 * 4.5, 5.23 + 0.729 * 2.5])  # [6.445, 7.0525]
    selector = torch.tensor([[0.0, 0.0, 9.0], [9.0, 0.0, 0.0]])
    y = window_target(DoubleQLearning(n_step=3), **common, q_t_online=selector)
    close(y, [2.8 + 0.81 * 3, 5.23 + 0.729 * 2])  # value of the online argmax
    y = window_target(QLearning(n_step=3), **common)
    close(y, [2.8 + 0.81 * 5, 5.23 + 0.729 * 5])  # [6.85, 8.875]


def test_each_class_declares_what_it_reads() -> None:
    needs = ("needs_next_action", "needs_probs_t", "needs_q_t_online", "needs_q_tm1_target")
    declared = {
        cls: {flag for flag in needs if getattr(cls, flag)}
        for cls in (QLearning, Sarsa, ExpectedSarsa, DoubleQLearning)
    }
    assert declared == {
        QLearning: set(),
        Sarsa: {"needs_next_action"},
        ExpectedSarsa: {"needs_probs_t"},
        DoubleQLearning: {"needs_q_t_online"},
    }
    # an input that was not declared is not handed over: reading it fails loudly
    with pytest.raises(AssertionError, match="next action"):
        window_target(
            Sarsa(), rewards=torch.ones(1, 1), n_steps=torch.ones(1), terminated=t(0), q_t=Q_T
        )


def test_on_policy_and_how_the_warning_names_it() -> None:
    assert not QLearning(n_step=1).is_on_policy
    assert QLearning(n_step=3).is_on_policy
    assert QLearning(n_step=3).describe() == "a 3-step return"
    assert Sarsa(n_step=1).is_on_policy and Sarsa(n_step=1).describe() == "SARSA"
    assert Sarsa(n_step=3).describe() == "SARSA"
    assert not ExpectedSarsa(n_step=1).is_on_policy
    assert not DoubleQLearning(n_step=1).is_on_policy
    assert DoubleQLearning(n_step=5).describe() == "a 5-step return"


def test_validation() -> None:
    with pytest.raises(ValueError, match="n_step"):
        QLearning(n_step=0)
    with pytest.raises(TypeError):
        Estimator()  # type: ignore[abstract]  # the interface has no target of its own
