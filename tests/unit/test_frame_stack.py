"""Frame stacks: each observation stored once, the stacks rebuilt at sampling time exactly as
the acting wrapper built them (episode starts, padding, actions, wrap-around, n-step windows).

The hand-built env ``CountingEnv`` makes every value known: lane ``l``'s observation at vector
step (= buffer row) ``j`` is ``j * 10 + l`` (it counts its reset and step calls, and NEXT_STEP
auto-reset calls exactly one of them per vector step), its episodes last ``length`` steps
(terminated, or truncated when ``truncate``), and the test policy takes action ``(j + l) % 3``
in row ``j``. So with ``length = 3`` a lane's rows go: 0, 10, 20 (real steps), 30 (the final
observation, an auto-reset row), then 40 starts the next episode, and so on every 4 rows.
"""

from __future__ import annotations

import env_doubles
import gymnasium as gym
import numpy as np
import pytest

from rl_lightning.builders import buffer_capacity, make_env
from rl_lightning.data import OnlineSampler, ReplayBuffer, VectorCollector
from rl_lightning.data.collector import env_state, load_env_state
from rl_lightning.envs import StackLayout, find_stack, make_vector_env
from rl_lightning.envs.wrappers import StackObservations

NUM_ACTIONS = 3


def counting_env(lengths=(3, 5), truncate=(False, True), shape=(1,)) -> gym.vector.VectorEnv:
    """``env_doubles.counting_env`` with this file's lengths and ``NUM_ACTIONS`` actions."""
    return env_doubles.counting_env(lengths, truncate, shape, NUM_ACTIONS)


def hand_policy(buffer: ReplayBuffer, seen: dict[int, np.ndarray] | None = None):
    """Action ``(row + lane) % 3``; records the observation the agent acted on per row."""

    def policy(obs: np.ndarray, env_step: int) -> np.ndarray:
        row = buffer.rows_written
        if seen is not None:
            seen[row] = obs.copy()
        return (row + np.arange(obs.shape[0])) % NUM_ACTIONS

    return policy


def collect(
    layout: StackLayout, rows: int, capacity_rows: int, **env_kw
) -> tuple[ReplayBuffer, dict[int, np.ndarray]]:
    env = StackObservations(counting_env(**env_kw), layout=layout)
    buffer = ReplayBuffer(
        capacity=capacity_rows * env.num_envs,
        num_envs=env.num_envs,
        obs_shape=env.frame_space.shape,
        stack=layout,
    )
    seen: dict[int, np.ndarray] = {}
    VectorCollector(env, hand_policy(buffer, seen), buffer, seed=0).collect(rows)
    return buffer, seen


def stacks_at(buffer: ReplayBuffer, row: int, lane: int) -> np.ndarray:
    return buffer.observations_at(np.array([(row % buffer.rows) * buffer.num_envs + lane]))[0]


