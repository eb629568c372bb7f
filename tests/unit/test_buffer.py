"""ReplayBuffer: ring wrap-around, NEXT_STEP auto-reset rows, n-step windows, and the collector.

The hand-made tests encode the identity of every row in its observation (and action, reward),
so a sampled transition can be matched exactly against a reference computed from a plain
Python description of the episodes, independent of the buffer's row layout.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest

from rl_lightning.data.buffer import ReplayBuffer
from rl_lightning.data.collector import VectorCollector

# -- (a) ring wrap-around --------------------------------------------------------------------


def lane_step(t: int, num_envs: int = 2) -> dict[str, np.ndarray]:
    """Vector step t without episode ends: lane l observes 10 t + l and takes action t."""
    return dict(
        obs=(10.0 * t + np.arange(num_envs, dtype=np.float32))[:, None],
        actions=np.full(num_envs, t, dtype=np.int64),
        rewards=np.full(num_envs, 0.5 * t, dtype=np.float32),
        terminated=np.zeros(num_envs, dtype=bool),
        truncated=np.zeros(num_envs, dtype=bool),
        reset_step=np.zeros(num_envs, dtype=bool),
    )


def test_wrap_around_keeps_only_the_newest_rows() -> None:
    buf = ReplayBuffer(capacity=8, num_envs=2, obs_shape=(1,), seed=0)  # 4 rows per lane
    assert (buf.rows, buf.capacity, len(buf)) == (4, 8, 0)
    for t in range(3):
        buf.add(**lane_step(t))
    assert len(buf) == 6  # 3 rows x 2 lanes, not full yet
    for t in range(3, 10):
        buf.add(**lane_step(t))
    assert len(buf) == 8  # full: 4 rows x 2 lanes
    assert buf.rows_written == 10
    # rows 6, 7, 8, 9 survive; row t sits at slot t % 4: slots 0..3 hold rows 8, 9, 6, 7
    np.testing.assert_array_equal(buf.obs[:, 0, 0], [80.0, 90.0, 60.0, 70.0])
    np.testing.assert_array_equal(buf.obs[:, 1, 0], [81.0, 91.0, 61.0, 71.0])

    # 1-step transitions need rows t and t+1: starts 6, 7, 8 (7 -> 8 crosses the slot wrap)
    assert buf.num_sampleable_rows(1) == 3
    batch = buf.sample(2000, n_step=1)
    obs = batch.obs[:, 0]
    assert set(obs.tolist()) == {60.0, 61.0, 70.0, 71.0, 80.0, 81.0}
    np.testing.assert_array_equal(batch.next_obs[:, 0], obs + 10.0)  # s_{t+1} of the same lane
    t = np.floor(obs / 10.0).astype(np.int64)
    np.testing.assert_array_equal(batch.actions, t)
    np.testing.assert_array_equal(batch.rewards[:, 0], 0.5 * t)
    np.testing.assert_array_equal(batch.next_actions, t + 1)
    np.testing.assert_array_equal(batch.n_steps, 1)
    np.testing.assert_array_equal(batch.terminated, 0.0)

    # 3-step windows need rows t .. t+3: only start 6 (rows 6..9)
    assert buf.num_sampleable_rows(3) == 1
    batch = buf.sample(50, n_step=3)
    assert set(batch.obs[:, 0].tolist()) == {60.0, 61.0}
    np.testing.assert_array_equal(batch.next_obs[:, 0], batch.obs[:, 0] + 30.0)
    np.testing.assert_array_equal(batch.rewards, np.tile([3.0, 3.5, 4.0], (50, 1)))  # 0.5 t


# -- (b), (c) hand-made episodes with NEXT_STEP auto-reset rows ------------------------------


@dataclass(frozen=True)
class Episode:
    length: int  # real steps L (states s_0 .. s_L)
    end: str | None  # "terminated", "truncated" or None (still running when writing stops)


# lane 0: rows 3 + 1 | 2 + 1 | 1 + 1 | 4 = 13;  lane 1: rows 1 + 1 | 5 + 1 | 5 = 13
LANES = [
    [Episode(3, "terminated"), Episode(2, "truncated"), Episode(1, "terminated"), Episode(4, None)],
    [Episode(1, "truncated"), Episode(5, "terminated"), Episode(5, None)],
]
NUM_ROWS = 13


def state_id(lane: int, ep: int, i: int) -> float:
    return 1000.0 * lane + 100.0 * ep + i


def action_id(lane: int, ep: int, i: int) -> int:
    return 10000 * lane + 100 * ep + i + 1


def reward_of(lane: int, ep: int, i: int) -> float:
    return 100.0 * lane + 10.0 * ep + i + 0.5  # exact in float32


def reset_action(lane: int, ep: int) -> int:
    return 9000 + 100 * lane + ep  # the (ignored) action stored in the auto-reset row


def write_lanes(buf: ReplayBuffer) -> None:
    """Write LANES the way VectorCollector does with gymnasium's NEXT_STEP auto-reset."""
    rows: list[list[tuple]] = []
    for lane, episodes in enumerate(LANES):
        lane_rows = []
        for e, ep in enumerate(episodes):
            for i in range(ep.length):
                last = i == ep.length - 1
                lane_rows.append(
                    (
                        state_id(lane, e, i),
                        action_id(lane, e, i),
                        reward_of(lane, e, i),
                        last and ep.end == "terminated",
                        last and ep.end == "truncated",
                        False,
                    )
                )
            if ep.end is not None:  # the auto-reset step: final obs s_L, reward 0, no flags
                lane_rows.append(
                    (state_id(lane, e, ep.length), reset_action(lane, e), 0.0, False, False, True)
                )
        assert len(lane_rows) == NUM_ROWS
        rows.append(lane_rows)
    for r in range(NUM_ROWS):
        obs, act, rew, term, trunc, reset = zip(
            *(rows[lane][r] for lane in range(len(LANES))), strict=True
        )
        buf.add(
            np.array(obs, dtype=np.float32)[:, None],
            np.array(act, dtype=np.int64),
            np.array(rew, dtype=np.float32),
            np.array(term),
            np.array(trunc),
            np.array(reset),
        )


