"""TD targets: the pure functions and ``Estimator.target`` against hand-computed numbers.

Common numbers (gamma = 0.9):
    gamma^2 = 0.81, gamma^3 = 0.729
    rewards [1, 2, 3] -> 1 + 0.9 * 2 + 0.81 * 3 = 1 + 1.8 + 2.43 = 5.23
    rewards [1, 2, 0] -> 1 + 0.9 * 2            = 2.8
    bootstrap Q-values q_t = [2, 5, 3] -> max = 5
"""

from __future__ import annotations

import pytest
import torch

from rl_lightning.estimators import (
    Estimator,
    bootstrap_discount,
    double_q_learning,
    expected_sarsa,
    n_step_return,
    q_learning,
    sarsa,
)

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


# -- Estimator.target ------------------------------------------------------------------------

Q_T = torch.tensor([[2.0, 5.0]])  # bootstrap Q-values of s_{t+1}; max = 5


def test_one_step_terminated_does_not_bootstrap() -> None:
    est = Estimator(name="q_learning", n_step=1)
    y = est.target(
        rewards=torch.tensor([[1.0]]),
        n_steps=torch.tensor([1]),
        terminated=t(1),
        gamma=GAMMA,
        q_t=Q_T,
    )
    close(y, [1.0])  # r only


def test_one_step_truncated_bootstraps() -> None:
    est = Estimator(name="q_learning", n_step=1)
    y = est.target(
        rewards=torch.tensor([[1.0]]),
        n_steps=torch.tensor([1]),
        terminated=t(0),  # truncation is not termination: the episode goes on
        gamma=GAMMA,
        q_t=Q_T,
    )
    close(y, [5.5])  # 1 + 0.9 * max(2, 5)


def test_three_step_windows() -> None:
    est = Estimator(name="q_learning", n_step=3)
    y = est.target(
        rewards=torch.tensor(
            [
                [1.0, 2.0, 3.0],  # full window, bootstraps with gamma^3
                [1.0, 2.0, 0.0],  # terminated after 2 steps (zero-padded)
                [1.0, 2.0, 0.0],  # truncated after 2 steps
            ]
        ),
        n_steps=torch.tensor([3, 2, 2]),
        terminated=t(0, 1, 0),
        gamma=GAMMA,
        q_t=Q_T.expand(3, 2),
    )
    # 5.23 + 0.729 * 5 = 8.875; 2.8 (no bootstrap); 2.8 + 0.81 * 5 = 6.85
    close(y, [8.875, 2.8, 6.85])


def test_estimator_dispatches_to_sarsa_expected_sarsa_and_double_q() -> None:
    common = dict(
        rewards=torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, 3.0]]),
        n_steps=torch.tensor([2, 3]),
        terminated=t(0, 0),
        gamma=GAMMA,
        q_t=torch.tensor([[2.0, 5.0, 3.0], [2.0, 5.0, 3.0]]),
    )
    # r_t = [2.8, 5.23], discount_t = [0.81, 0.729]
    y = Estimator(name="sarsa", n_step=3).target(**common, a_t=torch.tensor([2, 0]))
    close(y, [2.8 + 0.81 * 3, 5.23 + 0.729 * 2])  # [5.23, 6.688]
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.5, 0.0, 0.5]])
    y = Estimator(name="expected_sarsa", n_step=3).target(**common, probs_t=probs)
    close(y, [2.8 + 0.81 * 4.5, 5.23 + 0.729 * 2.5])  # [6.445, 7.0525]
    selector = torch.tensor([[0.0, 0.0, 9.0], [9.0, 0.0, 0.0]])
    y = Estimator(name="double_q", n_step=3).target(**common, q_t_online=selector)
    close(y, [2.8 + 0.81 * 3, 5.23 + 0.729 * 2])  # value of the online argmax
    y = Estimator(name="q_learning", n_step=3).target(**common)
    close(y, [2.8 + 0.81 * 5, 5.23 + 0.729 * 5])  # [6.85, 8.875]


def test_estimator_properties_and_validation() -> None:
    assert Estimator(name="double_q").needs_online_bootstrap
    assert not Estimator(name="q_learning").needs_online_bootstrap
    assert not Estimator(name="q_learning", n_step=1).is_on_policy
    assert Estimator(name="q_learning", n_step=3).is_on_policy
    assert Estimator(name="sarsa", n_step=1).is_on_policy
    assert not Estimator(name="expected_sarsa", n_step=1).is_on_policy
    with pytest.raises(ValueError, match="estimator.name"):
        Estimator(name="td_lambda")
    with pytest.raises(ValueError, match="n_step"):
        Estimator(name="q_learning", n_step=0)
