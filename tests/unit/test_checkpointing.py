"""State round trips of the data side, signal flags, and where a resume starts."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from rl_lightning.checkpointing import (
    RESUME_KEY,
    SAVE_BUFFER_AUTO_LIMIT_BYTES,
    CheckpointError,
    buffer_checkpoint_choice,
    global_rng_states,
    periodic_checkpoint_name,
    set_global_rng_states,
)
from rl_lightning.data import ReplayDataModule, UniformSampler
from rl_lightning.data.buffer import ReplayBuffer
from rl_lightning.envs import make_vector_env
from rl_lightning.resume import checkpoints_newest_first, find_resume_point
from rl_lightning.signals import StopSignals


def random_policy(seed: int):
    rng = np.random.default_rng(seed)

    class Policy:
        def __call__(self, obs: np.ndarray, env_step: int) -> np.ndarray:
            return rng.integers(2, size=len(obs))

        def state_dict(self) -> dict:
            return {"rng": rng.bit_generator.state}

        def load_state_dict(self, state: dict) -> None:
            rng.bit_generator.state = state["rng"]

    return Policy()


def datamodule(env_id: str = "CartPole-v1", policy_seed: int = 0) -> ReplayDataModule:
    return ReplayDataModule(
        env=make_vector_env(id=env_id, num_envs=3),
        policy=random_policy(policy_seed),
        capacity=300,  # 100 rows per lane: wraps around within the test
        seed=7,
        batch_size=8,
        n_step=3,
        total_env_steps=10_000,
        learning_starts_env_steps=30,
        env_steps_per_update=1,
        updates_per_batch=2,
    )


def through_a_checkpoint_file(state: dict) -> dict:
    """What ``trainer.fit(ckpt_path=...)`` gives back: saved and loaded with weights_only."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])  # own / sync vector env
def test_data_side_continues_identically_after_a_round_trip(env_id: str) -> None:
    original = datamodule(env_id)
    original.collector.collect(250)  # wraps the buffer (100 rows per lane)
    state = through_a_checkpoint_file(original.state_dict())
    restored = datamodule(env_id, policy_seed=99)  # another actor seed: its state is restored
    restored.load_state_dict(state)
    for dm in (original, restored):
        dm.collector.collect(40)
    for name in ("obs", "actions", "rewards", "terminated", "truncated", "reset_step"):
        assert np.array_equal(getattr(original.buffer, name), getattr(restored.buffer, name))
    assert original.collector.env_steps == restored.collector.env_steps
    assert original.collector.episodes == restored.collector.episodes
    assert original.collector.pop_finished_episodes() == restored.collector.pop_finished_episodes()
    a = original.sampler.sample(original.buffer, 64, 3)
    b = restored.sampler.sample(restored.buffer, 64, 3)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)


def test_buffer_state_without_arrays_empties_it_and_keeps_the_generator() -> None:
    buffer = ReplayBuffer(capacity=40, num_envs=2, obs_shape=(3,))
    sampler = UniformSampler(seed=1)
    for t in range(30):
        buffer.add(np.full((2, 3), t), np.zeros(2), np.ones(2), *np.zeros((3, 2), dtype=bool))
    state = buffer.state_dict(include_arrays=False)
    assert "arrays" not in state
    other = ReplayBuffer(capacity=40, num_envs=2, obs_shape=(3,))
    assert other.load_state_dict(state) is False
    assert (len(other), other.rows_written) == (0, 0)
    other_sampler = UniformSampler(seed=5)  # the sampler's generator is kept without the arrays
    other_sampler.load_state_dict(sampler.state_dict(include_arrays=False), buffer_restored=False)
    assert np.array_equal(
        other_sampler.rng.integers(1000, size=5), sampler.rng.integers(1000, size=5)
    )
    with pytest.raises(ValueError, match="capacity and env.num_envs must not change"):
        ReplayBuffer(capacity=40, num_envs=4, obs_shape=(3,)).load_state_dict(state)
    assert buffer.nbytes == 20 * 2 * (3 * 4 + 8 + 4 + 3)


