"""ReplayBuffer + UniformSampler: ring wrap-around, NEXT_STEP auto-reset rows, n-step windows,
the collector, and the sampler interface (state round trips, the priority-update hook).

The hand-made tests encode the identity of every row in its observation (and action, reward),
so a sampled transition can be matched exactly against a reference computed from a plain
Python description of the episodes, independent of the buffer's row layout.
"""

from __future__ import annotations

import io
import operator
from collections import Counter
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from rl_lightning.data import ReplayDataModule, ReplayDataset
from rl_lightning.data.buffer import ReplayBuffer, TransitionBatch
from rl_lightning.data.collector import VectorCollector
from rl_lightning.data.samplers import UniformSampler, sampler_class
from rl_lightning.envs import make_vector_env
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.exploration import Actor, EpsilonGreedy, LinearSchedule
from rl_lightning.losses import TDLoss
from rl_lightning.module import QLearningModule
from rl_lightning.networks import MLPQNetwork
from rl_lightning.target_updates import HardTargetUpdate

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
    buf = ReplayBuffer(capacity=8, num_envs=2, obs_shape=(1,))  # 4 rows per lane
    sampler = UniformSampler(seed=0)
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
    batch = sampler.sample(buf, 2000, 1)
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
    batch = sampler.sample(buf, 50, 3)
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


def sampled_windows(
    buf: ReplayBuffer, n: int, size: int, seed: int
) -> tuple[list[float], list[tuple]]:
    batch = UniformSampler(seed=seed).sample(buf, size, n)
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
    buf = ReplayBuffer(capacity=2 * rows_per_lane, num_envs=2, obs_shape=(1,))
    write_lanes(buf)
    expected = reference_windows(n, rows_per_lane)
    reset_obs = {
        state_id(lane, e, ep.length)
        for lane, eps in enumerate(LANES)
        for e, ep in enumerate(eps)
        if ep.end
    }
    starts, got = sampled_windows(buf, n, 5000, seed=n)
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
    buf = ReplayBuffer(capacity=2 * NUM_ROWS, num_envs=2, obs_shape=(1,))
    write_lanes(buf)
    starts, got = sampled_windows(buf, 3, 5000, seed=3)
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
    sampler = UniformSampler()
    if expected == 0:
        with pytest.raises(RuntimeError, match="collect more steps"):
            sampler.sample(buf, 4, n)
    else:
        batch = sampler.sample(buf, 400, n)
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
        UniformSampler().sample(buf, 1, 0)


# -- the real collector on CartPole ----------------------------------------------------------

TAU = 0.02  # CartPole's Euler step: x' = x + tau * x_dot, theta' = theta + tau * theta_dot
X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * np.pi / 360


@pytest.fixture(scope="module")
def cartpole_run() -> tuple[ReplayBuffer, VectorCollector, int]:
    env = gym.make_vec("CartPole-v1", 3)
    vector_steps = 700  # 2100 rows, about 90 random-policy episodes
    buf = ReplayBuffer(capacity=3 * vector_steps, num_envs=3, obs_shape=(4,))
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
    batch = UniformSampler(seed=0).sample(buf, 5000, 1)
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
    batch = UniformSampler(seed=1).sample(buf, 5000, 3)
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


# -- the sampler interface -------------------------------------------------------------------


def filled_buffer(
    num_envs: int = 2, rows_per_lane: int = 8, vector_steps: int = 20
) -> ReplayBuffer:
    """A wrapped buffer of ``lane_step`` rows: slot s holds observation 10 t + lane, so every
    sampled observation names the flat slot it came from."""
    buf = ReplayBuffer(capacity=num_envs * rows_per_lane, num_envs=num_envs, obs_shape=(1,))
    for t in range(vector_steps):
        buf.add(**lane_step(t, num_envs))
    return buf


def slots_of(buf: ReplayBuffer, obs: np.ndarray) -> np.ndarray:
    """The flat slots ``(t % rows) * N + lane`` of observations ``10 t + lane``."""
    t, lane = np.divmod(np.asarray(obs).reshape(-1).astype(np.int64), 10)
    return (t % buf.rows) * buf.num_envs + lane


def through_a_checkpoint_file(state: dict) -> dict:
    """Saved and loaded as Lightning checkpoints are resumed (``weights_only=True``)."""
    stream = io.BytesIO()
    torch.save(state, stream)
    stream.seek(0)
    return torch.load(stream, weights_only=True)


