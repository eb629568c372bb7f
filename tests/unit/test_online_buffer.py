"""Learning without replay: ``OnlineSampler``, ``buffer_capacity`` for ``buffer=online``, the
online ``ReplayDataset`` stream, and the on-policy replay warning.

Hand-made lanes encode (lane, row) in the observation, 100 * lane + row, so every returned
transition names its own start row.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rl_lightning.builders import buffer_capacity
from rl_lightning.data import (
    OnlineSampler,
    ReplayBuffer,
    ReplayDataModule,
    ReplayDataset,
    VectorCollector,
)
from rl_lightning.envs import make_vector_env
from rl_lightning.validation import on_policy_replay_warning

# Two lanes, 9 rows. Flags: T terminated, U truncated, R auto-reset row (not a transition).
#   row:    0  1  2  3  4  5  6  7  8
#   lane 0: .  T  R  .  .  U  R  .  .
#   lane 1: .  .  .  T  R  .  .  .  .
TERMINATED = {(0, 1), (1, 3)}
TRUNCATED = {(0, 5)}
RESETS = {(0, 2), (0, 6), (1, 4)}
NUM_ROWS = 9


def add_row(buf: ReplayBuffer, row: int) -> None:
    lanes = range(buf.num_envs)
    buf.add(
        np.array([[100.0 * lane + row] for lane in lanes], dtype=np.float32),
        np.array([row % 2 for _ in lanes], dtype=np.int64),
        np.array([1.0 + row + 10 * lane for lane in lanes], dtype=np.float32),
        np.array([(lane, row) in TERMINATED for lane in lanes]),
        np.array([(lane, row) in TRUNCATED for lane in lanes]),
        np.array([(lane, row) in RESETS for lane in lanes]),
    )


def take_new(sampler: OnlineSampler, buf: ReplayBuffer, n: int):
    """The online sampler's next batch (``batch_size`` does not apply)."""
    return sampler.sample(buf, 0, n)


def starts_of(batch) -> list[int]:
    return [int(x) for x in batch.obs[:, 0]]


def real_starts(n: int, rows_written: int) -> list[int]:
    """Reference: every real (lane, row) whose rows row .. row + n are written, row-major."""
    return [
        100 * lane + row
        for row in range(rows_written - n)
        for lane in range(2)
        if (lane, row) not in RESETS
    ]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        # n = 1: rows_written w -> the newest complete start row is w - 2
        (
            1,
            [
                None,  # w=1: row 0 has no successor yet
                [0, 100],  # w=2: row 0 of both lanes
                [1, 101],  # w=3
                [102],  # w=4: row 2 of lane 0 is an auto-reset row, skipped
                [3, 103],  # w=5
                [4],  # w=6: row 4 of lane 1 is an auto-reset row
                [5, 105],  # w=7
                [106],  # w=8: row 6 of lane 0 is an auto-reset row
                [7, 107],  # w=9 (row 8 waits for row 9)
            ],
        ),
        # n = 3: a window needs rows t .. t + 3, the newest complete start row is w - 4
        (
            3,
            [None, None, None, [0, 100], [1, 101], [102], [3, 103], [4], [5, 105]],
        ),
    ],
)
def test_take_new_after_every_step_by_hand(n: int, expected: list) -> None:
    buf, sampler = ReplayBuffer(capacity=2 * NUM_ROWS, num_envs=2, obs_shape=(1,)), OnlineSampler()
    got = []
    for row in range(NUM_ROWS):
        add_row(buf, row)
        batch = take_new(sampler, buf, n)
        got.append(None if batch is None else starts_of(batch))
    assert got == expected
    assert take_new(sampler, buf, n) is None  # nothing new since the last call
    flat = [s for part in got if part for s in part]
    assert flat == real_starts(n, NUM_ROWS)  # each real transition once, in time order


@pytest.mark.parametrize("n", [1, 2, 3])
def test_take_new_once_at_the_end_returns_everything_in_time_order(n: int) -> None:
    buf, sampler = ReplayBuffer(capacity=2 * NUM_ROWS, num_envs=2, obs_shape=(1,)), OnlineSampler()
    for row in range(NUM_ROWS):
        add_row(buf, row)
    batch = take_new(sampler, buf, n)
    assert starts_of(batch) == real_starts(n, NUM_ROWS)
    assert take_new(sampler, buf, n) is None


