"""POMDP environments: hidden entries (``env.mask_indices``, ``env=cartpole_pomdp`` /
``acrobot_pomdp``), flicker (``env.flicker_p``), and the config checks of the new options."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

from rl_lightning.builders import make_env
from rl_lightning.envs import env_option_problems, make_vector_env
from rl_lightning.envs.wrappers import FLICKER_STREAM, FlickerObservation
from rl_lightning.validation import ConfigError, validate_config


class GridEnv(gym.Env):
    """A 2-D observation (for the 1-D-only check of ``stack_actions``)."""

    observation_space = gym.spaces.Box(0, 1, (2, 2), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros((2, 2), np.float32), {}

    def step(self, action):
        return np.zeros((2, 2), np.float32), 0.0, True, False, {}


gym.register(id="TestGrid-v0", entry_point=GridEnv)


def test_cartpole_pomdp_zeroes_the_velocities_like_the_rl_zoo(compose_config) -> None:
    cfg = compose_config(["env=cartpole_pomdp"])
    assert list(cfg.env.mask_indices) == [1, 3] and cfg.env.id == "CartPole-v1"
    masked, full = make_env(cfg), make_vector_env(id="CartPole-v1", num_envs=4)
    assert masked.single_observation_space == full.single_observation_space  # shape kept
    obs, ref = masked.reset(seed=7)[0], full.reset(seed=7)[0]
    for _ in range(30):
        assert (obs[:, [1, 3]] == 0).all()
        np.testing.assert_array_equal(obs[:, [0, 2]], ref[:, [0, 2]])
        assert (ref[:, [1, 3]] != 0).any()
        actions = np.array([0, 1, 1, 0])
        obs, ref = masked.step(actions)[0], full.step(actions)[0]


def test_acrobot_pomdp_zeroes_the_angular_velocities(compose_config) -> None:
    cfg = compose_config(["env=acrobot_pomdp"])
    env = make_env(cfg, 2)
    obs = env.reset(seed=0)[0]
    for _ in range(10):
        obs = env.step(np.array([0, 2]))[0]
        assert obs.shape == (2, 6) and (obs[:, 4:] == 0).all() and (obs[:, :4] != 0).all()


def test_flicker_blanks_whole_observations_with_the_seeded_draws() -> None:
    p, seed, lanes = 0.4, 11, 3
    env = make_vector_env(id="CartPole-v1", num_envs=lanes, flicker_p=p)
    ref = make_vector_env(id="CartPole-v1", num_envs=lanes)
    draws = np.random.default_rng([seed, FLICKER_STREAM])  # the generator, by hand
    obs, full = env.reset(seed=seed)[0], ref.reset(seed=seed)[0]
    blanks = 0
    for _ in range(50):
        blank = draws.random(lanes) < p
        np.testing.assert_array_equal(obs[blank], 0)
        np.testing.assert_array_equal(obs[~blank], full[~blank])
        blanks += int(blank.sum())
        actions = np.ones(lanes, dtype=np.int64)
        obs, full = env.step(actions)[0], ref.step(actions)[0]
    assert 30 < blanks < 90  # about 0.4 * 150
    # the same seed blanks the same steps; another seed others
    again = make_vector_env(id="CartPole-v1", num_envs=lanes, flicker_p=p)
    other = make_vector_env(id="CartPole-v1", num_envs=lanes, flicker_p=p)
    pattern = [(again.reset(seed=seed)[0] == 0).all(axis=1)]
    pattern_other = [(other.reset(seed=seed + 1)[0] == 0).all(axis=1)]
    for _ in range(20):
        pattern.append((again.step(np.ones(lanes, np.int64))[0] == 0).all(axis=1))
        pattern_other.append((other.step(np.ones(lanes, np.int64))[0] == 0).all(axis=1))
    first = draws_pattern(seed, p, lanes, 21)
    np.testing.assert_array_equal(np.array(pattern), first)
    assert not np.array_equal(np.array(pattern_other), first)


def draws_pattern(seed: int, p: float, lanes: int, steps: int) -> np.ndarray:
    rng = np.random.default_rng([seed, FLICKER_STREAM])
    return np.array([rng.random(lanes) < p for _ in range(steps)])


def test_flicker_refuses_p_of_one() -> None:
    with pytest.raises(ValueError, match=r"flicker_p must be in \[0, 1\)"):
        FlickerObservation(gym.make_vec("CartPole-v1", 1), p=1.0)


def test_bad_options_are_config_errors(compose_config) -> None:
    cfg = compose_config(
        [
            "env.frame_stack=0",
            "env.flicker_p=1.0",
            "env.frame_stack_padding=repeat",
            "env.mask_indices=[1,4]",
        ]
    )
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    text = str(err.value)
    assert "env.frame_stack=0: must be >= 1" in text
    assert "env.flicker_p=1.0: must be in [0, 1)" in text
    assert "env.frame_stack_padding='repeat': must be one of zeros, first" in text
    assert "env.mask_indices=[1, 4]: [4] outside the 4 entries of CartPole-v1" in text


def test_stack_actions_needs_one_dimensional_observations() -> None:
    problems = env_option_problems({"id": "TestGrid-v0", "stack_actions": True})
    assert problems == [
        "env.stack_actions=true: needs 1-D observations, and TestGrid-v0's have shape (2, 2); "
        "stack the observations alone (env.frame_stack=N)"
    ]
    assert env_option_problems({"id": "CartPole-v1", "stack_actions": True}) == []
    with pytest.raises(ValueError, match="stack_actions needs 1-D observations"):
        make_vector_env(id="TestGrid-v0", num_envs=1, vectorization_mode="sync", stack_actions=True)
    # frames of any shape stack without actions
    env = make_vector_env(id="TestGrid-v0", num_envs=2, vectorization_mode="sync", frame_stack=4)
    assert env.single_observation_space.shape == (4, 2, 2)


def test_the_new_keys_never_reach_gym_make(compose_config) -> None:
    cfg = compose_config(
        ["env=cartpole_pomdp", "env.frame_stack=4", "env.stack_actions=true", "env.flicker_p=0.1"]
    )
    validate_config(cfg)
    env = make_env(cfg, 2)
    assert env.single_observation_space.shape == (4 * (4 + 2),)


@pytest.mark.skipif(importlib.util.find_spec("popgym") is None, reason="popgym not installed")
def test_popgym_envs_are_registered_on_demand() -> None:
    env = make_vector_env(
        id="popgym-PositionOnlyCartPoleEasy-v0", num_envs=2, vectorization_mode="sync"
    )
    assert env.single_observation_space.shape == (2,)
    obs = env.reset(seed=0)[0]
    assert obs.shape == (2, 2)
