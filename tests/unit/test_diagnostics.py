"""Learning diagnostics, numbers computed by hand: the discounted return-to-go (terminated and
truncated ends), V(s_0) and the overestimation of a greedy evaluation, the value bound, the
value-bound watchdog, and the per-update statistics train/grad_norm and train/q_max."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from rl_lightning.greedy import counted_states, overestimation, play_greedy, returns_to_go
from rl_lightning.module import clip_grad_norm, grad_norm
from rl_lightning.train_stats import TrainingDiverged, TrainStats, ValueWatchdog, value_bound


def test_returns_to_go_of_a_terminated_episode() -> None:
    # r_1, r_2, r_3 = 1, 2, 3 and gamma 0.5: G_2 = 3, G_1 = 2 + 0.5 * 3 = 3.5,
    # G_0 = 1 + 0.5 * 3.5 = 2.75; the zero after the end adds nothing
    g = returns_to_go(np.array([[1.0], [2.0], [3.0], [0.0]]), 0.5)
    assert g[:, 0].tolist() == [2.75, 3.5, 3.0, 0.0]


def test_counted_states_terminated_all_truncated_only_where_the_tail_is_under_one_percent() -> None:
    assert counted_states(3, 0.5, truncated=False).tolist() == [True, True, True]
    # gamma 0.5: gamma^(T - t) <= 0.01 <=> T - t >= log(0.01) / log(0.5) = 6.64, i.e. >= 7;
    # T = 10: t = 0..3 count (0.5^7 = 0.0078), t = 4 does not (0.5^6 = 0.0156)
    assert counted_states(10, 0.5, truncated=True).tolist() == [True] * 4 + [False] * 6
    assert not counted_states(500, 1.0, truncated=True).any()  # gamma 1: the tail never fades
    # gamma 0.99 and CartPole's 500 steps: T - t >= 458.2, the first 42 states
    assert counted_states(500, 0.99, truncated=True).sum() == 42


def test_overestimation_pools_the_counted_states() -> None:
    # lane 0 terminated after 3 rewards of 1 (gamma 0.5): G = 1.75, 1.5, 1; V = 2 everywhere:
    # V - G = 0.25, 0.5, 1 -> mean 7/12. Lane 1 truncated after 3 steps: no state counts.
    values = np.full((3, 2), 2.0)
    rewards = np.ones((3, 2))
    mean, n = overestimation(values, rewards, np.array([3, 3]), np.array([False, True]), 0.5)
    assert n == 3 and mean == pytest.approx(7 / 12)
    mean, n = overestimation(values, rewards, np.array([3]), np.array([True]), 0.5)
    assert n == 0 and math.isnan(mean)


class ConstantQ(nn.Module):
    """Q(s, .) = (2, 1) for every state: V(s) = 2, the greedy action 0."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([2.0, 1.0]))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(obs.shape[0], 2)


class CountingEnv:
    """A vector env whose episodes give reward 1 per step and end after ``length`` steps,
    by termination or by truncation."""

    def __init__(self, num_envs: int, length: int, truncate: bool) -> None:
        self.num_envs, self.length, self.truncate = num_envs, length, truncate
        self.t = 0

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        self.t = 0
        return np.zeros((self.num_envs, 1), dtype=np.float32), {}

    def step(self, actions: np.ndarray):
        self.t += 1
        end = np.full(self.num_envs, self.t >= self.length)
        obs = np.full((self.num_envs, 1), self.t, dtype=np.float32)
        never = np.zeros(self.num_envs, dtype=bool)
        terminated, truncated = (never, end) if self.truncate else (end, never)
        return obs, np.ones(self.num_envs), terminated, truncated, {}