def reference_windows(n: int, rows_per_lane: int) -> dict[float, tuple]:
    """The true n-step windows, keyed by the start observation, from the episode list.

    A window starting at real step i of an episode of L steps has k = min(n, L - i) real steps
    (all n if the episode is still running), rewards r_i .. r_{i+k-1} zero-padded to n,
    terminated = the episode terminated at step i + k, next_obs = s_{i+k} and next_action the
    action taken in s_{i+k}. It is sampleable when its rows t .. t+n are all stored.
    """
    oldest = max(0, NUM_ROWS - rows_per_lane)
    windows = {}
    for lane, episodes in enumerate(LANES):
        row = 0
        for e, ep in enumerate(episodes):
            for i in range(ep.length):
                k = n if ep.end is None else min(n, ep.length - i)
                rewards = [reward_of(lane, e, i + j) for j in range(k)] + [0.0] * (n - k)
                ends_here = ep.end == "terminated" and i + k == ep.length
                next_action = (
                    reset_action(lane, e) if i + k == ep.length else action_id(lane, e, i + k)
                )
                if oldest <= row + i and row + i + n <= NUM_ROWS - 1:
                    windows[state_id(lane, e, i)] = (
                        action_id(lane, e, i),
                        tuple(rewards),
                        k,
                        float(ends_here),
                        state_id(lane, e, i + k),
                        next_action,
                    )
            row += ep.length + (ep.end is not None)
    return windows


def sampled_windows(buf: ReplayBuffer, n: int, size: int) -> tuple[list[float], list[tuple]]:
    batch = buf.sample(size, n_step=n)
    starts = batch.obs[:, 0].tolist()
    got = [
        (int(a), tuple(r.tolist()), int(k), float(d), float(o2[0]), int(a2))
        for a, r, k, d, o2, a2 in zip(
            batch.actions,
            batch.rewards,
            batch.n_steps,
            batch.terminated,
            batch.next_obs,
            batch.next_actions,
            strict=True,
        )
    ]
    return starts, got


@pytest.mark.parametrize("rows_per_lane", [NUM_ROWS, 8])  # 8: the ring has wrapped
@pytest.mark.parametrize("n", [1, 2, 3])
def test_every_sample_is_a_true_window(n: int, rows_per_lane: int) -> None:
    buf = ReplayBuffer(capacity=2 * rows_per_lane, num_envs=2, obs_shape=(1,), seed=n)
    write_lanes(buf)
    expected = reference_windows(n, rows_per_lane)
    reset_obs = {
        state_id(lane, e, ep.length)
        for lane, eps in enumerate(LANES)
        for e, ep in enumerate(eps)
        if ep.end
    }
    starts, got = sampled_windows(buf, n, 5000)
    assert not reset_obs & set(starts), "an auto-reset row was sampled as a transition start"
    for start, window in zip(starts, got, strict=True):
        assert start in expected, f"start {start} is not a sampleable real step"
        assert window == expected[start], f"window from {start}"
    # every true window is sampled, roughly uniformly (5000 / |windows| each)
    counts = Counter(starts)
    assert set(counts) == set(expected)
    mean = 5000 / len(expected)
    assert all(0.6 * mean < c < 1.4 * mean for c in counts.values()), counts


