"""Bad values fail before anything is built, with the key, the value and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rl_lightning.summary import read_summary
from rl_lightning.validation import ConfigError, env_id_problem, validate_config

CASES = [
    (["gamma=1.5"], "gamma=1.5: must be in [0, 1]"),
    (["estimator.n_step=0"], "estimator.n_step=0: must be >= 1"),
    (["optim.lr=-0.001"], "optim.lr=-0.001: must be > 0"),
    (["buffer.capacity=10"], "buffer.capacity=10: must be >= batch_size=64 (one batch must fit)"),
    (
        ["buffer.capacity=64", "batch_size=64", "env.num_envs=32"],
        "buffer.capacity=64: must be >= env.num_envs * (estimator.n_step + 2) = 96",
    ),
    (["total_env_steps=0"], "total_env_steps=0: must be > 0"),
    (["env_steps_per_update=0"], "env_steps_per_update=0.0: must be > 0"),
    (["lr_end_factor=2"], "lr_end_factor=2.0: must be in [0, 1]"),
    (["max_grad_norm=-1"], "max_grad_norm=-1.0: must be > 0, or null for no clipping"),
    (
        ["logger.mode=sometimes"],
        "logger.mode='sometimes': must be one of offline, online, disabled",
    ),
    (["eval.episodes=0"], "eval.episodes=0: must be >= 1"),
    (["env.id=CartPole-v2"], "did you mean CartPole-v1"),
    (["env.id=MountainCar-v1"], "did you mean MountainCar-v0"),
    # keys added with `+` pass Hydra (it rejects unknown keys only without it)
    (["+foo=1"], "foo=1 is an unknown key: allowed keys are arch, batch_size,"),
    (["+env.num_env=8"], "env.num_env=8 is an unknown key: allowed keys are clip_rewards,"),
    (["+env.num_env=8"], "(did you mean num_envs?)"),
    (
        ["+estimator.nstep=3"],
        "estimator.nstep=3 is not a parameter of "
        "rl_lightning.estimators.double_q.DoubleQLearning: allowed keys are n_step (did you mean "
        "n_step?)",
    ),
    (
        ["+optim.learning_rate=0.1"],
        "optim.learning_rate=0.1 is not a parameter of torch.optim.Adam",
    ),
    # component groups are untyped in the schema: a wrong type fails the range check
    (["estimator.n_step=abc"], "estimator.n_step='abc': must be >= 1"),
    (["optim.lr=fast"], "optim.lr='fast': must be > 0"),
    # a continuous action space for a discrete-action method, before any env is built for training
    (
        ["env.id=Pendulum-v1"],
        "env.id='Pendulum-v1' has the action space Box(-2.0, 2.0, (1,), float32), and "
        "DQN-family methods need a discrete one (gymnasium.spaces.Discrete)",
    ),
    (["env.id=MountainCarContinuous-v0"], "Box(-1.0, 1.0, (1,), float32)"),
    # Munchausen's soft value is no average of Q over actions: no distributional form
    (
        ["arch/head=distributional", "estimator=munchausen"],
        "has no distributional form for arch/head=CategoricalHead (a distributional head); use "
        "estimator=q_learning|double_q|sarsa|expected_sarsa",
    ),
    (
        ["arch/head=distributional", "env.reward_range=null"],
        "arch.head.v_min=null takes the support from env.reward_range, which is null",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), CASES)
def test_bad_values_name_key_value_and_range(compose_config, overrides, message) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(compose_config(overrides))
    assert message in str(info.value)


def test_every_problem_is_listed_at_once(compose_config) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(compose_config(["gamma=2", "estimator.n_step=0"]))
    assert "gamma=2.0" in str(info.value) and "estimator.n_step=0" in str(info.value)


def test_the_defaults_and_presets_are_valid(compose_config) -> None:
    for overrides in (
        [],
        ["experiment=acrobot_dqn"],
        ["experiment=mountaincar_dqn"],
        ["buffer=online"],
        ["arch/head=distributional", "estimator=expected_sarsa"],
    ):
        validate_config(compose_config(overrides))


def test_unknown_env_without_close_match() -> None:
    assert (
        env_id_problem("Zzzzzzzzzz-v9")
        == "env.id='Zzzzzzzzzz-v9' is not a registered gymnasium environment"
    )
    assert env_id_problem("CartPole-v1") is None


def test_rl_train_exits_2_with_the_message_and_a_failed_summary(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "rl_lightning.train", "gamma=7", f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "gamma=7.0: must be in [0, 1]" in proc.stderr
    assert "Traceback" not in proc.stderr
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and "gamma=7.0" in summary["error"]


def test_minatar_without_its_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import gymnasium as gym

    from rl_lightning import validation

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "minatar" else real(name, *a)
    )
    monkeypatch.setattr(validation, "register_envs", lambda env_id=None: None)
    monkeypatch.delitem(gym.registry, "MinAtar/Breakout-v1", raising=False)
    assert validation.env_id_problem("MinAtar/Breakout-v1") == (
        "env.id='MinAtar/Breakout-v1' needs MinAtar: pip install 'rl-lightning[minatar]'"
    )