def test_play_greedy_measures_v_initial_and_overestimation_by_hand() -> None:
    q = ConstantQ()
    result = play_greedy(q, CountingEnv(2, 3, truncate=False), episodes=3, seed=0, gamma=0.5)
    assert result.returns.tolist() == [3.0, 3.0, 3.0]
    assert result.v_initial == 2.0
    assert result.overestimation == pytest.approx(7 / 12) and result.states_counted == 9
    # truncated after 10 steps, gamma 0.5: t = 0..3 count; G_t = 2 (1 - 0.5^(10 - t)), so
    # V - G_t = 2 * 0.5^(10 - t) = (2 + 4 + 8 + 16) / 1024, mean 30 / 4096
    result = play_greedy(q, CountingEnv(1, 10, truncate=True), episodes=1, seed=0, gamma=0.5)
    assert result.states_counted == 4
    assert result.overestimation == pytest.approx(30 / 4096)
    # the step limit cuts an episode like a truncation
    result = play_greedy(
        q,
        CountingEnv(1, 50, truncate=False),
        episodes=1,
        seed=0,
        gamma=0.5,
        max_steps_per_episode=10,
    )
    assert result.states_counted == 4 and result.overestimation == pytest.approx(30 / 4096)


def test_value_bound() -> None:
    assert value_bound(1.0, 0.99) == pytest.approx(100.0)
    assert value_bound(2.0, 0.9) == pytest.approx(20.0)  # rewards -2 and 0.5: max |r| = 2
    assert value_bound(1.0, 1.0, horizon=500) == 500.0
    assert value_bound(1.0, 1.0) is None


def watchdog(mode: str, max_r: float = 1.0) -> ValueWatchdog:
    # gamma 0.9, max |r| 1: bound 10; margin 2: triggers above 20
    return ValueWatchdog(gamma=0.9, margin=2.0, on_value_blowup=mode, max_abs_reward=lambda: max_r)


def test_watchdog_warns_once_just_above_the_margin(caplog) -> None:
    dog = watchdog("warn")
    with caplog.at_level(logging.WARNING, logger="rl_lightning"):
        dog.check(19.99, updates=10, env_steps=100)
        assert dog.warning is None and not caplog.records
        dog.check(20.01, updates=20, env_steps=200)
        dog.check(1e6, updates=30, env_steps=300)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    for part in (
        "20.01",
        "2 x",
        "10",
        "max |r| = 1",
        "gamma = 0.9",
        "env step 200",
        "loss=mse",
        "target=polyak",
    ):
        assert part in message, message


def test_watchdog_stop_raises_with_the_reason() -> None:
    dog = watchdog("stop")
    dog.check(20.0, updates=1, env_steps=1)  # not above the margin
    with pytest.raises(TrainingDiverged) as err:
        dog.check(25.0, updates=7, env_steps=70)
    assert err.value.reason == "value-blowup" and err.value.env_steps == 70
    assert "25" in str(err.value) and "env step 70" in str(err.value)
    assert TrainingDiverged(1, 2, 3).reason == "non-finite"


def test_watchdog_is_silent_without_rewards_or_bound() -> None:
    watchdog("stop", max_r=0.0).check(1e9, updates=1, env_steps=1)  # nothing observed yet
    ValueWatchdog(gamma=1.0, margin=2.0, on_value_blowup="stop", max_abs_reward=lambda: 1.0).check(
        1e9, updates=1, env_steps=1
    )  # gamma 1, no time limit: no bound
    with pytest.raises(ValueError, match="warn or stop"):
        watchdog("ignore")


def test_train_stats_grad_norm_mean_and_q_abs_max() -> None:
    stats = TrainStats()
    stats.add(torch.tensor(1.0), torch.tensor([1.0, -3.0]), torch.zeros(2), torch.tensor(1.0), 1)
    stats.add(torch.tensor(3.0), torch.tensor([2.0, 2.0]), torch.zeros(2), torch.tensor(3.0), 2)
    loss, q_mean, td_abs, norm, q_max = stats.take_means(2)
    assert (loss, q_mean, td_abs, norm, q_max) == (2.0, 0.5, 2.0, 2.0, 3.0)
    assert stats.q_abs_max is None and stats.sums is None


def test_grad_norm_is_the_norm_clip_grad_norm_returns() -> None:
    params = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))]
    params[0].grad, params[1].grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    for foreach in (True, False):
        assert grad_norm(params, foreach).item() == 5.0
    assert torch.equal(grad_norm(params, True), clip_grad_norm(params, 100.0, True))
