"""Property tests of the replay buffer, driven through the real collector and gymnasium.

Hypothesis draws the number of lanes, each lane's episodes (lengths, terminated or truncated),
the buffer capacity (so the ring wraps, often several times), the number of vector steps and
the n-step window. ``ScriptedEnv`` plays those episodes inside a gymnasium ``SyncVectorEnv``
with its default NEXT_STEP auto-reset, and ``VectorCollector`` writes them to the buffer as in
training. The reference is computed from the plain episode list alone: every observation names
its (lane, episode, step), so each sampled transition -- observation, action, zero-padded
rewards, number of real steps, terminated, bootstrap observation, SARSA's next action, and the
discount gamma^k (1 - terminated) the estimators build from them -- is compared with the window
the episode list defines. A sample that starts on an auto-reset row, spans two episodes, or
reads an overwritten row names a different (or no) reference window and fails.

The buffer has no frame stacking (observations are stored whole), so there are no stacked
observations to check here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rl_lightning.data.buffer import ReplayBuffer, TransitionBatch
from rl_lightning.data.collector import VectorCollector
from rl_lightning.data.samplers import OnlineSampler, UniformSampler
from rl_lightning.estimators import bootstrap_discount, n_step_return

NUM_ACTIONS = 11
GAMMA = 0.9
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Key = tuple[int, int, int]  # (lane, episode, step): the identity of one state


@dataclass(frozen=True)
class EpisodeSpec:
    length: int  # real steps L: states s_0 .. s_L
    terminated: bool  # False: truncated at step L (bootstrap from s_L)


def policy_action(lane: int, episode: int, step: int) -> int:
    """The behaviour action in state (lane, episode, step): a fixed function of the state, so
    the reference knows every action, also the ignored one stored in an auto-reset row."""
    return (3 * lane + 5 * episode + 7 * step) % NUM_ACTIONS


def reward_of(lane: int, episode: int, step: int) -> float:
    """r_{t+1} for the step taken in state (lane, episode, step); exact in float32."""
    return 100.0 * lane + 10.0 * episode + step + 0.5


class ScriptedEnv(gym.Env):
    """Plays ``episodes`` (cycled) on one lane; observation = (lane, episode, step) as floats.

    ``step`` checks that the action is the behaviour policy's for the current state, so a
    collector that mixed up lanes or time steps fails here.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
    action_space = gym.spaces.Discrete(NUM_ACTIONS)

    def __init__(self, lane: int, episodes: Sequence[EpisodeSpec]) -> None:
        self.lane = lane
        self.episodes = list(episodes)
        self.episode = -1
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.lane, self.episode, self.t], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        assert int(action) == policy_action(self.lane, self.episode, self.t)
        reward = reward_of(self.lane, self.episode, self.t)
        self.t += 1
        spec = self.episodes[self.episode % len(self.episodes)]
        ended = self.t == spec.length
        return self._obs(), reward, ended and spec.terminated, ended and not spec.terminated, {}


def batched_policy(obs: np.ndarray, env_step: int) -> np.ndarray:
    """(N, 3) observations -> (N,) actions of ``policy_action``."""
    lane, episode, step = obs.astype(np.int64).T
    return (3 * lane + 5 * episode + 7 * step) % NUM_ACTIONS


@dataclass(frozen=True)
class Row:
    """One stored row of a lane: a real step (lane, episode, step), or the auto-reset row after
    an episode (``reset=True``, its observation is the episode's final state s_L)."""

    episode: int
    step: int
    reset: bool


def lane_rows(episodes: Sequence[EpisodeSpec], num_rows: int) -> list[Row]:
    """The rows one lane writes in ``num_rows`` vector steps under NEXT_STEP auto-reset."""
    rows: list[Row] = []
    e = 0
    while len(rows) < num_rows:
        spec = episodes[e % len(episodes)]
        rows.extend(Row(e, t, False) for t in range(spec.length))
        rows.append(Row(e, spec.length, True))
        e += 1
    return rows[:num_rows]


@dataclass(frozen=True)
class Window:
    """The reference n-step window from state s_t: what a sample starting there must hold."""

    action: int
    rewards: tuple[float, ...]  # r_{t+1} .. r_{t+k}, zero-padded to n
    n_steps: int  # k = min(n, L - t)
    terminated: bool
    next_obs: Key  # s_{t+k}
    next_action: int  # the behaviour action in s_{t+k}
    discount: float  # gamma^k (1 - terminated)


