"""LinearSchedule, EpsilonGreedy and the Actor against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rl_lightning.exploration import Actor, EpsilonGreedy, LinearSchedule


def constant(eps: float) -> EpsilonGreedy:
    return EpsilonGreedy(schedule=LinearSchedule(start=eps, end=eps, duration_env_steps=1))


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0, 1.0),
        (250, 0.7625),  # 1 - 0.95 * 0.25
        (500, 0.525),  # 1 - 0.95 * 0.5
        (1000, 0.05),  # the end of the decay
        (5000, 0.05),  # constant afterwards
    ],
)
def test_linear_schedule(t: int, expected: float) -> None:
    schedule = LinearSchedule(start=1.0, end=0.05, duration_env_steps=1000)
    assert schedule(t) == pytest.approx(expected, abs=1e-12)


def test_linear_schedule_with_a_late_begin() -> None:
    schedule = LinearSchedule(start=1.0, end=0.05, duration_env_steps=1000, begin_env_steps=100)
    assert schedule(0) == 1.0  # before the begin: start
    assert schedule(100) == 1.0
    assert schedule(600) == pytest.approx(0.525)  # 500 steps into the decay
    assert schedule(1100) == pytest.approx(0.05)
    assert schedule(10_000) == pytest.approx(0.05)


def test_linear_schedule_without_duration_is_a_step() -> None:
    schedule = LinearSchedule(start=1.0, end=0.1, duration_env_steps=0, begin_env_steps=10)
    assert (schedule(9), schedule(10), schedule(11)) == (1.0, 0.1, 0.1)
    with pytest.raises(ValueError, match="duration_env_steps"):
        LinearSchedule(start=1.0, end=0.1, duration_env_steps=-1)


def test_epsilon_greedy_probs() -> None:
    q = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, -2.0]])
    probs = constant(0.3).probs(q, env_step=0)
    # eps / A = 0.1 for every action, plus 1 - eps = 0.7 on the argmax
    expected = torch.tensor([[0.1, 0.8, 0.1], [0.8, 0.1, 0.1]])
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2), rtol=0, atol=1e-6)


def test_epsilon_greedy_probs_follow_the_schedule() -> None:
    policy = EpsilonGreedy(schedule=LinearSchedule(start=1.0, end=0.05, duration_env_steps=1000))
    q = torch.tensor([[0.0, 1.0]])
    # t=500: eps = 0.525 -> [0.2625, 0.2625 + 0.475] = [0.2625, 0.7375]
    torch.testing.assert_close(
        policy.probs(q, 500), torch.tensor([[0.2625, 0.7375]]), rtol=0, atol=1e-6
    )
    # t=0: eps = 1 -> uniform
    torch.testing.assert_close(policy.probs(q, 0), torch.tensor([[0.5, 0.5]]), rtol=0, atol=1e-6)
    assert policy.metrics(500) == {"rollout/epsilon": pytest.approx(0.525)}


def test_greedy_select_is_argmax() -> None:
    q = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, -2.0], [5.0, 6.0, 7.0]])
    actions = constant(0.0).select(q, env_step=0, rng=np.random.default_rng(0))
    assert actions.dtype == np.int64
    np.testing.assert_array_equal(actions, [1, 0, 2])


def test_uniform_select_is_uniform() -> None:
    rng = np.random.default_rng(0)
    q = torch.tensor([[0.0, 10.0, 0.0]]).expand(30_000, 3)  # action 1 is greedy
    actions = constant(1.0).select(q, env_step=0, rng=rng)
    freq = np.bincount(actions, minlength=3) / actions.size
    # binomial std of a frequency: sqrt(1/3 * 2/3 / 30000) = 0.0027; tolerance 0.015 ~ 5.5 std
    np.testing.assert_allclose(freq, [1 / 3, 1 / 3, 1 / 3], atol=0.015)


def test_select_matches_probs() -> None:
    rng = np.random.default_rng(1)
    q = torch.tensor([[0.0, 10.0, 0.0, 0.0]]).expand(40_000, 4)
    policy = constant(0.4)
    actions = policy.select(q, env_step=0, rng=rng)
    freq = np.bincount(actions, minlength=4) / actions.size
    # pi = [0.1, 0.1 + 0.6, 0.1, 0.1]; std <= sqrt(0.25 / 40000) = 0.0025, tolerance 0.0125
    np.testing.assert_allclose(freq, policy.probs(q[:1], 0)[0].numpy(), atol=0.0125)
    np.testing.assert_allclose(freq, [0.1, 0.7, 0.1, 0.1], atol=0.0125)


class DropoutNet(nn.Module):
    """Q = [0, 1] in eval mode; in train mode dropout zeroes the favourite half the time."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.dropout = nn.Dropout(p=0.5)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        q = torch.tensor([0.0, 1.0]).expand(obs.shape[0], 2) * self.scale
        return self.dropout(q) - torch.tensor([0.0, 0.5])  # train: [0, -0.5] or [0, 1.5]


def test_actor_acts_greedily_in_eval_mode_and_restores_the_mode() -> None:
    net = DropoutNet().train()
    actor = Actor(net, constant(0.0), seed=0)
    actions = actor(np.zeros((1000, 3), dtype=np.float32), env_step=0)
    # eval mode: Q = [0, 0.5] for every lane -> action 1 always (train mode would give ~50% 0)
    np.testing.assert_array_equal(actions, np.ones(1000))
    assert net.training