# -- by hand ----------------------------------------------------------------------------------
def test_the_buffer_stores_single_observations_and_the_collector_the_newest() -> None:
    buffer, seen = collect(StackLayout(frames=3), rows=9, capacity_rows=20)
    assert buffer.obs.shape == (20, 2, 1)
    np.testing.assert_array_equal(buffer.obs[:9, :, 0], np.arange(9)[:, None] * 10 + [0, 1])
    # lane 0 (3-step episodes): row 3 holds the final observation 30, row 4 starts again
    np.testing.assert_array_equal(buffer.reset_step[:9, 0], [0, 0, 0, 1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(seen[5][0, :, 0], [0, 40, 50])


@pytest.mark.parametrize("padding", ["zeros", "first"])
def test_stacks_never_reach_across_an_episode_start(padding: str) -> None:
    buffer, _ = collect(StackLayout(frames=3, padding=padding), rows=12, capacity_rows=20)
    pad = (lambda first: [0, 0]) if padding == "zeros" else (lambda first: [first, first])
    lane0 = {  # episodes: rows 0-3, 4-7, 8-11 (row 3, 7, 11: final observations)
        0: [*pad(0), 0],
        1: [pad(0)[0], 0, 10],
        2: [0, 10, 20],
        3: [10, 20, 30],  # the final observation's stack: what a bootstrap sees
        4: [*pad(40), 40],  # the first row ever written and each row after a reset row
        5: [pad(40)[0], 40, 50],
        8: [*pad(80), 80],
    }
    for row, expected in lane0.items():
        np.testing.assert_array_equal(stacks_at(buffer, row, 0)[:, 0], expected, err_msg=row)
    # lane 1: 5-step episodes, truncated: rows 0-5, 6-11
    np.testing.assert_array_equal(stacks_at(buffer, 5, 1)[:, 0], [31, 41, 51])
    np.testing.assert_array_equal(stacks_at(buffer, 7, 1)[:, 0], [pad(61)[0], 61, 71])


def test_stacks_wrap_around_the_ring_and_stop_at_the_oldest_stored_row() -> None:
    # 5 rows per lane, 13 written: rows 8..12 are stored, in slots 3, 4, 0, 1, 2
    buffer, seen = collect(StackLayout(frames=3), rows=13, capacity_rows=5)
    assert buffer.oldest_row == 8
    # lane 1 (episodes rows 6-11, 12-17): row 10 reads slots 3, 4, 0 -- across the ring's end
    np.testing.assert_array_equal(stacks_at(buffer, 10, 1)[:, 0], [81, 91, 101])
    np.testing.assert_array_equal(seen[10][1, :, 0], [81, 91, 101])
    # row 9's stack would need row 7, overwritten by row 12: the oldest row counts as a start
    np.testing.assert_array_equal(stacks_at(buffer, 9, 1)[:, 0], [0, 81, 91])
    np.testing.assert_array_equal(seen[9][1, :, 0], [71, 81, 91])  # (the agent saw row 7)
    np.testing.assert_array_equal(stacks_at(buffer, 12, 1)[:, 0], [0, 0, 121])  # new episode


def test_stacks_of_any_observation_shape() -> None:
    layout = StackLayout(frames=2)
    buffer, seen = collect(layout, rows=7, capacity_rows=10, shape=(2, 3))
    assert buffer.obs.shape == (10, 2, 2, 3)
    stack = stacks_at(buffer, 6, 0)  # lane 0: rows 4-7 an episode
    assert stack.shape == (2, 2, 3)
    np.testing.assert_array_equal(stack, np.stack([np.full((2, 3), 50), np.full((2, 3), 60)]))
    np.testing.assert_array_equal(stack, seen[6][0])


def test_action_stacks_hold_the_action_before_each_observation() -> None:
    layout = StackLayout(frames=3, num_actions=NUM_ACTIONS)
    buffer, seen = collect(layout, rows=12, capacity_rows=20)

    def block(obs: float, action: int | None) -> list[float]:
        one_hot = [0.0] * NUM_ACTIONS
        if action is not None:
            one_hot[action] = 1.0
        return [obs, *one_hot]

    # lane 0, row 6 (episode rows 4-7): o_4 (first: no action), a_4 = 1, o_5, a_5 = 2, o_6
    expected = [*block(40, None), *block(50, 4 % 3), *block(60, 5 % 3)]
    np.testing.assert_array_equal(stacks_at(buffer, 6, 0), expected)
    np.testing.assert_array_equal(seen[6][0], expected)
    # row 5: one padding slot (zeros, no action), o_4, a_4, o_5
    expected = [*block(0, None), *block(40, None), *block(50, 4 % 3)]
    np.testing.assert_array_equal(stacks_at(buffer, 5, 0), expected)
    # lane 1, row 3 (episode rows 0-5): a_{j-1} = (j - 1 + 1) % 3
    expected = [*block(11, 1 % 3), *block(21, 2 % 3), *block(31, 3 % 3)]
    np.testing.assert_array_equal(stacks_at(buffer, 3, 1), expected)
    assert layout.stacked_shape((1,)) == (3 * (1 + NUM_ACTIONS),)
    # the stored observation is the newest of the flat layout
    np.testing.assert_array_equal(layout.newest(seen[6])[:, 0], [60, 61])


def test_n_step_windows_stack_their_bootstrap_rows() -> None:
    buffer, _ = collect(StackLayout(frames=3), rows=14, capacity_rows=20)
    starts, lanes = np.array([1, 4, 2, 6]), np.array([0, 0, 1, 1])
    batch = buffer.gather(starts, lanes, n_step=3)
    np.testing.assert_array_equal(batch.n_steps, [2, 3, 3, 3])
    # lane 0, row 1: the episode terminates after row 2, so the window stops there and
    # bootstraps (terminated) from the final observation's row 3
    np.testing.assert_array_equal(batch.obs[0, :, 0], [0, 0, 10])
    np.testing.assert_array_equal(batch.next_obs[0, :, 0], [10, 20, 30])
    # lane 0, row 4: rows 4-6 real, bootstrap row 7 (the final observation)
    np.testing.assert_array_equal(batch.next_obs[1, :, 0], [50, 60, 70])
    # lane 1, row 2: bootstrap row 5 (truncated there: the final observation of rows 0-5)
    np.testing.assert_array_equal(batch.next_obs[2, :, 0], [31, 41, 51])
    np.testing.assert_array_equal(batch.terminated, [1, 1, 0, 0])
    # lane 1, row 6 (a new episode): obs padded, bootstrap row 9
    np.testing.assert_array_equal(batch.obs[3, :, 0], [0, 0, 61])
    np.testing.assert_array_equal(batch.next_obs[3, :, 0], [71, 81, 91])
    one = buffer.gather(np.array([7]), np.array([1]), n_step=1)  # the one-step path: row 8
    np.testing.assert_array_equal(one.obs[0, :, 0], [0, 61, 71])
    np.testing.assert_array_equal(one.next_obs[0, :, 0], [61, 71, 81])


# -- the wrapper and the buffer agree on a real env -------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"frame_stack": 4},
        {"frame_stack": 4, "frame_stack_padding": "first"},
        {"frame_stack": 3, "stack_actions": True, "mask_indices": [1, 3], "flicker_p": 0.2},
        {"frame_stack": 1, "stack_actions": True},
    ],
    ids=["zeros", "first", "actions_pomdp", "actions_only"],
)
def test_acting_stacks_equal_the_rebuilt_stacks_for_every_stored_row(options: dict) -> None:
    """CartPole, 4 lanes, random actions, about 50 episode ends, the ring wrapped: the stack
    the agent acted on in each stored row equals what ``gather_flat`` rebuilds for it (rows
    within N of the oldest stored row are cut there by design; they are checked by hand above).
    """
    env = make_vector_env(id="CartPole-v1", num_envs=4, vectorization_mode="sync", **options)
    stack = find_stack(env)
    assert stack is not None
    layout = stack.layout
    buffer = ReplayBuffer(capacity=4 * 150, num_envs=4, obs_shape=(4,), stack=layout)
    seen: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(0)

    def policy(obs: np.ndarray, env_step: int) -> np.ndarray:
        seen[buffer.rows_written] = obs.copy()
        return rng.integers(2, size=4)

    collector = VectorCollector(env, policy, buffer, seed=3)
    collector.collect(400)
    assert collector.episodes > 40 and buffer.rows_written > buffer.rows
    reach = layout.frames if layout.num_actions is not None else layout.frames - 1
    rows = np.arange(buffer.oldest_row + reach, buffer.rows_written)
    for row in rows:
        flat = (row % buffer.rows) * 4 + np.arange(4)
        np.testing.assert_array_equal(buffer.observations_at(flat), seen[row], err_msg=row)
    # and through gather_flat, n-step windows included: every start row's and bootstrap's
    starts = np.repeat(rows[:-3], 4)
    lanes = np.tile(np.arange(4), len(rows) - 3)
    batch = buffer.gather(starts, lanes, n_step=3)
    expected_obs = np.stack([seen[r][lane] for r, lane in zip(starts, lanes, strict=True)])
    np.testing.assert_array_equal(batch.obs, expected_obs)
    boot = starts + batch.n_steps
    expected_next = np.stack([seen[r][lane] for r, lane in zip(boot, lanes, strict=True)])
    np.testing.assert_array_equal(batch.next_obs, expected_next)