def test_without_env_state_the_episodes_in_progress_are_cut_by_truncation() -> None:
    original = datamodule()
    original.collector.collect(20)
    state = original.state_dict()
    state["collector"]["env"] = None  # what an env that cannot be pickled leaves
    restored = datamodule()
    restored.load_state_dict(through_a_checkpoint_file(state))
    buffer = restored.buffer
    last = (buffer.rows_written - 2) % buffer.rows  # the last real step before the stop
    cut = (buffer.rows_written - 1) % buffer.rows  # the added auto-reset row
    assert buffer.truncated[last].all() or (buffer.terminated[last] | buffer.truncated[last]).all()
    assert buffer.reset_step[cut].all()
    # the auto-reset row holds each lane's next observation: a truncated step bootstraps from it
    assert np.array_equal(buffer.obs[cut], original.collector._obs)
    restored.collector.collect(10)  # new episodes from a reset
    assert restored.collector.env_steps == original.collector.env_steps + 30
    batch = restored.sampler.sample(buffer, 256, 3)  # no window crosses the cut
    assert (batch.n_steps >= 1).all()


def test_stop_signals_only_record_the_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    stop = StopSignals()
    assert stop.signals == [signal.SIGTERM, signal.SIGINT]
    before = signal.getsignal(signal.SIGTERM)
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        assert not stop.requeue
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_slurm_requeue_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    stop = StopSignals()
    assert signal.SIGUSR1 in stop.signals
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
    finally:
        stop.restore()
    assert stop.signum == signal.SIGUSR1
    assert stop.requeue
    stop.signum = signal.SIGTERM  # scancel: stop, do not requeue
    assert not stop.requeue