def assert_same_batches(a: TransitionBatch, b: TransitionBatch) -> None:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def test_uniform_sampler_state_round_trip() -> None:
    buf = filled_buffer()
    sampler = UniformSampler(seed=4)
    sampler.sample(buf, 32, 2)  # the generator has moved on
    state = through_a_checkpoint_file(sampler.state_dict())
    restored = UniformSampler(seed=99)
    restored.load_state_dict(state, buffer_restored=False)  # the generator is kept either way
    for _ in range(3):
        assert_same_batches(sampler.sample(buf, 64, 2), restored.sample(buf, 64, 2))
    assert not UniformSampler.online and not UniformSampler.needs_td_errors


def test_the_buffer_state_holds_the_storage_only() -> None:
    buf = filled_buffer()
    state = buf.state_dict(include_arrays=False)
    assert state == {"rows": 8, "num_envs": 2, "rows_written": 20}  # no generator, no counters
    other = filled_buffer(vector_steps=3)
    assert other.load_state_dict(state) is False  # emptied: refilled after a resume
    assert (other.rows_written, len(other)) == (0, 0)
    assert other.load_state_dict(buf.state_dict()) is True
    assert other.rows_written == 20
    np.testing.assert_array_equal(other.obs, buf.obs)


def test_the_datamodule_checkpoints_the_sampler_and_reads_the_old_layout() -> None:
    def datamodule(seed: int) -> ReplayDataModule:
        return ReplayDataModule(
            env=make_vector_env(id="CartPole-v1", num_envs=2),
            policy=lambda obs, step: np.zeros(len(obs), dtype=np.int64),
            capacity=100,
            seed=seed,
            batch_size=4,
            n_step=2,
            total_env_steps=1_000,
            learning_starts_env_steps=10,
            env_steps_per_update=1,
            updates_per_batch=1,
        )

    original = datamodule(seed=3)
    original.collector.collect(30)
    original.sampler.sample(original.buffer, 16, 2)
    state = original.state_dict()
    assert set(state["sampler"]) == {"rng"} and "rng" not in state["buffer"]
    # checkpoints written before the split kept the generator (and the online sampler's
    # consumed_until) in the buffer's state
    legacy = {**state, "buffer": {**state["buffer"], **state["sampler"], "consumed_until": 0}}
    del legacy["sampler"]
    for saved in (state, legacy):
        restored = datamodule(seed=5)
        restored.load_state_dict(through_a_checkpoint_file(saved))
        assert_same_batches(
            original.sampler.sample(original.buffer, 32, 2),
            restored.sampler.sample(restored.buffer, 32, 2),
        )
        original.sampler.load_state_dict(state["sampler"])  # the same draws again next time


class RecordingSampler(UniformSampler):
    """A stand-in for a prioritized sampler: its batches carry their flat slots and weights,
    and it records the ``update_priorities`` calls."""

    needs_td_errors = True

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.produced: list[np.ndarray] = []
        self.updates: list[tuple[np.ndarray, np.ndarray]] = []

    def sample(self, buffer: ReplayBuffer, batch_size: int, n_step: int) -> TransitionBatch:
        slots = self.draw(buffer, batch_size, n_step)
        self.produced.append(slots.copy())
        weights = np.linspace(0.5, 1.0, batch_size, dtype=np.float32)
        return buffer.gather_flat(slots, n_step)._replace(indices=slots, weights=weights)

    def update_priorities(self, indices, td_errors) -> None:
        self.updates.append((np.asarray(indices).copy(), np.asarray(td_errors).copy()))


class RowWriter:
    """Stands in for ``VectorCollector``: every vector step writes the next ``lane_step`` row."""

    def __init__(self, buf: ReplayBuffer) -> None:
        self.buf, self.num_envs, self.env_steps, self.t = buf, buf.num_envs, 0, 0

    def collect(self, vector_steps: int) -> None:
        for _ in range(vector_steps):
            self.buf.add(**lane_step(self.t, self.num_envs))
            self.t += 1
            self.env_steps += self.num_envs