def test_stack_one_and_stack_four_store_the_same_bytes() -> None:
    sizes = []
    for frames in (1, 4):
        env = make_vector_env(id="CartPole-v1", num_envs=4, frame_stack=frames)
        stack = find_stack(env)
        layout = None if stack is None else stack.layout
        buffer = ReplayBuffer(capacity=100_000, num_envs=4, obs_shape=(4,), stack=layout)
        sizes.append((buffer.nbytes, buffer.bytes_per_transition))
    # 4 float32 observation entries + int64 action + float32 reward + 3 bool flags
    assert sizes[0] == sizes[1] == (100_000 * 31, 31.0)


def test_frame_stack_one_builds_no_wrapper_and_no_stacking() -> None:
    env = make_vector_env(id="CartPole-v1", num_envs=2)
    assert find_stack(env) is None
    assert env.single_observation_space.shape == (4,)


def test_the_wrapper_state_pickles_with_the_env() -> None:
    """``collector.env_state`` holds the stacks and the flicker generator: a restored env
    continues exactly."""
    options = {"frame_stack": 4, "stack_actions": True, "flicker_p": 0.3, "mask_indices": [1]}
    env = make_vector_env(id="CartPole-v1", num_envs=3, **options)
    env.reset(seed=5)
    rng = np.random.default_rng(1)
    for _ in range(30):
        env.step(rng.integers(2, size=3))
    blob = env_state(env)
    actions = rng.integers(2, size=(40, 3))
    expected = [env.step(a)[0] for a in actions]
    restored = make_vector_env(id="CartPole-v1", num_envs=3, **options)
    load_env_state(restored, blob)
    for a, obs in zip(actions, expected, strict=True):
        np.testing.assert_array_equal(restored.step(a)[0], obs)