def test_take_new_windows_are_the_sampled_windows() -> None:
    # the online batch holds the same n-step windows gather_flat builds for replay
    buf = ReplayBuffer(capacity=2 * NUM_ROWS, num_envs=2, obs_shape=(1,))
    for row in range(NUM_ROWS):
        add_row(buf, row)
    batch = take_new(OnlineSampler(), buf, 3)
    by_start = {
        s: (r.tolist(), int(k), float(d), float(o2[0]), int(a2))
        for s, r, k, d, o2, a2 in zip(
            starts_of(batch),
            batch.rewards,
            batch.n_steps,
            batch.terminated,
            batch.next_obs,
            batch.next_actions,
            strict=True,
        )
    }
    # reward of (lane, row) = 1 + row + 10 lane; (rewards, k, terminated, next obs, next action)
    assert by_start[0] == ([1.0, 2.0, 0.0], 2, 1.0, 2.0, 0)  # terminates at row 1: s' = row 2
    assert by_start[3] == ([4.0, 5.0, 6.0], 3, 0.0, 6.0, 0)  # truncated on step 3: s' = reset row
    assert by_start[4] == ([5.0, 6.0, 0.0], 2, 0.0, 6.0, 0)  # truncated on step 2
    assert by_start[5] == ([6.0, 0.0, 0.0], 1, 0.0, 6.0, 0)
    assert by_start[101] == ([12.0, 13.0, 14.0], 3, 1.0, 104.0, 0)  # terminates on step 3
    assert by_start[105] == ([16.0, 17.0, 18.0], 3, 0.0, 108.0, 0)
    assert len(by_start) == len(real_starts(3, NUM_ROWS)) == 10


@pytest.mark.parametrize("n", [1, 3])
def test_take_new_every_step_through_a_small_ring(n: int) -> None:
    # n + 2 rows per lane: the ring wraps many times, nothing is lost when polled every step
    buf = ReplayBuffer(capacity=2 * (n + 2), num_envs=2, obs_shape=(1,))
    sampler = OnlineSampler()
    got: list[int] = []
    for row in range(NUM_ROWS):
        add_row(buf, row)
        batch = take_new(sampler, buf, n)
        if batch is not None:
            got += starts_of(batch)
            np.testing.assert_array_equal(batch.n_steps <= n, True)
    assert buf.rows_written > buf.rows
    assert got == real_starts(n, NUM_ROWS)


def test_take_new_returns_none_when_only_reset_rows_are_new() -> None:
    # one lane: row 0 terminates, row 1 is its auto-reset row, rows 2, 3 are real
    buf, sampler = ReplayBuffer(capacity=10, num_envs=1, obs_shape=(1,)), OnlineSampler()
    flags = [(True, False), (False, True), (False, False), (False, False)]  # (terminated, reset)
    results = []
    for row, (term, reset) in enumerate(flags):
        buf.add(
            np.array([[float(row)]], dtype=np.float32),
            np.array([0]),
            np.array([1.0], dtype=np.float32),
            np.array([term]),
            np.array([False]),
            np.array([reset]),
        )
        batch = take_new(sampler, buf, 1)
        results.append(None if batch is None else starts_of(batch))
    # w=1: nothing; w=2: row 0; w=3: row 1 is a reset row -> None (and consumed); w=4: row 2
    assert results == [None, [0], None, [2]]
    assert sampler.consumed_until == 3


