"""Environment factory: every run's vector envs come from here."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

_REGISTERED: set[str] = set()


def register_envs(env_id: str | None = None) -> None:
    """Register this package's environments with gymnasium, once; and ALE's (importing ale-py,
    about 0.1-0.2 s) only when ``env_id`` needs them -- an ``ALE/`` or ``*NoFrameskip`` id, or
    one gymnasium does not know yet (``None``: register everything)."""
    if "own" not in _REGISTERED:
        gym.register(
            id="rl_lightning/Chain-v0",
            entry_point="rl_lightning.envs.chain:ChainEnv",
            max_episode_steps=20,
        )
        _REGISTERED.add("own")
    if "ale" in _REGISTERED or (env_id is not None and env_id in gym.registry):
        return
    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:  # pragma: no cover - ale-py is a dependency, but keep envs usable
        pass
    _REGISTERED.add("ale")


def make_vector_env(
    *,
    id: str,
    num_envs: int,
    vectorization_mode: str | None = None,
    max_episode_steps: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> gym.vector.VectorEnv:
    """A gymnasium vector env with ``num_envs`` lanes and NEXT_STEP auto-reset.

    ``vectorization_mode=None`` takes the env's own vectorised implementation when it has one
    (CartPole's is much faster than a loop of single envs), else ``sync``.
    """
    register_envs(id)
    kw = dict(kwargs or {})
    if max_episode_steps is not None:
        kw["max_episode_steps"] = max_episode_steps
    env = gym.make_vec(id, num_envs=num_envs, vectorization_mode=vectorization_mode, **kw)
    if not isinstance(env.single_action_space, gym.spaces.Discrete):
        raise ValueError(
            f"env {id!r} has action space {env.single_action_space}; value-based methods here "
            "need a Discrete action space"
        )
    return env


#: keys of the ``env`` config node that describe the observations, not how to build the env
_DESCRIPTIVE_KEYS = ("obs_low", "obs_high", "reward_range")


def make_env_from_config(
    env_cfg: dict[str, Any], num_envs: int | None = None
) -> gym.vector.VectorEnv:
    """``make_vector_env`` from a plain ``env`` config dict, optionally with another lane count."""
    kwargs = {k: v for k, v in env_cfg.items() if k not in _DESCRIPTIVE_KEYS}
    if num_envs is not None:
        kwargs["num_envs"] = num_envs
    return make_vector_env(**kwargs)