def test_online_rollouts_see_whole_stacks(compose_config) -> None:
    """``buffer=online`` keeps one rollout plus N - 1 rows per lane: every transition handed out
    carries the stack the agent acted on (rows before the rollout included)."""
    cfg = compose_config(
        ["buffer=online", "env.num_envs=4", "env_steps_per_update=8", "env.frame_stack=4"]
    )
    env = make_env(cfg)
    layout = find_stack(env).layout  # type: ignore[union-attr]
    buffer = ReplayBuffer(
        capacity=buffer_capacity(cfg, n_step=1), num_envs=4, obs_shape=(4,), stack=layout
    )
    seen: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(0)

    def policy(obs: np.ndarray, env_step: int) -> np.ndarray:
        seen[buffer.rows_written] = obs.copy()
        return rng.integers(2, size=4)

    collector, sampler = VectorCollector(env, policy, buffer, seed=0), OnlineSampler()
    checked = 0
    while collector.episodes < 20:
        target = collector.env_steps + 8
        while collector.env_steps < target:
            collector.collect(1)
        first = sampler.consumed_until
        batch = sampler.sample(buffer, 0, 1)
        if batch is None:
            continue
        rows = np.repeat(np.arange(first, sampler.consumed_until), 4)
        lanes = np.tile(np.arange(4), sampler.consumed_until - first)
        keep = ~buffer.reset_step[rows % buffer.rows, lanes]
        expected = np.stack(
            [seen[r][lane] for r, lane in zip(rows[keep], lanes[keep], strict=True)]
        )
        np.testing.assert_array_equal(batch.obs, expected)
        checked += len(expected)
    assert buffer.rows_written > buffer.rows and checked > 300