def reference_window(lane: int, episode: int, t: int, spec: EpisodeSpec, n: int) -> Window:
    """The window from the episode alone: k = min(n, L - t) real steps. (A sampleable window
    has all its rows t .. t+n written, so an episode end inside it is written too.)"""
    k = min(n, spec.length - t)
    terminated = spec.terminated and t + k == spec.length
    rewards = [reward_of(lane, episode, t + j) for j in range(k)] + [0.0] * (n - k)
    return Window(
        action=policy_action(lane, episode, t),
        rewards=tuple(rewards),
        n_steps=k,
        terminated=terminated,
        next_obs=(lane, episode, t + k),
        next_action=policy_action(lane, episode, t + k),
        discount=0.0 if terminated else GAMMA**k,
    )


def reference(
    lanes: Sequence[Sequence[EpisodeSpec]], num_rows: int, n: int
) -> tuple[dict[Key, Window], dict[Key, int], int]:
    """Every real transition written in ``num_rows`` vector steps with its n-step window and
    row index, and the number of real env steps (auto-reset rows excluded)."""
    windows: dict[Key, Window] = {}
    row_of: dict[Key, int] = {}
    real = 0
    for lane, episodes in enumerate(lanes):
        for g, row in enumerate(lane_rows(episodes, num_rows)):
            if row.reset:
                continue
            real += 1
            spec = episodes[row.episode % len(episodes)]
            key = (lane, row.episode, row.step)
            row_of[key] = g
            windows[key] = reference_window(lane, row.episode, row.step, spec, n)
    return windows, row_of, real


def collect(
    lanes: Sequence[Sequence[EpisodeSpec]], capacity: int
) -> tuple[VectorCollector, ReplayBuffer]:
    env = gym.vector.SyncVectorEnv(
        [lambda lane=lane, eps=eps: ScriptedEnv(lane, eps) for lane, eps in enumerate(lanes)]
    )
    buffer = ReplayBuffer(capacity=capacity, num_envs=len(lanes), obs_shape=(3,))
    return VectorCollector(env, batched_policy, buffer, seed=0), buffer


def windows_of(batch: TransitionBatch) -> list[tuple[Key, Window]]:
    """The sampled windows keyed by their start state, the discount as the estimators build it."""
    discounts = bootstrap_discount(
        torch.from_numpy(batch.n_steps), torch.from_numpy(batch.terminated), GAMMA
    ).tolist()
    returns = n_step_return(torch.from_numpy(batch.rewards), GAMMA).tolist()
    out = []
    for i in range(len(batch.actions)):
        window = Window(
            action=int(batch.actions[i]),
            rewards=tuple(float(r) for r in batch.rewards[i]),
            n_steps=int(batch.n_steps[i]),
            terminated=bool(batch.terminated[i]),
            next_obs=tuple(int(x) for x in batch.next_obs[i]),  # type: ignore[arg-type]
            next_action=int(batch.next_actions[i]),
            discount=discounts[i],
        )
        expected_return = sum(GAMMA**j * r for j, r in enumerate(window.rewards))
        assert returns[i] == pytest.approx(expected_return, rel=1e-6)
        out.append((tuple(int(x) for x in batch.obs[i]), window))  # type: ignore[misc]
    return out


def assert_window(key: Key, got: Window, windows: dict[Key, Window]) -> None:
    assert key in windows, f"sampled {key}: an auto-reset row or a state never written"
    want = windows[key]
    assert got.discount == pytest.approx(want.discount, rel=1e-6), key
    assert replace(got, discount=want.discount) == want, key


episode_specs = st.builds(EpisodeSpec, length=st.integers(1, 6), terminated=st.booleans())
lane_schedules = st.lists(st.lists(episode_specs, min_size=1, max_size=4), min_size=1, max_size=4)


def check_sampling(
    lanes: list[list[EpisodeSpec]], rows_per_lane: int, extra: int, num_rows: int, n: int
) -> None:
    """Uniform sampling returns exactly the complete, stored, real windows: each equal to the
    reference, and (with enough draws) every one of them."""
    num_envs = len(lanes)
    capacity = rows_per_lane * num_envs + extra % num_envs
    collector, buffer = collect(lanes, capacity=capacity)
    sampler = UniformSampler(seed=capacity)
    collector.collect(num_rows)
    windows, row_of, real = reference(lanes, num_rows, n)
    assert collector.env_steps == real
    assert buffer.rows == rows_per_lane and len(buffer) == min(num_rows, rows_per_lane) * num_envs
    # sampleable: rows t .. t+n all still stored (the oldest rows were overwritten)
    oldest = max(0, num_rows - rows_per_lane)
    eligible = {k for k, g in row_of.items() if g >= oldest and g + n <= num_rows - 1}
    if not eligible:
        with pytest.raises(RuntimeError):
            sampler.sample(buffer, 8, n)
        return
    sampled = windows_of(sampler.sample(buffer, 40 * len(eligible), n))
    for key, got in sampled:
        assert key in eligible, f"sampled {key}: overwritten, incomplete or an auto-reset row"
        assert_window(key, got, windows)
    assert {key for key, _ in sampled} == eligible