def test_online_sampler_state_round_trip() -> None:
    buf, sampler = ReplayBuffer(capacity=2 * NUM_ROWS, num_envs=2, obs_shape=(1,)), OnlineSampler()
    for row in range(5):
        add_row(buf, row)
    assert starts_of(take_new(sampler, buf, 1)) == real_starts(1, 5)
    state = sampler.state_dict()
    assert state == {"consumed_until": 4}
    restored = OnlineSampler(seed=3)  # the seed is unused: the order is deterministic
    restored.load_state_dict(state)
    for row in range(5, NUM_ROWS):
        add_row(buf, row)
    rest = [s for s in real_starts(1, NUM_ROWS) if s % 100 >= 4]
    assert starts_of(take_new(sampler, buf, 1)) == starts_of(take_new(restored, buf, 1)) == rest
    # without the buffer's contents the consumption restarts with the refilled buffer
    restored.load_state_dict(state, buffer_restored=False)
    assert restored.consumed_until == 0
    assert OnlineSampler.online and not OnlineSampler.needs_td_errors


# -- buffer_capacity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_envs", "per_update", "n", "expected"),
    [
        # num_envs * (2 * ceil(per_update / num_envs) + 1 + n + 2): a rollout of E real steps
        # spans up to 2 * ceil(E / N) + 1 rows per lane (one auto-reset row per episode end)
        (4, 16, 1, 48),  # 4 * (2 * 4 + 1 + 1 + 2)
        (4, 16, 3, 56),  # 4 * (9 + 3 + 2)
        (4, 2, 1, 24),  # ceil(0.5) = 1 -> 4 * (3 + 1 + 2)
        (4, 10, 1, 40),  # ceil(2.5) = 3 -> 4 * (7 + 1 + 2)
        (16, 16, 1, 96),  # 16 * (3 + 1 + 2)
        (1, 1, 5, 10),  # 1 * (3 + 5 + 2)
    ],
)
def test_online_buffer_capacity(compose_config, num_envs, per_update, n, expected) -> None:
    cfg = compose_config(
        ["buffer=online", f"env.num_envs={num_envs}", f"env_steps_per_update={per_update}"]
    )
    assert cfg.buffer.capacity is None  # derived, never written
    assert buffer_capacity(cfg, n) == expected


def test_replay_buffer_capacity_is_the_configured_one(compose_config) -> None:
    cfg = compose_config(["buffer=replay", "buffer.capacity=5000"])
    assert buffer_capacity(cfg, 1) == buffer_capacity(cfg, 3) == 5000
    with pytest.raises(ValueError, match="not an importable class"):
        buffer_capacity(compose_config(["buffer.sampler._target_=rl_lightning.data.Nope"]), 1)
    with pytest.raises(ValueError, match="not a sampler"):
        buffer_capacity(
            compose_config(["buffer.sampler._target_=rl_lightning.data.ReplayBuffer"]), 1
        )


# -- the online stream (ReplayDataset with an OnlineSampler) on the real collector -----------


def online_stream(num_states: int, num_envs: int, per_update: int, n: int, total: int):
    """Run the online stream on the chain with an always-right policy; return
    (real transitions used by the updates, real transitions whose n-step window completed)."""
    env = make_vector_env(
        id="rl_lightning/Chain-v0",
        num_envs=num_envs,
        vectorization_mode="sync",
        kwargs={"num_states": num_states},
    )
    cfg = OmegaConf.create(
        {
            "buffer": {"sampler": {"_target_": "rl_lightning.data.OnlineSampler"}},
            "env": {"num_envs": num_envs},
            "env_steps_per_update": per_update,
        }
    )
    buf = ReplayBuffer(capacity=buffer_capacity(cfg, n), num_envs=num_envs, obs_shape=(num_states,))
    real_rows: list[int] = []  # real lanes of every row written
    add = buf.add

    def recording_add(*args) -> None:
        real_rows.append(int((~np.asarray(args[5])).sum()))
        add(*args)

    buf.add = recording_add  # type: ignore[method-assign]
    collector = VectorCollector(
        env, lambda obs, step: np.ones(obs.shape[0], dtype=np.int64), buf, seed=0
    )
    dataset = ReplayDataset(
        collector=collector,
        buffer=buf,
        sampler=OnlineSampler(),
        batch_size=1,
        n_step=n,
        total_env_steps=total,
        learning_starts_env_steps=0,
        env_steps_per_update=per_update,
        updates_per_batch=1,
    )
    used = 0
    for item in dataset:
        assert item.actions.shape[0] == 1  # one update per item
        used += int(item.actions.shape[1])
    env.close()
    completed = sum(real_rows[: len(real_rows) - n])  # the last n rows start no full window
    return used, completed