def test_three_step_windows_by_hand() -> None:
    buf = ReplayBuffer(capacity=2 * NUM_ROWS, num_envs=2, obs_shape=(1,), seed=3)
    write_lanes(buf)
    starts, got = sampled_windows(buf, 3, 5000)
    by_start = dict(zip(starts, got, strict=True))
    # (action, rewards, n_steps, terminated, next_obs, next_action)
    # lane 0 episode 0: s_0 s_1 s_2 -> terminated in s_3; rewards 0.5 1.5 2.5
    assert by_start[0.0] == (1, (0.5, 1.5, 2.5), 3, 1.0, 3.0, 9000)
    assert by_start[1.0] == (2, (1.5, 2.5, 0.0), 2, 1.0, 3.0, 9000)  # zero-padded, no bootstrap
    assert by_start[2.0] == (3, (2.5, 0.0, 0.0), 1, 1.0, 3.0, 9000)
    # lane 0 episode 1: truncated after 2 steps: bootstrap from the final obs s_2 = 102
    # (stored in the auto-reset row), not from the next episode's first obs 200
    assert by_start[100.0] == (101, (10.5, 11.5, 0.0), 2, 0.0, 102.0, 9001)
    assert by_start[101.0] == (102, (11.5, 0.0, 0.0), 1, 0.0, 102.0, 9001)
    # lane 0 episode 2: one step, terminated
    assert by_start[200.0] == (201, (20.5, 0.0, 0.0), 1, 1.0, 201.0, 9002)
    # lane 0 episode 3 (running): rows 9..12, only row 9 has rows t..t+3 stored
    assert by_start[300.0] == (301, (30.5, 31.5, 32.5), 3, 0.0, 303.0, 304)
    # lane 1 episode 0: truncated after its first step
    assert by_start[1000.0] == (10001, (100.5, 0.0, 0.0), 1, 0.0, 1001.0, 9100)
    # lane 1 episode 1: 5 steps, terminated; a full window inside it bootstraps from s_{t+3}
    assert by_start[1101.0] == (10102, (111.5, 112.5, 113.5), 3, 0.0, 1104.0, 10105)
    assert by_start[1103.0] == (10104, (113.5, 114.5, 0.0), 2, 1.0, 1105.0, 9101)
    # lane 1 episode 2 (running, rows 8..12): s_1 = 1201 starts at row 9, rows 9..12 stored
    assert by_start[1201.0] == (10202, (121.5, 122.5, 123.5), 3, 0.0, 1204.0, 10205)
    # auto-reset rows (3, 102, 201, 1001, 1105) and the last rows of the stream never start one
    assert set(by_start) == {0.0, 1.0, 2.0, 100.0, 101.0, 200.0, 300.0, 1000.0} | {
        1100.0,
        1101.0,
        1102.0,
        1103.0,
        1104.0,
        1200.0,
        1201.0,
    }


# -- (d) num_sampleable_rows -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "n", "expected"),
    [
        # 5 rows per lane. Rows t .. t+n must be stored: oldest = max(0, w - 5),
        # newest start = w - 1 - n, count = max(0, newest - oldest + 1)
        (0, 1, 0),
        (1, 1, 0),  # a single row is no transition
        (2, 1, 1),  # rows 0, 1 -> start 0
        (4, 1, 3),  # starts 0, 1, 2
        (4, 3, 1),  # start 0 (rows 0..3)
        (4, 4, 0),  # a 4-step window needs 5 rows
        (5, 1, 4),  # full, not wrapped: starts 0..3
        (5, 4, 1),  # start 0 only (rows 0..4)
        (7, 1, 4),  # rows 2..6 stored: starts 2..5
        (7, 3, 2),  # starts 2, 3
        (7, 4, 1),  # start 2
        (7, 5, 0),  # a 5-step window needs 6 rows, the lane only holds 5
    ],
)
def test_num_sampleable_rows(written: int, n: int, expected: int) -> None:
    buf = ReplayBuffer(capacity=10, num_envs=2, obs_shape=(1,))
    for t in range(written):
        buf.add(**lane_step(t))
    assert buf.num_sampleable_rows(n) == expected
    if expected == 0:
        with pytest.raises(RuntimeError, match="collect more steps"):
            buf.sample(4, n_step=n)
    else:
        batch = buf.sample(400, n_step=n)
        # the sampled start rows are exactly the `expected` newest-but-n rows
        starts = np.floor(batch.obs[:, 0] / 10.0).astype(int)
        oldest = max(0, written - 5)
        assert set(starts.tolist()) == set(range(oldest, oldest + expected))


def test_buffer_validation() -> None:
    with pytest.raises(ValueError, match="smaller than num_envs"):
        ReplayBuffer(capacity=2, num_envs=3, obs_shape=(1,))
    buf = ReplayBuffer(capacity=10, num_envs=3, obs_shape=(1,))
    assert (buf.rows, buf.capacity) == (3, 9)  # 10 // 3 rows per lane
    with pytest.raises(ValueError, match="n_step"):
        buf.sample(1, n_step=0)