def fake_checkpoint(path: Path, env_steps: int) -> None:
    """The sections ``read_checkpoint`` requires."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"env_steps": env_steps, "overrides": [], "wandb_id": None, "csv_rows": 0}
    torch.save(
        {"state_dict": {}, "loops": {}, "rl_lightning": {"config": {}}, RESUME_KEY: state}, path
    )


def test_resume_point_newest_first_and_slurm_auto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    checkpoints = tmp_path / "checkpoints"
    for steps in (900, 12_000, 3_000):
        fake_checkpoint(checkpoints / periodic_checkpoint_name(steps), steps)
    assert [p.name for p in checkpoints_newest_first(tmp_path)] == [
        "step-000000012000.ckpt",
        "step-000000003000.ckpt",
        "step-000000000900.ckpt",
    ]
    fake_checkpoint(checkpoints / "last.ckpt", 20_000)
    assert checkpoints_newest_first(tmp_path)[0].name == "last.ckpt"
    # no resume: a fresh start, unless under SLURM (a requeued job continues in its run dir)
    assert find_resume_point(None, tmp_path) is None
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    point = find_resume_point(None, tmp_path)
    assert point is not None
    assert (point.checkpoint.name, point.run_dir, point.state["env_steps"]) == (
        "last.ckpt",
        tmp_path,
        20_000,
    )
    assert find_resume_point(None, tmp_path / "elsewhere") is None  # nothing there: fresh
    assert find_resume_point("auto", tmp_path / "elsewhere") is None
    # a checkpoint file: its run dir is the one above checkpoints/
    point = find_resume_point(str(checkpoints / "step-000000003000.ckpt"), tmp_path / "new")
    assert point is not None and point.run_dir == tmp_path
    (checkpoints / "last.ckpt").write_bytes(b"")
    point = find_resume_point(str(tmp_path), tmp_path / "new")
    assert point is not None and point.checkpoint.name == "step-000000012000.ckpt"
    torch.save({"state_dict": {}}, checkpoints / "other.ckpt")
    with pytest.raises(CheckpointError, match="other.ckpt cannot resume a run: it has no loops"):
        find_resume_point(str(checkpoints / "other.ckpt"), tmp_path)


def test_buffer_checkpoint_choice() -> None:
    assert buffer_checkpoint_choice(None, online=False, nbytes=SAVE_BUFFER_AUTO_LIMIT_BYTES - 1)
    assert not buffer_checkpoint_choice(None, online=False, nbytes=SAVE_BUFFER_AUTO_LIMIT_BYTES)
    assert not buffer_checkpoint_choice(False, online=False, nbytes=10)
    assert buffer_checkpoint_choice(True, online=False, nbytes=10**12)
    assert buffer_checkpoint_choice(False, online=True, nbytes=10)  # one rollout: always


def test_global_generators_round_trip_through_a_checkpoint_file() -> None:
    import random

    state = through_a_checkpoint_file({"rng": global_rng_states()})["rng"]
    expected = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # noqa: NPY002
    set_global_rng_states(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected  # noqa: NPY002


def test_checkpoint_config_defaults_and_validation(compose_config) -> None:
    from rl_lightning.validation import ConfigError, validate_config

    cfg = compose_config([])
    assert (cfg.checkpoint.every_env_steps, cfg.checkpoint.keep_last) == (10_000, 2)
    assert cfg.checkpoint.save_buffer is None and cfg.resume is None
    validate_config(compose_config(["checkpoint.every_env_steps=null", "resume=auto"]))
    with pytest.raises(ConfigError) as err:
        validate_config(
            compose_config(["checkpoint.every_env_steps=-5", "checkpoint.keep_last=0", "resume=''"])
        )
    assert "checkpoint.every_env_steps=-5: must be >= 0" in str(err.value)
    assert "checkpoint.keep_last=0: must be >= 1" in str(err.value)
    assert "resume='': must be a run dir, a checkpoint file, auto, or null" in str(err.value)


def divergence_module(bad_updates: set[int], nan_parameter: bool = False):
    """A module after 300 updates (256 folded, 44 pending) whose statistics are NaN at
    ``bad_updates``; training steps of 128 updates ended at env steps 1000, 2000, 2500."""
    from torch import nn

    from rl_lightning.estimators.double_q import DoubleQLearning
    from rl_lightning.exploration import EpsilonGreedy, LinearSchedule
    from rl_lightning.losses import TDLoss
    from rl_lightning.module import QLearningModule
    from rl_lightning.networks import MLPQNetwork
    from rl_lightning.target_updates import HardTargetUpdate

    module = QLearningModule(
        loss=TDLoss(
            q_network=MLPQNetwork(obs_shape=[4], num_actions=2, hidden_sizes=[8]),
            estimator=DoubleQLearning(),
            loss=nn.MSELoss(),
            gamma=0.9,
            exploration=EpsilonGreedy(
                schedule=LinearSchedule(start=0.0, end=0.0, duration_env_steps=1)
            ),
        ),
        target_update=HardTargetUpdate(every_updates=1),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
    )
    for update in range(1, 301):
        module.updates = update
        q = torch.full((8,), float("nan") if update in bad_updates else 1.0)
        module.stats.add(((q - 0.5) ** 2).mean(), q, torch.zeros(8), torch.ones(()), update)
    module.stats.steps_since_check = [(128, 1000), (256, 2000), (300, 2500)]
    if nan_parameter:
        with torch.no_grad():
            next(module.q_network.parameters())[0, 0] = float("inf")
    return module


@pytest.mark.parametrize(
    ("bad", "nan_parameter", "expected"),
    [
        ({270}, False, (270, 2500)),  # among the pending updates
        ({100, 270}, False, (100, 1000)),  # found by a fold, on the device
        ({200}, False, (200, 2000)),
        (set(), True, (300, 2500)),  # only a parameter: the latest update
    ],
)
def test_check_finite_names_the_first_non_finite_update(
    bad: set[int], nan_parameter: bool, expected: tuple[int, int]
) -> None:
    from rl_lightning.module import TrainingDiverged

    module = divergence_module(bad, nan_parameter)
    with pytest.raises(TrainingDiverged) as err:
        module.check_finite()
    assert (err.value.update, err.value.env_steps, err.value.detected_at_update) == (*expected, 300)


def test_check_finite_leaves_the_pending_statistics_unfolded() -> None:
    module = divergence_module(set())
    assert module.stats.sums is not None
    sums = module.stats.sums.clone()
    module.check_finite()
    assert len(module.stats.pending) == 44 and torch.equal(module.stats.sums, sums)
    assert module.stats.first_nonfinite is None and module.stats.steps_since_check == []
