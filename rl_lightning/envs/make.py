"""Environment factory: every run's vector envs come from here."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

_REGISTERED = False


def register_envs() -> None:
    """Register this package's environments (and ALE's) with gymnasium, once."""
    global _REGISTERED
    if _REGISTERED:
        return
    gym.register(
        id="rl_lightning/Chain-v0",
        entry_point="rl_lightning.envs.chain:ChainEnv",
        max_episode_steps=20,
    )
    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:  # pragma: no cover - ale-py is a dependency, but keep envs usable
        pass
    _REGISTERED = True


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
    register_envs()
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
_DESCRIPTIVE_KEYS = ("obs_low", "obs_high")


def make_env_from_config(
    env_cfg: dict[str, Any], num_envs: int | None = None
) -> gym.vector.VectorEnv:
    """``make_vector_env`` from a plain ``env`` config dict, optionally with another lane count."""
    kwargs = {k: v for k, v in env_cfg.items() if k not in _DESCRIPTIVE_KEYS}
    if num_envs is not None:
        kwargs["num_envs"] = num_envs
    return make_vector_env(**kwargs)