@pytest.mark.parametrize("interleaved", [False, True])
def test_update_priorities_receives_the_indices_of_the_batch_it_produced(interleaved) -> None:
    k, b = 3, 5
    buf = ReplayBuffer(capacity=2 * 16, num_envs=2, obs_shape=(1,))
    sampler = RecordingSampler(seed=2)
    dataset = ReplayDataset(
        collector=RowWriter(buf),  # type: ignore[arg-type]
        buffer=buf,
        sampler=sampler,
        batch_size=b,
        n_step=2,
        total_env_steps=200,
        learning_starts_env_steps=20,
        env_steps_per_update=2,
        updates_per_batch=k,
        interleaved=interleaved,
    )
    hook = sampler.td_errors_hook()  # the module's on_td_errors
    assert hook is not None
    minibatches = 0
    for item in dataset:  # what QLearningModule.learn does with each item, then the hook
        parts = item if interleaved else (item.map(operator.itemgetter(j)) for j in range(k))
        for minibatch in parts:
            assert minibatch.indices.shape == minibatch.weights.shape == (b,)
            td_errors = minibatch.weights * 2.0  # any per-sample values
            hook(minibatch, td_errors)
            # the slots handed back are those the minibatch's transitions start at
            slots = slots_of(buf, minibatch.obs)
            np.testing.assert_array_equal(sampler.updates[-1][0], slots)
            np.testing.assert_array_equal(sampler.updates[-1][1], td_errors)
            minibatches += 1
    produced = np.concatenate(sampler.produced)
    np.testing.assert_array_equal(np.concatenate([u[0] for u in sampler.updates]), produced)
    assert minibatches == len(sampler.updates) > 10


@pytest.mark.filterwarnings("ignore")
def test_the_module_hands_each_minibatchs_td_errors_to_the_sampler() -> None:
    torch.manual_seed(0)
    net = MLPQNetwork(obs_shape=[4], num_actions=2, hidden_sizes=[16])
    exploration = EpsilonGreedy(schedule=LinearSchedule(start=1.0, end=0.1, duration_env_steps=100))
    sampler = RecordingSampler(seed=0)
    module = QLearningModule(
        loss=TDLoss(
            q_network=net,
            estimator=QLearning(),
            loss=nn.MSELoss(),
            gamma=0.9,
            exploration=exploration,
        ),
        target_update=HardTargetUpdate(every_updates=3),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        on_td_errors=sampler.td_errors_hook(),
    )
    datamodule = ReplayDataModule(
        env=make_vector_env(id="CartPole-v1", num_envs=2),
        policy=Actor(net, exploration, seed=0),
        capacity=400,
        seed=0,
        sampler=sampler,
        batch_size=8,
        n_step=1,
        total_env_steps=200,
        learning_starts_env_steps=40,
        env_steps_per_update=2,
        updates_per_batch=4,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        logger=False,
    )
    trainer.fit(module, datamodule=datamodule)
    assert module.updates == len(sampler.updates) == 4 * len(sampler.produced) > 0
    produced = np.concatenate(sampler.produced)
    np.testing.assert_array_equal(np.concatenate([u[0] for u in sampler.updates]), produced)
    td_errors = np.concatenate([u[1] for u in sampler.updates])
    assert td_errors.shape == produced.shape and np.isfinite(td_errors).all()
    assert (td_errors != 0).any()


def test_default_batches_carry_no_indices() -> None:
    buf = filled_buffer()
    sampler = UniformSampler()
    assert sampler.td_errors_hook() is None  # the module computes no per-sample TD errors
    batch = sampler.sample(buf, 8, 1)
    assert batch.indices is None and batch.weights is None
    tensors = batch.map(torch.from_numpy, env_steps=7)
    assert tensors.env_steps == 7 and tensors.indices is None and tensors.weights is None
    assert isinstance(tensors.obs, torch.Tensor)
    # with indices and weights, map applies to them as to every array field
    full = batch._replace(indices=np.arange(8), weights=np.ones(8, dtype=np.float32))
    first = full.map(lambda x: x[:2])
    assert first.indices.tolist() == [0, 1] and first.weights.shape == (2,)
    assert first.env_steps == 0 and first.obs.shape == (2, 1)


def test_sampler_class_reads_the_config_target() -> None:
    assert sampler_class("rl_lightning.data.UniformSampler") is UniformSampler
    assert sampler_class("rl_lightning.data.OnlineSampler").online
    with pytest.raises(ValueError, match="not an importable class"):
        sampler_class("rl_lightning.data.NoSuchSampler")
    with pytest.raises(ValueError, match="not a sampler"):
        sampler_class("rl_lightning.data.ReplayBuffer")