def test_online_stream_uses_every_transition_once() -> None:
    # 2-state chain, always right: every episode is one step, so rows alternate real / reset.
    # 4 lanes, 4 env steps per update: rollout = 1 vector step, plus a reset row -> 2 rows per
    # update, within the buffer's 1 + n + 2 = 4 rows per lane
    used, completed = online_stream(num_states=2, num_envs=4, per_update=4, n=1, total=400)
    assert used == completed == 400


def test_online_stream_with_frequent_episode_ends_uses_every_transition_once() -> None:
    # the same chain with 16 env steps per update: rollout_rows = 4, 7 rows per lane, but
    # 16 real steps take 8 alternating rows -> windows are overwritten before they are taken
    used, completed = online_stream(num_states=2, num_envs=4, per_update=16, n=1, total=400)
    assert used == completed


def test_online_stream_continues_identically_after_a_checkpoint() -> None:
    def datamodule() -> ReplayDataModule:
        return ReplayDataModule(
            env=make_vector_env(id="CartPole-v1", num_envs=4),
            policy=lambda obs, step: (obs[:, 2] > 0).astype(np.int64),  # deterministic
            capacity=4 * (2 * 2 + 1 + 2 + 2),  # buffer_capacity: one rollout of 8 + the window
            seed=0,
            sampler=OnlineSampler(),
            batch_size=1,
            n_step=2,
            total_env_steps=600,
            learning_starts_env_steps=16,
            env_steps_per_update=8,
            updates_per_batch=1,
        )

    original = datamodule()
    stream = iter(original.dataset)
    for _ in range(20):
        next(stream)
    state = original.state_dict()
    assert state["sampler"]["consumed_until"] > 0
    buffer = io.BytesIO()
    torch.save(state, buffer)  # as Lightning saves and resumes it
    buffer.seek(0)
    restored = datamodule()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    items = 0
    for a, b in zip(stream, restored.dataset, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        items += 1
    assert items > 20


# -- the on-policy replay warning ------------------------------------------------------------


def warning_for(compose_config, overrides: list[str]) -> str | None:
    cfg = compose_config(overrides)
    return on_policy_replay_warning(cfg, instantiate(cfg.estimator))


# default: replay capacity 100_000, a burst = updates_per_batch 128 * env_steps_per_update 2
# = 256 env steps; the warning fires above 4 * 256 = 1024
@pytest.mark.parametrize(
    ("overrides", "what"),
    [
        (["estimator=sarsa"], "SARSA"),
        (["estimator=sarsa", "estimator.n_step=3"], "SARSA"),
        (["estimator=q_learning", "estimator.n_step=3"], "a 3-step return"),
        (["estimator=expected_sarsa", "estimator.n_step=2"], "a 2-step return"),
        (["estimator=double_q", "estimator.n_step=5"], "a 5-step return"),
        (["estimator=sarsa", "buffer.capacity=1025"], "SARSA"),  # just above 4 bursts
    ],
)
def test_on_policy_warning_fires(compose_config, overrides, what) -> None:
    message = warning_for(compose_config, overrides)
    assert message is not None
    assert message.startswith(what)
    assert "buffer=online" in message
    capacity = compose_config(overrides).buffer.capacity
    assert f"buffer.capacity={capacity}" in message
    assert "256 env steps" in message


@pytest.mark.parametrize(
    "overrides",
    [
        ["estimator=q_learning"],
        ["estimator=expected_sarsa"],
        ["estimator=double_q"],
        ["estimator=sarsa", "buffer=online"],
        ["estimator=q_learning", "estimator.n_step=3", "buffer=online"],
        ["estimator=sarsa", "buffer.capacity=1024"],  # 4 bursts: recent enough
        # a bigger burst (16 * 128 = 2048 env steps): 8192 is exactly 4 bursts
        ["estimator=sarsa", "buffer.capacity=8192", "env_steps_per_update=16"],
    ],
)
def test_on_policy_warning_stays_quiet(compose_config, overrides) -> None:
    assert warning_for(compose_config, overrides) is None
