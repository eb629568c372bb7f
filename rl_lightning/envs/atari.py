"""Atari 2600 games through ale-py, under one of two named evaluation protocols.

``env=atari env.game=Pong env.protocol=nature|v5`` (``conf/env/atari.yaml``). Both protocols
share the preprocessing of Mnih et al. (2015): every action is repeated for 4 frames, the
observation is the pixel-wise max of the last two (flicker), converted to grey and resized to
84x84 ``uint8``, and a game is cut at 108,000 frames (30 minutes of play). They differ in the
dynamics and in what the learner is told:

========================  ==================================  ===============================
                          ``nature`` (Mnih et al., 2015)      ``v5`` (Machado et al., 2018)
========================  ==================================  ===============================
dynamics                  NoFrameskip-v4: deterministic        ALE/*-v5: sticky actions p=0.25
episode start             up to 30 random no-ops, then FIRE    the game's own start
                          where the game needs it
learning terminal         every life lost (and game over)      game over only
learning reward           sign(r)                              sign(r)
========================  ==================================  ===============================

Under both, ``rollout/episode_return`` and every evaluation report the game's unclipped score
over a whole game (``rl_lightning.envs.signals``): the env returns the game's reward and ends an
episode at game over only; the clipped reward and the life-loss terminal reach the replay
buffer through ``info``.

Vectorisation (``env.vectorization_mode``): ``ale`` (the default) is ale-py's native
``AtariVectorEnv`` -- the emulators step in C++ threads and preprocess there, one call per
vector step; ``sync`` and ``async`` are gymnasium's vector envs over ``AtariPreprocessing`` of
``ALE/<Game>-v5`` (frameskip 1 inside), the reference implementation. All three give single
84x84 frames ``(num_envs, 84, 84)``; ``env.frame_stack=4`` stacks them (the replay buffer
stores each frame once).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from rl_lightning.envs.make import register_envs

#: frames an action is repeated for; the observation is the max of the last two
FRAME_SKIP = 4
#: side of the square grey observation
SCREEN_SIZE = 84
#: emulator frames after which a game is cut (30 minutes at 60 Hz)
MAX_FRAMES_PER_EPISODE = 108_000
#: env.vectorization_mode values for Atari
VECTORIZATIONS = ("ale", "sync", "async")


@dataclass(frozen=True)
class AtariProtocol:
    """The settings that differ between the protocols (the rest is shared: module docstring).

    Attributes:
        repeat_action_probability: sticky actions (the previous action is repeated instead).
        noop_max: at most this many random no-op actions start each game (0: none).
        fire_reset: press FIRE after the reset in games that wait for it.
        life_loss_terminal: the learner's episode ends at every life lost.
        clip_rewards: the learner sees ``sign(r)``.
    """

    repeat_action_probability: float
    noop_max: int
    fire_reset: bool
    life_loss_terminal: bool
    clip_rewards: bool


PROTOCOLS: dict[str, AtariProtocol] = {
    "nature": AtariProtocol(
        repeat_action_probability=0.0,
        noop_max=30,
        fire_reset=True,
        life_loss_terminal=True,
        clip_rewards=True,
    ),
    "v5": AtariProtocol(
        repeat_action_probability=0.25,
        noop_max=0,
        fire_reset=False,
        life_loss_terminal=False,
        clip_rewards=True,
    ),
}


def ale_game_name(game: str) -> str:
    """ale-py's snake_case ROM name of a game given as in the ALE ids (``BeamRider``) or
    already snake_case (``beam_rider``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


def protocol_of(name: str) -> AtariProtocol:
    if name not in PROTOCOLS:
        raise ValueError(f"env.protocol={name!r}: must be one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


class DropChannel(gym.vector.VectorObservationWrapper):
    """``(num_envs, 1, H, W)`` grey frames -> ``(num_envs, H, W)`` (a view, no copy): the frame
    stack then gives the Nature CNN its ``(4, 84, 84)`` input."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        space: Any = env.single_observation_space
        self.single_observation_space = gym.spaces.Box(0, 255, space.shape[1:], dtype=np.uint8)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )

    def observations(self, observations: Any) -> Any:
        return observations[:, 0]


class FireOnReset(gym.Wrapper):
    """Presses FIRE once after every reset (games such as Breakout wait for it), as ale-py's
    ``use_fire_reset`` does in its vector env; a game that ends on that press is reset again."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset()
        return obs, info


def _preprocessed_game(
    env_id: str, protocol: AtariProtocol, max_frames: int, **kwargs: Any
) -> gym.Env:
    """One ``ALE/<Game>-v5`` env under ``AtariPreprocessing`` (module level: ``async`` pickles it)."""
    register_envs(env_id)
    env = gym.make(
        env_id,
        frameskip=1,
        repeat_action_probability=protocol.repeat_action_probability,
        full_action_space=False,
        max_num_frames_per_episode=max_frames,
        **kwargs,
    )
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=protocol.noop_max,
        frame_skip=FRAME_SKIP,
        screen_size=SCREEN_SIZE,
        terminal_on_life_loss=False,
        grayscale_obs=True,
    )
    meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
    if protocol.fire_reset and len(meanings) > 1 and meanings[1] == "FIRE":
        env = FireOnReset(env)
    return env


def make_atari_vector_env(
    *,
    env_id: str,
    game: str,
    protocol: str,
    num_envs: int,
    vectorization_mode: str | None = None,
    max_episode_steps: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> gym.vector.VectorEnv:
    """``num_envs`` lanes of ``game`` under ``protocol``: single 84x84 ``uint8`` frames, the
    game's own rewards and game-over ends (the learning signals are
    ``rl_lightning.envs.signals``'s), NEXT_STEP auto-reset.

    Args:
        env_id: the game's ``ALE/<Game>-v5`` id, which the gymnasium backends make.
        game: ``Pong``, ``Breakout``, ``BeamRider`` ... (ale-py's vector env takes it snake_case).
        protocol: ``nature`` | ``v5`` (``PROTOCOLS``).
        num_envs: parallel games.
        vectorization_mode: ``ale`` (None: the default) | ``sync`` | ``async``.
        max_episode_steps: cut a game after this many agent steps (None: 108,000 frames).
        kwargs: more keyword arguments for ``AtariVectorEnv`` (``ale``) or ``gym.make``.
    """
    settings = protocol_of(protocol)
    mode = vectorization_mode or "ale"
    if mode not in VECTORIZATIONS:
        raise ValueError(
            f"env.vectorization_mode={mode!r}: Atari runs with one of {', '.join(VECTORIZATIONS)}"
        )
    max_frames = MAX_FRAMES_PER_EPISODE
    if max_episode_steps is not None:
        max_frames = max_episode_steps * FRAME_SKIP
    if mode == "ale":
        from ale_py.vector_env import AtariVectorEnv

        env = AtariVectorEnv(
            game=ale_game_name(game),
            num_envs=num_envs,
            max_num_frames_per_episode=max_frames,
            repeat_action_probability=settings.repeat_action_probability,
            full_action_space=False,
            img_height=SCREEN_SIZE,
            img_width=SCREEN_SIZE,
            grayscale=True,
            stack_num=1,
            frameskip=FRAME_SKIP,
            maxpool=True,
            noop_max=settings.noop_max,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=settings.fire_reset,
            **dict(kwargs or {}),
        )
        return DropChannel(env)
    factory = functools.partial(
        _preprocessed_game, env_id, settings, max_frames, **dict(kwargs or {})
    )
    vector_class = gym.vector.SyncVectorEnv if mode == "sync" else gym.vector.AsyncVectorEnv
    return vector_class([factory] * num_envs)
