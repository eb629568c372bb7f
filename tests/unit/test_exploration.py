"""The schedules, EpsilonGreedy, Boltzmann and the Actor against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rl_lightning.exploration import (
    Actor,
    Boltzmann,
    EpsilonGreedy,
    ExponentialSchedule,
    LinearSchedule,
)


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


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0, 1.0),  # start
        (500, 0.1 + 0.9 / 2**0.5),  # half a half-life: 0.1 + 0.9 * 0.5 ** 0.5 = 0.736396...
        (1000, 0.55),  # one half-life: 0.1 + 0.9 * 0.5
        (2000, 0.325),  # two: 0.1 + 0.9 * 0.25
        (3000, 0.2125),  # three: 0.1 + 0.9 * 0.125
        (100_000, 0.1),  # 0.9 * 0.5 ** 100 ~ 7e-31: the end
    ],
)
def test_exponential_schedule(t: int, expected: float) -> None:
    schedule = ExponentialSchedule(start=1.0, end=0.1, half_life_env_steps=1000)
    assert schedule(t) == pytest.approx(expected, rel=0, abs=1e-12)


def test_exponential_schedule_rising_and_validation() -> None:
    schedule = ExponentialSchedule(start=0.0, end=2.0, half_life_env_steps=10)
    # 2 + (0 - 2) * 0.5 ** (t / 10): 0, 1, 1.5 -- the gap to the end halves every 10 steps
    assert [schedule(t) for t in (0, 10, 20)] == [0.0, 1.0, 1.5]
    for bad in (0, -5):
        with pytest.raises(ValueError, match="half_life_env_steps"):
            ExponentialSchedule(start=1.0, end=0.1, half_life_env_steps=bad)


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


class GivenUniforms:
    """A generator stub: ``random(size)`` returns the given uniforms in that shape."""

    def __init__(self, uniforms: list[float]) -> None:
        self.uniforms = np.asarray(uniforms, dtype=np.float64)
        self.sizes: list[object] = []

    def random(self, size: tuple[int, int]) -> np.ndarray:
        self.sizes.append(size)
        return self.uniforms.reshape(size)


# Q = T * ln([1, 2, 5]) at T = 0.5: pi = [1, 2, 5] / 8 = [0.125, 0.25, 0.625], so the CDF is
# [0.125, 0.375, 1]; inverse CDF: the action is the first a with u <= CDF(a)
T = 0.5
Q_125 = [0.0, T * float(np.log(2.0)), T * float(np.log(5.0))]
# the largest double below 1, the largest value np.random.Generator.random returns
U_MAX = 1.0 - 2.0**-53


def boltzmann(temperature: float = T) -> Boltzmann:
    return Boltzmann(
        schedule=LinearSchedule(start=temperature, end=temperature, duration_env_steps=1)
    )


def test_boltzmann_probs_by_hand() -> None:
    probs = boltzmann().probs(torch.tensor([Q_125]), env_step=0)
    torch.testing.assert_close(probs, torch.tensor([[0.125, 0.25, 0.625]]), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("u", "action"),
    [
        (0.0, 0),
        (0.1, 0),
        (0.125 - 1e-6, 0),  # just below CDF(0) = 0.125
        (0.125 + 1e-6, 1),  # just above
        (0.3, 1),
        (0.375 - 1e-6, 1),  # just below CDF(1) = 0.375
        (0.375 + 1e-6, 2),
        (0.9, 2),
        (U_MAX, 2),  # the top of [0, 1): the last action
    ],
)
def test_boltzmann_select_is_the_inverse_cdf_of_the_uniform(u: float, action: int) -> None:
    rng = GivenUniforms([u])
    actions = boltzmann().select(torch.tensor([Q_125]), 0, rng)  # type: ignore[arg-type]
    assert actions.dtype == np.int64
    assert actions.tolist() == [action]
    assert rng.sizes == [(1, 1)]  # one uniform per row


def test_boltzmann_select_one_uniform_per_row_and_the_temperature_of_the_step() -> None:
    # rows: the 1:2:5 case; Q = [1, 1, 1] (uniform: CDF 1/3, 2/3, 1); Q = [0, 0, -1e4], whose
    # last action has probability exp(-2e4) = 0 in float64 (CDF 0.5, 1, 1)
    q = torch.tensor([Q_125, [1.0, 1.0, 1.0], [0.0, 0.0, -1e4], Q_125])
    rng = GivenUniforms([0.2, 0.7, U_MAX, 0.05])
    # T(t) = 1 -> 0.5 over 100 env steps: at t = 100 the temperature is 0.5
    policy = Boltzmann(schedule=LinearSchedule(start=1.0, end=T, duration_env_steps=100))
    actions = policy.select(q, 100, rng)  # type: ignore[arg-type]
    # 0.2 in (0.125, 0.375] -> 1; 0.7 in (2/3, 1] -> 2; U_MAX < 1 = CDF(1) -> 1, never the
    # zero-probability last action; 0.05 <= 0.125 -> 0
    assert actions.tolist() == [1, 2, 1, 0]
    assert rng.sizes == [(4, 1)]
    # at t = 0 (T = 1) the first row's pi is [1, 2 ** 0.5, 5 ** 0.5] / 4.650 = [0.215, 0.304,
    # 0.481]: u = 0.2 now picks action 0
    assert policy.select(q[:1], 0, GivenUniforms([0.2])).tolist() == [0]  # type: ignore[arg-type]


def test_boltzmann_select_with_a_seeded_generator() -> None:
    # np.random.default_rng(0).random((6, 1)) = [0.6370, 0.2698, 0.0410, 0.0165, 0.8133, 0.9128]
    rng = np.random.default_rng(0)
    actions = boltzmann().select(torch.tensor([Q_125]).expand(6, 3), 0, rng)
    # against the CDF [0.125, 0.375, 1]: 2, 1, 0, 0, 2, 2
    assert actions.tolist() == [2, 1, 0, 0, 2, 2]
    reference = np.random.default_rng(0)
    reference.random((6, 1))
    assert rng.random() == reference.random()  # it drew exactly those six uniforms


def test_boltzmann_near_zero_temperature_is_greedy() -> None:
    # T is floored at 1e-8: Q / T separates the actions by 1e7, pi is one-hot on the argmax
    policy = boltzmann(0.0)
    q = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, -2.0]])
    torch.testing.assert_close(
        policy.probs(q, 0), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), rtol=0, atol=0
    )
    assert policy.select(q, 0, GivenUniforms([U_MAX, 0.0])).tolist() == [1, 0]  # type: ignore[arg-type]