# -- the real collector on CartPole ----------------------------------------------------------

TAU = 0.02  # CartPole's Euler step: x' = x + tau * x_dot, theta' = theta + tau * theta_dot
X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * np.pi / 360


@pytest.fixture(scope="module")
def cartpole_run() -> tuple[ReplayBuffer, VectorCollector, int]:
    env = gym.make_vec("CartPole-v1", 3)
    vector_steps = 700  # 2100 rows, about 90 random-policy episodes
    buf = ReplayBuffer(capacity=3 * vector_steps, num_envs=3, obs_shape=(4,), seed=0)
    rng = np.random.default_rng(0)
    collector = VectorCollector(
        env, lambda obs, step: rng.integers(2, size=obs.shape[0]), buf, seed=0
    )
    collector.collect(vector_steps)
    env.close()
    return buf, collector, vector_steps


def test_collector_stores_auto_reset_rows_after_every_episode_end(cartpole_run) -> None:
    buf, collector, vector_steps = cartpole_run
    assert buf.rows_written == vector_steps  # no wrap: every row is still there
    ended = buf.terminated | buf.truncated
    # row t+1 is an auto-reset row exactly when row t ended an episode; the first row never is
    np.testing.assert_array_equal(buf.reset_step[1:], ended[:-1])
    assert not buf.reset_step[0].any()
    assert not (buf.reset_step & ended).any()
    assert (buf.rewards[buf.reset_step] == 0.0).all()
    resets = int(buf.reset_step.sum())
    assert resets > 50  # random CartPole episodes last ~20 steps: the test is not vacuous
    # env_steps counts real transitions only
    assert collector.env_steps == 3 * vector_steps - resets
    # every ended episode has its reset row, except those ending on the very last row
    assert collector.episodes == resets + int(ended[-1].sum())


def test_collector_episode_bookkeeping(cartpole_run) -> None:
    buf, collector, vector_steps = cartpole_run
    returns, lengths = collector.pop_finished_episodes()
    assert len(lengths) == collector.episodes
    assert returns == [float(n) for n in lengths]  # CartPole pays +1 per real step
    ended = buf.terminated | buf.truncated
    # real rows after each lane's last episode end belong to the running episode
    running = 0
    for lane in range(3):
        ends = np.flatnonzero(ended[:, lane])
        first_running_row = ends[-1] + 2 if ends.size else 0  # after the end and its reset row
        running += max(0, vector_steps - first_running_row)
    assert sum(lengths) == collector.env_steps - running
    assert collector.pop_finished_episodes() == ([], [])


def test_sampled_cartpole_transitions_are_physical_steps(cartpole_run) -> None:
    buf, _, _ = cartpole_run
    batch = buf.sample(5000, n_step=1)
    assert (batch.n_steps == 1).all()
    obs, nxt = batch.obs, batch.next_obs
    # never a reset jump: the cart moves by tau * x_dot (|x_dot| < 5 here) per step
    assert (np.abs(nxt[:, 0] - obs[:, 0]) < 0.1).all()
    # exactly one Euler step of the positions, for terminated and running transitions alike
    np.testing.assert_allclose(nxt[:, 0], obs[:, 0] + TAU * obs[:, 1], atol=1e-5)
    np.testing.assert_allclose(nxt[:, 2], obs[:, 2] + TAU * obs[:, 3], atol=1e-5)
    np.testing.assert_array_equal(batch.rewards[:, 0], 1.0)
    # a terminated transition's next_obs is the true terminal state (outside the limits)
    term = batch.terminated == 1.0
    assert term.sum() > 50
    outside = (np.abs(nxt[:, 0]) > X_LIMIT) | (np.abs(nxt[:, 2]) > THETA_LIMIT)
    np.testing.assert_array_equal(outside, term)


def test_sampled_cartpole_windows_stop_at_the_episode_end(cartpole_run) -> None:
    buf, _, _ = cartpole_run
    batch = buf.sample(5000, n_step=3)
    k = batch.n_steps
    # no truncation within 700 steps of a random policy: a short window always terminated;
    # a full window terminated only if its third step ended the episode
    assert (batch.terminated[k < 3] == 1.0).all()
    assert 0 < (batch.terminated[k == 3] == 1.0).sum() < (k == 3).sum()
    # rewards: 1 for each real step, 0 after the end
    np.testing.assert_array_equal(batch.rewards, (np.arange(3) < k[:, None]).astype(np.float32))
    # a window bootstraps from the terminal state (outside the limits) iff it terminated
    nxt = batch.next_obs
    outside = (np.abs(nxt[:, 0]) > X_LIMIT) | (np.abs(nxt[:, 2]) > THETA_LIMIT)
    np.testing.assert_array_equal(outside, batch.terminated == 1.0)
