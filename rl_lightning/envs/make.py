"""Environment factory: every run's vector envs come from here."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from rl_lightning.envs.signals import wrap_learning_signals
from rl_lightning.envs.wrappers import PADDINGS, wrap_observations

#: ``env.suite`` values: how the base vector env is built
SUITES = ("gymnasium", "atari")

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
    if env_id is not None and env_id.startswith("popgym-") and env_id not in gym.registry:
        with contextlib.suppress(ImportError):  # POPGym (optional) registers them on import
            import popgym  # noqa: F401
    if env_id is not None and env_id.startswith("MinAtar/") and env_id not in gym.registry:
        with contextlib.suppress(ImportError):  # gymnasium 1.x ignores MinAtar's entry point
            import minatar.gym

            minatar.gym.register_envs()
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
    suite: str = "gymnasium",
    game: str | None = None,
    protocol: str | None = None,
    clip_rewards: bool | None = None,
    life_loss_terminal: bool | None = None,
    mask_indices: list[int] | None = None,
    flicker_p: float = 0.0,
    frame_stack: int = 1,
    frame_stack_padding: str = "zeros",
    stack_actions: bool = False,
) -> gym.vector.VectorEnv:
    """A gymnasium vector env with ``num_envs`` lanes and NEXT_STEP auto-reset.

    ``suite="gymnasium"``: ``gym.make_vec(id)``; ``vectorization_mode=None`` takes the env's own
    vectorised implementation when it has one (CartPole's is much faster than a loop of single
    envs), else ``sync``. ``suite="atari"``: ``game`` under ``protocol``
    (``rl_lightning.envs.atari``; ``id``, ``ALE/<Game>-v5``, is what its gymnasium backends make). What the learner sees:
    ``clip_rewards`` and ``life_loss_terminal`` (None: the Atari protocol's, else off;
    ``rl_lightning.envs.signals``). The partial-
    observability options (``rl_lightning/envs/wrappers.py``, applied in this order):
    ``mask_indices`` zeroes those entries of every observation, ``flicker_p`` blanks a lane's
    whole observation with that probability per step, ``frame_stack`` = N > 1 (or
    ``stack_actions``) shows each lane its last N observations ``(N, *obs_shape)``, padded with
    ``frame_stack_padding`` before the episode's start (with ``stack_actions``, 1-D observations
    only: one flat vector of ``N * (obs_dim + num_actions)`` with the one-hot actions).
    """
    if suite == "atari":
        from rl_lightning.envs.atari import make_atari_vector_env, protocol_of

        if game is None or protocol is None:
            raise ValueError("env.suite=atari needs env.game and env.protocol")
        env = make_atari_vector_env(
            env_id=id,
            game=game,
            protocol=protocol,
            num_envs=num_envs,
            vectorization_mode=vectorization_mode,
            max_episode_steps=max_episode_steps,
            kwargs=kwargs,
        )
        settings = protocol_of(protocol)
        clip_rewards = settings.clip_rewards if clip_rewards is None else clip_rewards
        if life_loss_terminal is None:
            life_loss_terminal = settings.life_loss_terminal
    elif suite == "gymnasium":
        register_envs(id)
        kw = dict(kwargs or {})
        if max_episode_steps is not None:
            kw["max_episode_steps"] = max_episode_steps
        env = gym.make_vec(id, num_envs=num_envs, vectorization_mode=vectorization_mode, **kw)
    else:
        raise ValueError(f"env.suite={suite!r}: must be one of {', '.join(SUITES)}")
    if not isinstance(env.single_action_space, gym.spaces.Discrete):
        raise ValueError(
            f"env {id!r} has action space {env.single_action_space}; value-based methods here "
            "need a Discrete action space"
        )
    env = wrap_learning_signals(
        env, clip_rewards=bool(clip_rewards), life_loss_terminal=bool(life_loss_terminal)
    )
    return wrap_observations(
        env,
        mask_indices=mask_indices,
        flicker_p=flicker_p,
        frame_stack=frame_stack,
        frame_stack_padding=frame_stack_padding,
        stack_actions=stack_actions,
    )


#: keys of the ``env`` config node that describe the observations, not how to build the env
_DESCRIPTIVE_KEYS = ("obs_low", "obs_high", "reward_range")
#: the partial-observability options (``wrap_observations``), applied on top of the suite's env
_OBSERVATION_KEYS = (
    "mask_indices",
    "flicker_p",
    "frame_stack",
    "frame_stack_padding",
    "stack_actions",
)


def make_env_from_config(
    env_cfg: dict[str, Any], num_envs: int | None = None
) -> gym.vector.VectorEnv:
    """``make_vector_env`` from a plain ``env`` config dict, optionally with another lane count."""
    kwargs = {k: v for k, v in env_cfg.items() if k not in _DESCRIPTIVE_KEYS}
    if num_envs is not None:
        kwargs["num_envs"] = num_envs
    return make_vector_env(**kwargs)


def env_option_problems(env_cfg: Mapping[str, Any]) -> list[str]:
    """One message per bad partial-observability option of an ``env`` config node (for
    ``validation.validate_config``). The env is made once (one lane, without these options), to
    read the observation they apply to, only when ``stack_actions`` or ``mask_indices`` is set
    (failures to make it are reported by the env checks)."""
    problems: list[str] = []
    stack, p = env_cfg.get("frame_stack", 1), env_cfg.get("flicker_p", 0.0)
    padding = env_cfg.get("frame_stack_padding", "zeros")
    if not isinstance(stack, int) or stack < 1:
        problems.append(f"env.frame_stack={stack!r}: must be >= 1 (1: the observation alone)")
    if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        problems.append(f"env.flicker_p={p!r}: must be in [0, 1) (0: no flicker)")
    if padding not in PADDINGS:
        problems.append(
            f"env.frame_stack_padding={padding!r}: must be one of {', '.join(PADDINGS)}"
        )
    mask, actions = env_cfg.get("mask_indices") or [], env_cfg.get("stack_actions", False)
    if not (mask or actions):
        return problems
    bare = {k: v for k, v in env_cfg.items() if k not in _DESCRIPTIVE_KEYS + _OBSERVATION_KEYS}
    try:  # the observation the options apply to: the suite's own (84x84 frames for Atari)
        probe = make_vector_env(**{**bare, "num_envs": 1})
    except Exception:
        return problems
    shape = probe.single_observation_space.shape
    probe.close()
    if shape is None:
        return problems
    size = 1
    for dim in shape:
        size *= int(dim)
    bad = [i for i in mask if not 0 <= i < size]
    if bad:
        problems.append(
            f"env.mask_indices={list(mask)}: {bad} outside the {size} entries of "
            f"{env_cfg['id']}'s observation"
        )
    if actions and len(shape) != 1:
        problems.append(
            f"env.stack_actions=true: needs 1-D observations, and {env_cfg['id']}'s have shape "
            f"{tuple(shape)}; stack the observations alone (env.frame_stack=N)"
        )
    return problems