@FAST
@given(
    lanes=lane_schedules,
    rows_per_lane=st.integers(1, 16),
    extra=st.integers(0, 3),
    num_rows=st.integers(1, 40),
    n=st.integers(1, 4),
)
def test_sampled_windows_equal_the_episode_list(
    lanes: list[list[EpisodeSpec]], rows_per_lane: int, extra: int, num_rows: int, n: int
) -> None:
    check_sampling(lanes, rows_per_lane, extra, num_rows, n)


@pytest.mark.slow
@THOROUGH
@given(
    lanes=lane_schedules,
    rows_per_lane=st.integers(1, 40),
    extra=st.integers(0, 3),
    num_rows=st.integers(1, 120),
    n=st.integers(1, 6),
)
def test_sampled_windows_equal_the_episode_list_thoroughly(
    lanes: list[list[EpisodeSpec]], rows_per_lane: int, extra: int, num_rows: int, n: int
) -> None:
    check_sampling(lanes, rows_per_lane, extra, num_rows, n)


def check_online_sampling(
    lanes: list[list[EpisodeSpec]],
    rows_per_lane: int,
    chunks: list[int],
    skip_first: bool,
    n: int,
) -> None:
    """Online use: after each chunk of vector steps, ``OnlineSampler.sample`` returns every
    real transition whose window completed since the last call, once, in time order (row, then
    lane), each equal to the reference; or, if a row not yet handed out was overwritten, it
    raises."""
    num_envs = len(lanes)
    collector, buffer = collect(lanes, capacity=rows_per_lane * num_envs)
    sampler = OnlineSampler()
    total = sum(chunks)
    windows, row_of, _ = reference(lanes, total, n)
    by_row = sorted(row_of, key=lambda k: (row_of[k], k[0]))  # time order, then lane
    handed_out_until = 0  # rows below this were handed out (or skipped)
    written = 0
    returned: list[Key] = []
    for i, chunk in enumerate(chunks):
        collector.collect(chunk)
        written += chunk
        if i == 0 and skip_first:  # the dataset drops warm-up data in online mode
            sampler.skip_to_newest(buffer, n)
            handed_out_until = max(0, written - n)
            continue
        if handed_out_until < written - rows_per_lane:
            with pytest.raises(RuntimeError, match="online buffer overflow"):
                sampler.sample(buffer, 0, n)
            return
        complete = written - n  # rows g with g + n <= written - 1
        want = [k for k in by_row if handed_out_until <= row_of[k] < complete]
        batch = sampler.sample(buffer, 0, n)
        if not want:
            assert batch is None
        else:
            assert batch is not None
            got = windows_of(batch)
            assert [key for key, _ in got] == want
            for key, window in got:
                assert_window(key, window, windows)
            returned.extend(want)
        handed_out_until = max(handed_out_until, complete)
    assert len(returned) == len(set(returned))  # never twice


@FAST
@given(
    lanes=lane_schedules,
    rows_per_lane=st.integers(2, 14),
    chunks=st.lists(st.integers(1, 6), min_size=1, max_size=10),
    skip_first=st.booleans(),
    n=st.integers(1, 4),
)
def test_online_sampler_returns_each_new_window_once_in_order(
    lanes: list[list[EpisodeSpec]],
    rows_per_lane: int,
    chunks: list[int],
    skip_first: bool,
    n: int,
) -> None:
    check_online_sampling(lanes, rows_per_lane, chunks, skip_first, n)


@pytest.mark.slow
@THOROUGH
@given(
    lanes=lane_schedules,
    rows_per_lane=st.integers(2, 30),
    chunks=st.lists(st.integers(1, 12), min_size=1, max_size=20),
    skip_first=st.booleans(),
    n=st.integers(1, 6),
)
def test_online_sampler_returns_each_new_window_once_in_order_thoroughly(
    lanes: list[list[EpisodeSpec]],
    rows_per_lane: int,
    chunks: list[int],
    skip_first: bool,
    n: int,
) -> None:
    check_online_sampling(lanes, rows_per_lane, chunks, skip_first, n)
